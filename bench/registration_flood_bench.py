"""Login latency during a registration flood, beside the same logins on a quiet server.

    python -m bench.registration_flood_bench [--seconds 15] [--flood-rate 50] [--flood-connections 16]
                                             [--bcrypt-rounds 12] [--root PATH]

Starts `python server.py` as users do (settings.yaml, its SQLite file in a temporary directory,
bcrypt at --bcrypt-rounds, 12 as in settings.yaml; TRUSTED_PROXIES=127.0.0.1 so that the flood
can come from many addresses through X-Forwarded-For, as behind a proxy), not pinned to a core:
bcrypt runs in the server's threads on every core it has. Registers one user, then measures
its logins (right password) on one connection, closed loop, for --seconds each:

  quiet                        nothing else
  flood from one address       + --flood-rate registrations a second (50: the issue's 79
                                 requests came within the 1.6 s of one slowed login) over
                                 --flood-connections connections: three in four with a new
                                 email, one in four with the user's email (a 409), all from
                                 127.0.0.1
  flood from many addresses    the same, each request from a new X-Forwarded-For address
  quiet again                  nothing else: how far the machine drifted meanwhile

and prints p50 / p99 / max of the logins beside the quiet figures, with what the flood got
(statuses). The flood runs in a process of its own at the lowest CPU priority (nice 19): an
attacker's machines do not share the server's cores. Target: login p99 during a flood <= 1.5 x
the quiet p99.

--root runs the server of another checkout (e.g. an export of an older commit) with this same
load, for a before/after comparison. Figures only; nothing is asserted. The machine should be
otherwise idle (the load average is printed before the run).
"""
import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.harness import PYTHON, ROOT, HttpConnection, ServerProcess, load_note, percentile  # noqa: E402

PASSWORD = "correct horse battery"
TARGET_RATIO = 1.5


class ForwardingConnection(HttpConnection):
    """An HttpConnection that can say, as a trusted proxy would, which client it forwards."""

    async def post_json(self, path, body, forwarded_for=None):
        payload = json.dumps(body).encode()
        head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Content-Type: application/json",
                f"Content-Length: {len(payload)}"]
        if forwarded_for:
            head.append(f"X-Forwarded-For: {forwarded_for}")
        if self.writer is None:
            await self.open()
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        return await self._response()


async def measure_logins(port, email, seconds):
    """Latencies (s) of logins with the right password, one after another, for `seconds`."""
    connection = await ForwardingConnection(port).open()
    latencies, statuses = [], {}
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            started = time.monotonic()
            status, _ = await connection.post_json("/api/v1/auth/login", {"email": email, "password": PASSWORD})
            latencies.append(time.monotonic() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        connection.close()
    return latencies, statuses


def flood_process(port, connections, rate, taken_email, many_addresses, seconds, results):
    """The flood, in a process of its own at the lowest CPU priority: an attacker's machines do
    not share the server's cores, and a generator that took them would measure itself."""
    os.nice(19)
    results.put(asyncio.run(flood(port, connections, rate, taken_email, many_addresses, seconds)))


async def flood(port, connections, rate, taken_email, many_addresses, seconds):
    """Registrations at `rate` per second in all (each of `connections` sends its share on time,
    or at once when its previous answer came late) for `seconds`; returns {status: count}."""
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    statuses = {}
    numbers = itertools.count()
    interval = connections / rate

    async def drive(offset):
        connection = await ForwardingConnection(port).open()
        due = time.monotonic() + offset
        try:
            while not stop.is_set():
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                due += interval
                n = next(numbers)
                email = taken_email if n % 4 == 0 else f"flood-{uuid.uuid4().hex[:12]}@example.com"
                address = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}" if many_addresses else None
                status, _ = await connection.post_json("/api/v1/auth/register", {
                    "username": f"f{uuid.uuid4().hex[:20]}", "email": email, "password": PASSWORD}, address)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            connection.close()

    tasks = [asyncio.ensure_future(drive(n * interval / connections)) for n in range(connections)]
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)
    return statuses


def row(label, latencies, statuses, quiet_p99=None, flood_statuses=None):
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    line = (f"{label:<28} {len(latencies):>6} {p50:>9.0f} {p99:>9.0f} {max(latencies) * 1000:>9.0f}"
            f"   logins {dict(sorted(statuses.items()))}")
    if quiet_p99:
        ratio = p99 / quiet_p99
        verdict = "ok" if ratio <= TARGET_RATIO else "OVER"
        line += f"\n{'':<28} p99 = {ratio:.2f} x quiet (target <= {TARGET_RATIO}): {verdict}"
    if flood_statuses is not None:
        line += f"\n{'':<28} registrations {dict(sorted(flood_statuses.items()))}"
    print(line, flush=True)


async def run(args, server):
    setup = await ForwardingConnection(server.port).open()
    email = "owner@example.com"
    status, body = await setup.post_json("/api/v1/auth/register",
                                         {"username": "owner", "email": email, "password": PASSWORD})
    setup.close()
    if status != 201:
        raise SystemExit(f"could not register the user: {status} {body[:200]!r}")
    print(f"{'':<28} {'logins':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    latencies, statuses = await measure_logins(server.port, email, args.seconds)
    row("quiet", latencies, statuses)
    quiet_p99 = percentile(latencies, 0.99) * 1000
    for label, many in (("flood from one address", False), ("flood from many addresses", True)):
        results = multiprocessing.Queue()
        # One second to get into full swing before the first measured login, and until the last.
        flooding = multiprocessing.Process(target=flood_process, args=(
            server.port, args.flood_connections, args.flood_rate, email, many, args.seconds + 1.5, results))
        flooding.start()
        await asyncio.sleep(1.0)
        latencies, statuses = await measure_logins(server.port, email, args.seconds)
        flood_statuses = await asyncio.get_running_loop().run_in_executor(None, results.get)
        flooding.join()
        row(label, latencies, statuses, quiet_p99, flood_statuses)
        await asyncio.sleep(3.0)  # the flood's last hashes drain before the next row
    # Quiet once more: how far the machine itself drifted while the floods ran (other work on it).
    latencies, statuses = await measure_logins(server.port, email, args.seconds)
    row("quiet again", latencies, statuses, quiet_p99)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per row")
    parser.add_argument("--flood-connections", type=int, default=16)
    parser.add_argument("--flood-rate", type=float, default=50.0, help="registrations per second in all")
    parser.add_argument("--bcrypt-rounds", type=int, default=12)
    parser.add_argument("--root", default=str(ROOT), help="the checkout whose server.py to run")
    args = parser.parse_args()
    print(f"registration flood bench: {load_note()}; {os.cpu_count()} cores; bcrypt cost {args.bcrypt_rounds}; "
          f"server {args.root}", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        environment = {"SQLITE_PATH": os.path.join(directory, "events.sqlite3"), "TRUSTED_PROXIES": "127.0.0.1",
                       "BCRYPT_LOG_ROUNDS": args.bcrypt_rounds}
        # In its own checkout, as users start it there (settings.yaml is read from there).
        argv = ["sh", "-c", 'cd "$0" && exec "$@"', args.root, PYTHON, "server.py"]
        server = ServerProcess("server", argv, environment, directory, pin=False)
        try:
            asyncio.run(run(args, server))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
