"""A 1,000-member room spread over two server processes sharing Redis and one SQLite file, beside
the same room on one process without Redis, in one run (issue 14's benchmark).

Both are the application as users start it (bench/chat_app_server.py: server.serve on SQLite;
the two processes of the cluster get REDIS_URL, one JWT key and one SQLite file). Members are
registered and RSVPed through the first process; in the cluster every other member connects to
the second, and the publishers (bench/chat_bench.py picks the first four) are two on each, so
about half of all deliveries cross from one process to the other through Redis. The server
processes are pinned to one core, the load generator (bench/chat_bench.py) to the other; Redis
is not pinned.

Figures: deliveries per second at the highest rate the servers keep up with, and latency at half
of that rate; server CPU-seconds per 100,000 deliveries, for the application processes and for
them plus redis-server. Goals: CPU per delivery with Redis at most 1.3x one process; a
cross-process delivery adds at most 5 ms to p99 at half of the maximum rate.

    python -m bench.cluster_chat_bench [--members 1000]

Figures only, no assertions.
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench import chat_bench
from bench.bare_broadcast_server import raise_open_file_limit
from bench.chat_app_bench import app_roster
from bench.chat_bench import GENERATOR_CPU, SERVER_CPU, LoadGenerator, Scenario, ServerProcess, ServerResult

PYTHON = shlex.quote(sys.executable)


class RedisProcess:
    def __init__(self, directory):
        self.port = chat_bench.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.process.terminate()
        self.process.wait()


class Group:
    """Server processes measured as one, their CPU seconds summed; each reading is kept as
    (application processes, redis-server) to tell the two apart afterwards."""

    def __init__(self, servers, redis=None):
        self.servers, self.redis = servers, redis
        self.readings = []

    def cpu_seconds(self):
        app = sum(server.cpu_seconds() for server in self.servers)
        redis = self.redis.cpu_seconds() if self.redis else 0.0
        self.readings.append((app, redis))
        return app + redis


def app_command(sqlite_path="", environment=None):
    prefix = " ".join(f"{name}={shlex.quote(value)}" for name, value in (environment or {}).items())
    command = f"{PYTHON} -m bench.chat_app_server --port {{port}}"
    if sqlite_path:
        command += f" --sqlite-path {shlex.quote(sqlite_path)}"
    return f"env {prefix} {command}" if prefix else command


def measure(name, servers, urls, redis=None):
    """(ServerResult, the share of the max-rate run's server CPU that was redis-server's)."""
    group = Group(servers, redis)
    started = time.monotonic()
    load = LoadGenerator([urls])
    load.choose_publishers(4)
    load.join_all(group)
    setup_s = time.monotonic() - started
    try:
        group.readings = []
        max_rate = load.run_max_rate(group)
        # The first two readings of the run are the measured window's start and end.
        (app0, redis0), (app1, redis1) = group.readings[:2]
        redis_share = (redis1 - redis0) / max(1e-9, (app1 - app0) + (redis1 - redis0))
        half_rate = load.run_rate(group, max(1.0, max_rate.published_per_s / 2))
    finally:
        load.close()
    return ServerResult(name, max_rate, half_rate, setup_s), redis_share


def per_100k(run, share=1.0):
    """Server CPU-seconds per 100,000 deliveries in a run (`share`: of the server CPU)."""
    return run.server_cpu * share / run.delivered_per_s * 100_000 if run.delivered_per_s else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1000)
    args = parser.parse_args()
    limit = raise_open_file_limit()
    pin = (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {GENERATOR_CPU})
    print(f"servers on CPU {SERVER_CPU}, load generator on CPU {GENERATOR_CPU}" if pin else "one CPU, shared")
    print(f"open files limit {limit}; CPU columns: share of one core during the measured window")
    scenario = Scenario(f"room{args.members}", rooms=1, members=args.members, publishers_per_room=4)
    results = []

    one = ServerProcess("1 proc", app_command(), pin)
    try:
        [urls] = app_roster(one.port, 1, args.members)
        result, _ = measure("1 proc", [one], urls)
        results.append(result)
    finally:
        one.stop()

    with tempfile.TemporaryDirectory(prefix="cluster_chat_bench_") as directory:
        redis = RedisProcess(directory)
        secret = uuid.uuid4().hex * 2  # one for both: a token from one process is good on the other
        environment = {"REDIS_URL": redis.url, "JWT_SECRET_KEY": secret, "SECRET_KEY": secret}
        shared = os.path.join(directory, "events.sqlite3")
        first = ServerProcess("2 procs a", app_command(shared, environment), pin)
        second = ServerProcess("2 procs b", app_command(shared, environment), pin)
        try:
            [urls] = app_roster(first.port, 1, args.members)
            spread = [url if n % 2 == 0 else url.replace(f":{first.port}/", f":{second.port}/", 1)
                      for n, url in enumerate(urls)]
            result, redis_share = measure("2 procs", [first, second], spread, redis)
            results.append(result)
        finally:
            first.stop()
            second.stop()
            redis.stop()

    chat_bench.print_fanout_table(scenario, results)
    base, cluster = results
    print("\n2 procs: srv CPU is both application processes plus redis-server")
    print("server CPU-seconds per 100,000 deliveries at max rate:")
    print(f"  1 proc (no Redis):             {per_100k(base.max_rate):.2f}")
    app_only = per_100k(cluster.max_rate, 1 - redis_share)
    print(f"  2 procs, application only:     {app_only:.2f}  ({app_only / per_100k(base.max_rate):.2f}x)")
    print(f"  2 procs, with redis-server:    {per_100k(cluster.max_rate):.2f}"
          f"  ({per_100k(cluster.max_rate) / per_100k(base.max_rate):.2f}x)")
    print(f"p99 at half rate: 1 proc {base.half_rate.percentile_ms(0.99):.2f} ms, "
          f"2 procs {cluster.half_rate.percentile_ms(0.99):.2f} ms "
          f"(+{cluster.half_rate.percentile_ms(0.99) - base.half_rate.percentile_ms(0.99):.2f} ms)")


if __name__ == "__main__":
    main()
