"""What the storage benchmarks share: a server process pinned to its own core, a keep-alive HTTP
client and a WebSocket client on raw asyncio streams, and the figures they print.

Not a benchmark itself; bench/chat_store_bench.py and bench/rest_bench.py use it.

- `ServerProcess`: `server.py` (or a launcher such as bench/mongomock_server.py) as a child
  process on a free loopback port, under `taskset -c 0` when the machine has two cores, with an
  environment of its own (no setting leaks in from ours) and its log in a file; ready when
  GET /healthz answers 200. `metric()` reads one figure from its /metrics.
- `HttpConnection`: one keep-alive HTTP/1.1 connection; `run_load` drives several of them
  closed-loop for a fixed time and returns requests/s and latencies.
- `WebSocket`: one client connection (text frames, masked with a zero key, pings answered).
"""
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVER_CPU, GENERATOR_CPU = 0, 1
STALL_METRIC = "event_loop_stall_max_seconds"

# The environment variables of settings, and systemd's: a server under test gets only ours.
_SYSTEMD_VARIABLES = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


def setting_variables():
    sys.path.insert(0, str(ROOT))
    from domain.settings import SPECS
    return {spec.env for spec in SPECS.values()}


def pin_generator():
    """Pins this process (the load generator) to GENERATOR_CPU on a machine with two cores or
    more; returns whether the server is to be pinned too."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return False
    os.sched_setaffinity(0, {GENERATOR_CPU})
    return True


def load_note():
    """The load average before a run, with a warning when other work is running: the server and
    the load generator each need a core of their own for the figures to mean anything. (After
    a run the average counts the run itself, so it says nothing about other work.)"""
    load = os.getloadavg()[0]
    note = f"load average {load:.2f}"
    if load > 0.5:
        note += " - NOT QUIET: other processes compete for the cores; these figures are not comparable"
    return note


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_environment(extra):
    ours = setting_variables() | _SYSTEMD_VARIABLES
    environment = {name: value for name, value in os.environ.items() if name not in ours}
    environment.update({name: str(value) for name, value in extra.items()})
    return environment


class ServerFailed(RuntimeError):
    pass


class ServerProcess:
    """A server child process: `argv` gets `--port N --address 127.0.0.1` appended."""

    def __init__(self, name, argv, environment, log_dir, pin, ready_timeout_s=30.0):
        self.name = name
        self.port = free_port()
        self.log_path = Path(log_dir) / f"{name}.log"
        argv = [*argv, "--port", str(self.port), "--address", "127.0.0.1"]
        if pin:
            argv = ["taskset", "-c", str(SERVER_CPU), *argv]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(argv, cwd=ROOT, env=server_environment(environment),
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        try:
            self._wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.ready_after_s = time.monotonic() - self.started

    def _wait_ready(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                status, _ = blocking_get(self.port, "/healthz", timeout_s=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise ServerFailed(f"{self.name} did not answer /healthz within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines=15):
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(line[:600] for line in text[-lines:])

    def error_lines(self, limit=3):
        """Up to `limit` distinct errors from the log (the server's JSON lines at level error:
        the message and the exception's last line), with how often each occurred."""
        self._log.flush()
        seen = {}
        with open(self.log_path, errors="replace") as log:
            for line in log:
                if '"level": "error"' not in line or '"logger": "access"' in line:
                    continue
                try:
                    entry = json.loads(line)
                    exception = (entry.get("exception") or "").strip().splitlines()
                    text = entry.get("message", "") + (f": {exception[-1]}" if exception else "")
                except ValueError:
                    text = line.strip()
                seen[text[:300]] = seen.get(text[:300], 0) + 1
        return [f"{count} x {text}" for text, count in list(seen.items())[:limit]]

    def cpu_seconds(self):
        """User + system CPU of the process (all its threads)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self):
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def metric(self, name=STALL_METRIC):
        """The value of an unlabelled metric from /metrics, or None when it is not there."""
        try:
            status, body = blocking_get(self.port, "/metrics", timeout_s=30)
        except OSError:
            return None
        if status != 200:
            return None
        match = re.search(rf"^{re.escape(name)} ([0-9.eE+-]+)$", body.decode(errors="replace"), re.MULTILINE)
        return float(match.group(1)) if match else None

    def stop(self, timeout_s=20):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()



def measured(server, work):
    """Runs the coroutine `work` against `server`, then stops the server: (what `work` returned,
    the longest event-loop stall it reported, its error lines)."""
    try:
        result = asyncio.run(work)
        return result, server.metric(), server.error_lines()
    finally:
        server.stop()


def sqlite_server(path, directory, pin):
    """server.py as users start it, on the SQLite file `path`, with the benches' settings (cheap
    bcrypt for seeded logins, photos under `directory`)."""
    return ServerProcess("sqlite", [PYTHON, "server.py"],
                         {"SQLITE_PATH": path, "BCRYPT_LOG_ROUNDS": 4, "LOG_LEVEL": "INFO",
                          "MEDIA_ROOT": os.path.join(directory, "media")}, directory, pin)

def blocking_get(port, path, timeout_s):
    """(status, body) of one GET on a fresh connection, without asyncio."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    if not head:
        raise OSError("empty response")
    return int(head.split(b" ", 2)[1]), body


def stall_text(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


# --- HTTP -------------------------------------------------------------------------------------

class HttpError(RuntimeError):
    pass


class HttpConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 22)
        self.writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def request(self, method, path, body=None, token=None):
        """(status, body bytes). `body`: a dict sent as JSON."""
        if self.writer is None:
            await self.open()
        payload = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        try:
            return await self._response()
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            self.close()
            raise HttpError(f"{method} {path}: connection lost ({error!r})") from None

    async def _response(self):
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                body += await self.reader.readexactly(size + 2)
                del body[-2:]
                if size == 0:  # (no trailers: the CRLF just read ends the body)
                    break
            body = bytes(body)
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    async def json(self, method, path, body=None, token=None, expect=(200, 201)):
        """The `data` of a JSON envelope; HttpError on any other status."""
        status, raw = await self.request(method, path, body, token)
        if status not in expect:
            raise HttpError(f"{method} {path}: {status} {raw[:300]!r}")
        return json.loads(raw)["data"]


@dataclass
class LoadResult:
    label: str
    connections: int
    seconds: float
    latencies_s: list = field(default_factory=list)
    statuses: dict = field(default_factory=dict)  # status -> count, over the measured window
    server_cpu: float = float("nan")  # share of one core over the measured window
    generator_cpu: float = float("nan")  # this process's share of one core, same window
    failures: list = field(default_factory=list)

    @property
    def count(self):
        return len(self.latencies_s)

    @property
    def per_second(self):
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def errors(self):
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    def percentile_ms(self, fraction):
        return percentile(self.latencies_s, fraction) * 1000


def own_cpu_seconds():
    times = os.times()
    return times.user + times.system


def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_load(label, port, make_request, connections, measure_s, warmup_s=1.0, server=None,
                   max_requests=None, min_requests=1, cap_s=None, request_timeout_s=30.0):
    """Closed loop: each of `connections` keep-alive connections sends `make_request(n)` =
    (method, path, body, token) and waits for the answer; warmup_s of that, then the measured
    window: requests sent from then on count, until measure_s have passed and at least
    `min_requests` were answered (but never past cap_s, default measure_s), or `max_requests`
    were answered. The rate is the answered count over the time from the window's start to
    the last answer. A request slower than request_timeout_s ends that connection's loop
    (reported in `failures`)."""
    loop = asyncio.get_running_loop()
    result = LoadResult(label, connections, measure_s)
    pool = [await HttpConnection(port).open() for _ in range(connections)]
    counter = iter(range(10**12))
    measure_from = loop.time() + warmup_s
    soonest_end, latest_end = measure_from + measure_s, measure_from + max(measure_s, cap_s or measure_s)
    started = []  # (server CPU, own CPU) when the window opened
    last_done = [measure_from]

    def over(now):
        if max_requests is not None and result.count >= max_requests:
            return True
        return now >= latest_end or (now >= soonest_end and result.count >= min_requests)

    async def drive(connection):
        while True:
            now = loop.time()
            if over(now):
                return
            if now >= measure_from and not started:
                started.append((server.cpu_seconds() if server else 0.0, own_cpu_seconds()))
            method, path, body, token = make_request(next(counter))
            try:
                status, _ = await asyncio.wait_for(connection.request(method, path, body, token), request_timeout_s)
            except (HttpError, asyncio.TimeoutError) as error:
                result.failures.append(f"{method} {path}: {error!r}"[:200])
                connection.close()
                return
            done = loop.time()
            if now >= measure_from:
                result.latencies_s.append(done - now)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                last_done[0] = max(last_done[0], done)

    await asyncio.gather(*(drive(connection) for connection in pool))
    result.seconds = max(1e-9, last_done[0] - measure_from)
    if started:
        server_before, own_before = started[0]
        elapsed = max(1e-9, loop.time() - measure_from)
        result.generator_cpu = (own_cpu_seconds() - own_before) / elapsed
        if server is not None:
            result.server_cpu = (server.cpu_seconds() - server_before) / elapsed
    for connection in pool:
        connection.close()
    return result


# --- WebSocket -----------------------------------------------------------------------------------

class WebSocketClosed(RuntimeError):
    pass


class WebSocket:
    """A client connection: text frames in and out, pings answered with pongs."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.close_code = None

    @classmethod
    async def connect(cls, port, path):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            body = await reader.readexactly(int(length.group(1))) if length else b""
            writer.close()
            raise WebSocketClosed(f"handshake refused: {status} {body[:300]!r}")
        return cls(reader, writer)

    def send_text(self, text):
        self.writer.write(_client_frame(0x1, text.encode()))

    def send_json(self, frame):
        self.send_text(json.dumps(frame, separators=(",", ":")))

    async def receive(self):
        """The next text message, as a str; WebSocketClosed when the server closes."""
        fragments = []
        while True:
            first, second = await self.reader.readexactly(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
            if opcode == 0x9:  # ping
                self.writer.write(_client_frame(0xA, payload))
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise WebSocketClosed(f"closed by the server: {self.close_code} {payload[2:]!r}")
            fragments.append(payload)
            if first & 0x80:
                return b"".join(fragments).decode()

    async def receive_json(self):
        return json.loads(await self.receive())

    def close(self):
        try:
            self.writer.write(_client_frame(0x8, struct.pack("!H", 1000)))
        except (ConnectionError, RuntimeError):
            pass
        self.writer.close()


def _client_frame(opcode, payload):
    # Clients must mask; a zero masking key leaves the payload as it is.
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + b"\0\0\0\0" + payload
