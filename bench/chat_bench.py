"""Chat fan-out benchmark: the plain Tornado server against the RoomHub server.

Each server runs as a subprocess on a free loopback port; this process is the load
generator. On a machine with two or more cores the server is pinned to CPU 0 and the
generator to CPU 1, so that they do not steal each other's time slices. Figures only, no
assertions.

    python -m bench.chat_bench                    # fan-out scenarios, then idle memory
    python -m bench.chat_bench --scenario room1000
    python -m bench.chat_bench --scenario idle    # 10,000 idle connections: RSS per connection

Targeting another server (e.g. the real chat handler once it exists):

    python -m bench.chat_bench \\
        --server bare="python -m bench.bare_broadcast_server --port {port}" \\
        --server real="python -m app --port {port}" --roster mypackage.bench_roster:urls

``--roster module:function`` names ``function(port, rooms, members) -> list[list[str]]``
returning, per room, one WebSocket URL per member (with its token). The function may
register users and RSVP them first. The default roster addresses the demo servers, which
take ``?token=`` as the user id.

How it measures: clients are raw non-blocking sockets driven by epoll in one thread (no
per-message asyncio overhead). Publishers are room members; each message's text carries
``~T<monotonic ns>~``. Every receiver counts ``~T`` in the bytes it receives (exact: the
text reaches clients verbatim); about a hundred receivers spread evenly over join order
also parse the timestamps for latency. The max-rate run keeps WINDOW messages per room in
flight (published but not yet received by every member), which keeps the server busy
without letting its buffers grow; the half-rate run publishes open-loop at half the rate
that server reached.
"""

import argparse
import base64
import importlib
import os
import re
import select
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.bare_broadcast_server import raise_open_file_limit

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU, GENERATOR_CPU = 0, 1
DEFAULT_SERVERS = {
    "bare": f"{shlex.quote(sys.executable)} -m bench.bare_broadcast_server --port {{port}}",
    "hub": f"{shlex.quote(sys.executable)} -m bench.hub_demo_server --port {{port}}",
}

WINDOW = 4  # messages in flight per room in the max-rate run
NAME_WIDTH = 10  # server names wider than this push their row out of line
SAFETY_WINDOW = 64  # the open-loop run skips a room this far behind (reported)
WARMUP_S, MEASURE_S, DRAIN_S = 1.0, 4.0, 5.0
SETTLE_S = 0.3
LATENCY_RECEIVERS = 100
TEXT_PADDING = "x" * 80
RECV_BYTES = 65536
HANDSHAKE_BATCH = 200
IDLE_ROOM_SIZE = 10  # small rooms keep the user_joined announcements (n^2/2) short

STAMP = re.compile(rb"~T(\d{19})~")
STAMP_CARRY = 21  # one byte shorter than a stamp, so no stamp is counted twice
ZERO_MASK = b"\0\0\0\0"  # clients must mask; a zero key leaves the payload as it is


@dataclass(frozen=True)
class Scenario:
    name: str
    rooms: int
    members: int
    publishers_per_room: int


SCENARIOS = {
    "room100": Scenario("room100", rooms=1, members=100, publishers_per_room=4),
    "room1000": Scenario("room1000", rooms=1, members=1000, publishers_per_room=4),
    "rooms100x10": Scenario("rooms100x10", rooms=100, members=10, publishers_per_room=1),
}


@dataclass
class RunResult:
    published_per_s: float
    delivered_per_s: float
    latencies_ns: list[int]
    server_cpu: float  # fraction of one core over the measured window
    generator_cpu: float
    lost_connections: int
    skipped_publishes: int = 0

    @property
    def delivered_per_server_cpu_s(self) -> float:
        return self.delivered_per_s / self.server_cpu if self.server_cpu else float("nan")

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies_ns:
            return float("nan")
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


@dataclass
class ServerResult:
    server: str
    max_rate: RunResult
    half_rate: RunResult
    setup_s: float


class ServerProcess:
    """A chat server subprocess on a free loopback port, pinned to its own core."""

    def __init__(self, name: str, command: str, pin: bool) -> None:
        self.name = name
        self.port = free_port()
        argv = shlex.split(command.format(port=self.port))
        pin_to_server_cpu = (lambda: os.sched_setaffinity(0, {SERVER_CPU})) if pin else None
        # Kept out of the table; plain Tornado logs every write to a client that has gone.
        self.log = tempfile.NamedTemporaryFile(
            "w+", prefix=f"chat_bench_{name}_", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            argv, cwd=ROOT, preexec_fn=pin_to_server_cpu, stdout=self.log, stderr=self.log
        )
        self._wait_until_listening()

    def _wait_until_listening(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server {self.name} exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server {self.name} did not listen on {self.port}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.seek(0)
        lines = sum(1 for _ in self.log)
        self.log.close()
        if lines:
            print(f"   ({self.name} server wrote {lines} log lines: {self.log.name})")
        else:
            os.unlink(self.log.name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def demo_roster(port: int, rooms: int, members: int) -> list[list[str]]:
    return [
        [f"ws://127.0.0.1:{port}/ws/chat/room{r}?token=u{r}x{m}" for m in range(members)]
        for r in range(rooms)
    ]


def load_roster(spec: str | None):
    if spec is None:
        return demo_roster
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def client_frame(text: str) -> bytes:
    payload = text.encode()
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, 0x80 | length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    return header + ZERO_MASK + payload


JOIN_FRAME = client_frame('{"type":"join_chat"}')
JOINED_MARK = b"recent_messages"


class Client:
    __slots__ = ("sock", "room", "sampled", "carry", "unsent", "joined", "greeting")

    def __init__(self, sock: socket.socket, room: int, sampled: bool) -> None:
        self.sock = sock
        self.room = room
        self.sampled = sampled
        self.carry = b""
        self.unsent = b""
        self.joined = False
        self.greeting = b""  # the tail of what arrived before recent_messages


@dataclass
class Counters:
    published: list[int]
    delivered: list[int]
    room_size: list[int]
    lost: int = 0
    latencies_ns: list[int] = field(default_factory=list)


class LoadGenerator:
    """Many WebSocket clients in one epoll loop: connect, join, publish, count, time."""

    def __init__(self, urls_by_room: list[list[str]]) -> None:
        self.epoll = select.epoll()
        self.clients: dict[int, Client] = {}
        self.publishers: list[list[Client]] = []
        rooms = len(urls_by_room)
        self.counters = Counters([0] * rooms, [0] * rooms, [len(u) for u in urls_by_room])
        self.record_from_ns, self.record_until_ns = 0, 0
        self.touched_rooms: set[int] = set()
        self._backlogged: set[Client] = set()  # clients with a frame not wholly sent yet
        self._next_publisher = [0] * rooms
        self._message_seq = 0
        all_urls = [(r, url) for r, urls in enumerate(urls_by_room) for url in urls]
        sample_every = max(1, len(all_urls) // LATENCY_RECEIVERS)
        for start in range(0, len(all_urls), HANDSHAKE_BATCH):
            batch = all_urls[start : start + HANDSHAKE_BATCH]
            socks = open_websockets([url for _, url in batch])
            for offset, ((room, _), (sock, early)) in enumerate(zip(batch, socks)):
                sampled = (start + offset) % sample_every == 0
                client = Client(sock, room, sampled)
                self.clients[sock.fileno()] = client
                self.epoll.register(sock.fileno(), select.EPOLLIN)
                if early:
                    self._count(client, early, time.monotonic_ns())

    def choose_publishers(self, per_room: int) -> None:
        by_room: list[list[Client]] = [[] for _ in self.counters.published]
        for client in self.clients.values():
            if len(by_room[client.room]) < per_room:
                by_room[client.room].append(client)
        self.publishers = by_room

    def join_all(self, server: "ServerProcess", limit_s: float = 120.0) -> None:
        """Joins every client, waits for each one's recent_messages (quiet alone is not
        proof: a server starved of CPU is quiet too), then for the announcements to end."""
        for client in self.clients.values():
            self._send(client, JOIN_FRAME)
        deadline = time.monotonic() + limit_s
        while not all(client.joined for client in self.clients.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("not every client got recent_messages after join_chat")
            self.pump(SETTLE_S)
        self.settle(server)
        # A real server's recent_messages may replay stamps from an earlier run.
        self.counters.delivered = [0] * len(self.counters.delivered)

    def settle(self, server: "ServerProcess", limit_s: float = 120.0) -> None:
        """Waits until the server neither sends nor computes: deferred work (Tornado's
        per-write tasks, for one) can keep it busy after the last byte arrived."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            cpu_before = server.cpu_seconds()
            if not self.pump(SETTLE_S) and server.cpu_seconds() - cpu_before < SETTLE_S / 10:
                return

    def pump(self, timeout_s: float) -> int:
        for client in list(self._backlogged):
            self._send(client)
        events = self.epoll.poll(timeout_s, 4096)
        for fd, _ in events:
            client = self.clients.get(fd)
            if client is None:
                continue
            try:
                data = client.sock.recv(RECV_BYTES)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                self._count(client, data, time.monotonic_ns() if client.sampled else 0)
            else:
                self._lose(fd)
        return len(events)

    def _count(self, client: Client, data: bytes, now_ns: int) -> None:
        if not client.joined:
            greeting = client.greeting + data
            client.joined = JOINED_MARK in greeting
            client.greeting = greeting[-len(JOINED_MARK) :]
        if client.sampled:
            buffer = client.carry + data
            stamps = STAMP.findall(buffer)
            client.carry = buffer[-STAMP_CARRY:]
            received = len(stamps)
            start, until = self.record_from_ns, self.record_until_ns
            for stamp in stamps:
                sent_ns = int(stamp)
                if start <= sent_ns < until:
                    self.counters.latencies_ns.append(now_ns - sent_ns)
        else:
            received = data.count(b"~T")
            if client.carry == b"~" and data[:1] == b"T":
                received += 1
            client.carry = data[-1:]
        if received:
            self.counters.delivered[client.room] += received
            self.touched_rooms.add(client.room)

    def _lose(self, fd: int) -> None:
        client = self.clients.pop(fd)
        self.epoll.unregister(fd)
        client.sock.close()
        self.counters.lost += 1
        self.counters.room_size[client.room] -= 1

    def _send(self, client: Client, frame: bytes = b"") -> None:
        data = client.unsent + frame
        try:
            sent = client.sock.send(data)
        except BlockingIOError:
            sent = 0
        client.unsent = data[sent:]
        if client.unsent:
            self._backlogged.add(client)
        else:
            self._backlogged.discard(client)

    def publish(self, room: int) -> None:
        publishers = self.publishers[room]
        turn = self._next_publisher[room]
        self._next_publisher[room] = turn + 1
        self._message_seq += 1
        text = f"~T{time.monotonic_ns():019d}~ {TEXT_PADDING}"
        frame = client_frame(
            f'{{"type":"send_message","text":"{text}","client_msg_id":"c{self._message_seq}"}}'
        )
        self._send(publishers[turn % len(publishers)], frame)
        self.counters.published[room] += 1

    def outstanding(self, room: int) -> int:
        expected = self.counters.published[room] * self.counters.room_size[room]
        return expected - self.counters.delivered[room]

    def run_max_rate(self, server: ServerProcess) -> RunResult:
        def keep_window_full(rooms) -> float:
            for room in rooms:
                target = WINDOW * self.counters.room_size[room]
                while self.outstanding(room) < target:
                    self.publish(room)
            return 0.05

        keep_window_full(range(len(self.publishers)))
        return self._measure(server, lambda: keep_window_full(self._take_touched()))

    def run_rate(self, server: ServerProcess, per_s: float) -> RunResult:
        interval_ns = int(1e9 / per_s)
        rooms = len(self.publishers)
        state = {"next_ns": time.monotonic_ns(), "room": 0, "skipped": 0}

        def publish_when_due() -> float:
            now = time.monotonic_ns()
            while state["next_ns"] <= now:
                room = state["room"]
                state["room"] = (room + 1) % rooms
                if self.outstanding(room) < SAFETY_WINDOW * self.counters.room_size[room]:
                    self.publish(room)
                else:
                    state["skipped"] += 1
                state["next_ns"] += interval_ns
            return (state["next_ns"] - now) / 1e9

        result = self._measure(server, publish_when_due)
        result.skipped_publishes = state["skipped"]
        return result

    def _take_touched(self) -> set[int]:
        touched, self.touched_rooms = self.touched_rooms, set()
        return touched

    def _measure(self, server: ServerProcess, step) -> RunResult:
        """Runs ``step`` (publishes, returns how long to poll) between polls: warm-up,
        the measured window, then a drain that still records the window's latencies."""
        counters = self.counters
        self.record_from_ns, self.record_until_ns = 0, 0
        counters.latencies_ns = []
        warm_until = time.monotonic() + WARMUP_S
        while time.monotonic() < warm_until:
            self.pump(step())
        published0, delivered0 = sum(counters.published), sum(counters.delivered)
        server_cpu0, generator_cpu0 = server.cpu_seconds(), own_cpu_seconds()
        started_ns = time.monotonic_ns()
        self.record_from_ns, self.record_until_ns = started_ns, 1 << 62
        until_ns = started_ns + int(MEASURE_S * 1e9)
        while time.monotonic_ns() < until_ns:
            self.pump(step())
        ended_ns = time.monotonic_ns()
        self.record_until_ns = ended_ns
        published1, delivered1 = sum(counters.published), sum(counters.delivered)
        server_cpu1, generator_cpu1 = server.cpu_seconds(), own_cpu_seconds()
        self._drain()
        self.settle(server)
        elapsed = (ended_ns - started_ns) / 1e9
        return RunResult(
            published_per_s=(published1 - published0) / elapsed,
            delivered_per_s=(delivered1 - delivered0) / elapsed,
            latencies_ns=counters.latencies_ns,
            server_cpu=(server_cpu1 - server_cpu0) / elapsed,
            generator_cpu=(generator_cpu1 - generator_cpu0) / elapsed,
            lost_connections=counters.lost,
        )

    def _drain(self) -> None:
        deadline = time.monotonic() + DRAIN_S
        rooms = range(len(self.counters.published))
        while time.monotonic() < deadline and any(self.outstanding(r) > 0 for r in rooms):
            self.pump(0.05)
        self._take_touched()

    def close(self) -> None:
        for client in self.clients.values():
            client.sock.close()
        self.clients.clear()
        self.epoll.close()


def open_websockets(urls: list[str]) -> list[tuple[socket.socket, bytes]]:
    """Connects and upgrades a batch (requests first, then responses, to overlap them)."""
    pending = []
    for url in urls:
        parts = urlsplit(url)
        sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sock.sendall(
            (
                f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        pending.append(sock)
    opened = []
    for sock in pending:
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("server closed the connection during the handshake")
            response += chunk
        head, early = response.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {head.splitlines()[0]!r}")
        sock.setblocking(False)
        opened.append((sock, early))
    return opened


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def bench_server(name: str, command: str, scenario: Scenario, roster, pin: bool) -> ServerResult:
    server = ServerProcess(name, command, pin)
    try:
        started = time.monotonic()
        load = LoadGenerator(roster(server.port, scenario.rooms, scenario.members))
        load.choose_publishers(scenario.publishers_per_room)
        load.join_all(server)
        setup_s = time.monotonic() - started
        try:
            max_rate = load.run_max_rate(server)
            half_rate = load.run_rate(server, max(1.0, max_rate.published_per_s / 2))
        finally:
            load.close()
        return ServerResult(name, max_rate, half_rate, setup_s)
    finally:
        server.stop()


def print_fanout_table(scenario: Scenario, results: list[ServerResult]) -> None:
    print(
        f"\n== {scenario.name}: {scenario.rooms} room(s) x {scenario.members} members, "
        f"{scenario.publishers_per_room} publisher(s) per room"
    )
    print(
        f"{'server':<{NAME_WIDTH}}{'run':<6}{'pub msg/s':>11}{'deliv/s':>11}"
        f"{'p50 ms':>9}{'p99 ms':>9}"
        f"{'srv CPU':>9}{'deliv/CPU-s':>13}{'gen CPU':>9}{'lost':>6}{'setup s':>9}"
    )
    for result in results:
        for label, run in (("max", result.max_rate), ("half", result.half_rate)):
            skipped = (
                f"  ({run.skipped_publishes} publishes skipped)" if run.skipped_publishes else ""
            )
            print(
                f"{result.server:<{NAME_WIDTH}}{label:<6}{run.published_per_s:>11.0f}"
                f"{run.delivered_per_s:>11.0f}{run.percentile_ms(0.5):>9.2f}"
                f"{run.percentile_ms(0.99):>9.2f}{run.server_cpu:>9.0%}"
                f"{run.delivered_per_server_cpu_s:>13.0f}"
                f"{run.generator_cpu:>9.0%}{run.lost_connections:>6}{result.setup_s:>9.1f}"
                f"{skipped}"
            )
    for result in results:
        print_bottleneck_note(result.server, result.max_rate)
    if len(results) >= 2:
        base, other = results[0], results[1]
        ratio = other.max_rate.delivered_per_s / max(1.0, base.max_rate.delivered_per_s)
        efficiency = (
            other.max_rate.delivered_per_server_cpu_s / base.max_rate.delivered_per_server_cpu_s
        )
        print(
            f"{other.server}/{base.server} at max rate: {ratio:.2f}x deliveries per second, "
            f"{efficiency:.2f}x deliveries per server CPU-second"
        )


def print_bottleneck_note(server: str, run: RunResult) -> None:
    if run.generator_cpu >= 0.9:
        print(f"note: at max rate against {server}, the load generator was the bottleneck")
    elif run.server_cpu < 0.9:
        print(
            f"note: at max rate {server} got only {run.server_cpu:.0%} of its core: other "
            "processes are using the CPUs (load average "
            f"{os.getloadavg()[0]:.1f}); deliv/CPU-s is the figure to compare"
        )


def bench_idle(name: str, command: str, roster, connections: int, pin: bool) -> None:
    server = ServerProcess(name, command, pin)
    try:
        warm = LoadGenerator(roster(server.port, 1, 10))
        warm.join_all(server)
        warm.close()
        time.sleep(SETTLE_S)
        baseline = server.rss_bytes()
        load = LoadGenerator(roster(server.port, connections // IDLE_ROOM_SIZE, IDLE_ROOM_SIZE))
        load.settle(server)
        connected = server.rss_bytes()
        load.join_all(server)
        joined = server.rss_bytes()
        count = len(load.clients)
        print(
            f"{name:<{NAME_WIDTH}}{count:>8}{baseline / 2**20:>14.1f}"
            f"{(connected - baseline) / count / 1024:>18.1f}"
            f"{(joined - baseline) / count / 1024:>16.1f}{load.counters.lost:>6}"
        )
        load.close()
    finally:
        server.stop()


def parse_servers(specs: list[str] | None) -> dict[str, str]:
    if not specs:
        return dict(DEFAULT_SERVERS)
    return dict(spec.split("=", 1) for spec in specs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario", choices=["all", "fanout", "idle", *SCENARIOS], default="all"
    )
    parser.add_argument(
        "--server", action="append", metavar="NAME=COMMAND",
        help="server command with {port}; the first is the baseline of the ratio",
    )
    parser.add_argument("--roster", help="module:function giving per-room WebSocket URLs")
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument(
        "--no-pin", action="store_true", help="let the scheduler place server and generator"
    )
    args = parser.parse_args()

    servers = parse_servers(args.server)
    roster = load_roster(args.roster)
    limit = raise_open_file_limit()
    pin = (os.cpu_count() or 1) >= 2 and not args.no_pin
    if pin:
        os.sched_setaffinity(0, {GENERATOR_CPU})
    print(
        f"servers pinned to CPU {SERVER_CPU}, load generator to CPU {GENERATOR_CPU}"
        if pin
        else "server and load generator not pinned"
    )
    print(
        f"open files limit {limit}; CPU columns are the fraction of one core used during "
        f"the {MEASURE_S:.0f} s window (a column near 100% is that side's bottleneck)"
    )

    if args.scenario in ("all", "fanout"):
        chosen = list(SCENARIOS.values())
    elif args.scenario in SCENARIOS:
        chosen = [SCENARIOS[args.scenario]]
    else:
        chosen = []
    for scenario in chosen:
        results = [
            bench_server(name, command, scenario, roster, pin)
            for name, command in servers.items()
        ]
        print_fanout_table(scenario, results)
        sys.stdout.flush()

    if args.scenario in ("all", "idle"):
        print(
            f"\n== idle: {args.idle_connections} connections in rooms of {IDLE_ROOM_SIZE}; "
            "server RSS growth per connection"
        )
        print(
            f"{'server':<{NAME_WIDTH}}{'conns':>8}{'base RSS MiB':>14}{'KiB/conn open':>18}"
            f"{'KiB/conn joined':>16}{'lost':>6}"
        )
        for name, command in reversed(servers.items()):
            bench_idle(name, command, roster, args.idle_connections, pin)


if __name__ == "__main__":
    main()
