"""Chat throughput as the message log grows: SQLite (the default store) against mongomock-motor.

    python -m bench.chat_store_bench [--messages 105000] [--window 64] [--reference-seconds 60]
                                     [--no-reference]

What one run does, for each store in turn:
1. starts the server on one core (`taskset -c 0`; this process, the load generator, runs on the
   other): `python server.py` as a user starts it, its SQLite file in a temporary directory
   (SQLITE_PATH); then the reference, bench/mongomock_server.py (`server.serve` with the MongoDB
   adapter over mongomock-motor). Both get BCRYPT_LOG_ROUNDS=4 and chat rate limits raised out
   of the way (CHAT_MESSAGES_PER_SECOND, CHAT_BURST): one client sends far faster than a person;
2. registers an organizer, creates an event, opens its chat (`join_chat`) over WebSocket;
3. sends `send_message` frames with a `client_msg_id`, keeping `--window` (64) unacknowledged:
   the server stores each message, then broadcasts it, and the sender's own `new_message` echo
   is the acknowledgement (the next message goes out when one comes back);
4. prints messages/s stored and echoed over messages 0-5,000 and over the last 5,000 (100,000-
   105,000 by default), their ratio, the rate over 1,000 messages at points along the way, the
   longest gap between two acknowledgements, the server's CPU, and the longest event-loop stall
   the server saw (`event_loop_stall_max_seconds` from /metrics; "n/a" when it has none);
5. then, with the log full: the time to join (`join_chat` to `recent_messages`) and to read one
   page of history (GET /api/v1/events/<id>/messages).

The reference is capped at `--reference-seconds` (60) of sending and prints how far it got
(mongomock scans every stored message on each write: the old figures were 103 msg/s after 2,000
messages, 11/s after 10,000).

Targets (printed, not asserted): at least 5,000 msg/s, the late rate within 20% of the early one.
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.harness import (PYTHON, HttpConnection, ServerFailed, ServerProcess, WebSocket,  # noqa: E402
                           WebSocketClosed, load_note, own_cpu_seconds, pin_generator, stall_text)

WINDOW = 64
CHUNK = 5_000  # the early and late rates are over this many messages
CURVE_CHUNK = 1_000
CURVE_POINTS = (0, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
SILENCE_LIMIT_S = 30.0  # no frame for this long ends the run
TEXT = "Bench message number {} - some words to make it as long as a chat line usually is."
TARGET_RATE, TARGET_LATE_RATIO = 5_000, 0.8

SERVER_ENVIRONMENT = {
    "BCRYPT_LOG_ROUNDS": 4,
    "CHAT_MESSAGES_PER_SECOND": 1_000_000,
    "CHAT_BURST": 1_000_000,
}


@dataclass
class ChatRun:
    store: str
    wanted: int
    cap_s: float
    sent: int = 0
    ack_times: list = field(default_factory=list)  # monotonic time of the k-th acknowledgement
    started: float = 0.0
    duplicates: int = 0
    errors: dict = field(default_factory=dict)  # error code -> count
    ended_by: str = "done"
    server_cpu: float = float("nan")
    generator_cpu: float = float("nan")
    stall_before_s: float = None  # the stall gauge once the room is open, before sending
    stall_s: float = None
    join_ms: float = float("nan")
    history_ms: float = float("nan")
    recent_count: int = 0
    rss_mib: float = float("nan")

    def at(self, k):
        """When the k-th acknowledgement arrived (k = 0: when sending started)."""
        return self.started if k == 0 else self.ack_times[k - 1]

    def rate(self, first, last):
        """Messages per second over messages first..last (acknowledged), or None if not reached."""
        if last > len(self.ack_times) or last <= first:
            return None
        elapsed = self.at(last) - self.at(first)
        return (last - first) / elapsed if elapsed > 0 else float("inf")

    @property
    def acked(self):
        return len(self.ack_times)

    @property
    def seconds(self):
        return self.at(self.acked) - self.started if self.acked else 0.0

    def longest_gap_ms(self):
        times = [self.started] + self.ack_times
        return max((b - a for a, b in zip(times, times[1:])), default=0.0) * 1000


def future_date(days):
    moment = datetime.now(timezone.utc) + timedelta(days=days)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


async def open_room(port):
    """An organizer, their event and its chat URL."""
    http = await HttpConnection(port).open()
    name = f"bench{uuid.uuid4().hex[:8]}"
    auth = await http.json("POST", "/api/v1/auth/register", {
        "username": name, "email": f"{name}@bench.example", "password": "bench password", "role": "organizer"})
    token = auth["token"]
    event = await http.json("POST", "/api/v1/events", {
        "title": "Chat store bench", "date": future_date(2), "category": "bench",
        "location_address": "Loopback", "location": {"type": "Point", "coordinates": [2.35, 48.85]}}, token=token)
    http.close()
    return token, event["id"]


async def join(port, event_id, token):
    """A joined chat connection; returns it with the recent_messages frame."""
    socket = await WebSocket.connect(port, f"/ws/chat/{event_id}?token={token}")
    socket.send_json({"type": "join_chat"})
    while True:
        frame = await asyncio.wait_for(socket.receive_json(), SILENCE_LIMIT_S)
        if frame.get("type") == "recent_messages":
            return socket, frame
        if frame.get("type") == "error":
            raise RuntimeError(f"join_chat refused: {frame}")


async def send_and_count(run, socket, window):
    """Keeps `window` messages unacknowledged until `run.wanted` are, or the cap passes."""
    prefix = uuid.uuid4().hex[:8]
    loop = asyncio.get_running_loop()
    acked_ids = set()

    def send_next():
        socket.send_json({"type": "send_message", "text": TEXT.format(run.sent),
                          "client_msg_id": f"{prefix}-{run.sent}"})
        run.sent += 1

    run.started = loop.time()
    deadline = run.started + run.cap_s
    for _ in range(min(window, run.wanted)):
        send_next()
    while run.acked < run.sent:
        try:
            text = await asyncio.wait_for(socket.receive(), SILENCE_LIMIT_S)
        except asyncio.TimeoutError:
            run.ended_by = f"no frame for {SILENCE_LIMIT_S:.0f} s"
            return
        except (WebSocketClosed, asyncio.IncompleteReadError, ConnectionError) as error:
            run.ended_by = f"connection ended: {error}"
            return
        now = loop.time()
        frame = json.loads(text)
        kind = frame.get("type")
        if kind == "new_message":
            client_msg_id = frame["message"].get("client_msg_id") or ""
            if not client_msg_id.startswith(prefix):
                continue
            if client_msg_id in acked_ids:
                run.duplicates += 1
                continue
            acked_ids.add(client_msg_id)
            run.ack_times.append(now)
            if run.sent < run.wanted:
                if now < deadline:
                    send_next()
                elif run.ended_by == "done":
                    run.ended_by = f"capped at {run.cap_s:.0f} s"
        elif kind == "error":
            code = frame.get("code", "?")
            run.errors[code] = run.errors.get(code, 0) + 1
            if sum(run.errors.values()) >= 100:
                run.ended_by = f"errors: {run.errors}"
                return


async def after_the_run(run, port, event_id, token):
    """With the log full: joining (recent_messages) and one page of history, medians of 5."""
    joins, pages = [], []
    http = await HttpConnection(port).open()
    for _ in range(5):
        started = time.perf_counter()
        socket, frame = await join(port, event_id, token)
        joins.append(time.perf_counter() - started)
        run.recent_count = len(frame.get("messages", []))
        socket.close()
        started = time.perf_counter()
        await http.json("GET", f"/api/v1/events/{event_id}/messages?limit=50", token=token)
        pages.append(time.perf_counter() - started)
    http.close()
    run.join_ms = statistics.median(joins) * 1000
    run.history_ms = statistics.median(pages) * 1000


async def drive(run, server, window):
    token, event_id = await open_room(server.port)
    socket, _ = await join(server.port, event_id, token)
    run.stall_before_s = await asyncio.to_thread(server.metric)
    cpu_before, wall_before, own_before = server.cpu_seconds(), time.monotonic(), own_cpu_seconds()
    try:
        await send_and_count(run, socket, window)
    finally:
        socket.close()
    elapsed = max(1e-9, time.monotonic() - wall_before)
    run.server_cpu = (server.cpu_seconds() - cpu_before) / elapsed
    run.generator_cpu = (own_cpu_seconds() - own_before) / elapsed
    run.rss_mib = server.rss_mib()
    try:
        await asyncio.wait_for(after_the_run(run, server.port, event_id, token), 120)
    except Exception as error:  # the figures above stand on their own
        print(f"   ({run.store}: after the run, joining/history failed: {error!r})")


def bench_store(name, argv, environment, directory, pin, wanted, cap_s, window):
    run = ChatRun(name, wanted, cap_s)
    print(f"-- {name}: starting the server", flush=True)
    try:
        server = ServerProcess(name, argv, environment, directory, pin)
    except ServerFailed as error:
        print(f"   {name}: the server did not start: {error}")
        return None
    try:
        print(f"-- {name}: sending up to {wanted:,} messages, {window} in flight, for at most {cap_s:.0f} s",
              flush=True)
        asyncio.run(drive(run, server, window))
        run.stall_s = server.metric()
        for line in server.error_lines():
            print(f"   {name} server log: {line}")
    finally:
        server.stop()
    print(f"   {name}: {run.acked:,} acknowledged in {run.seconds:.1f} s ({run.ended_by}); longest event-loop "
          f"stall: {stall_text(run.stall_s)} ({stall_text(run.stall_before_s)} before sending)", flush=True)
    return run


def fmt_rate(rate):
    return "-" if rate is None else f"{rate:,.0f}"


def print_report(runs, chunk):
    runs = [run for run in runs if run is not None]
    if not runs:
        return
    wanted = max(run.wanted for run in runs)
    late = (max(chunk, wanted - chunk), wanted)
    print(f"\n== one room, one sender, messages stored and echoed per second "
          f"(target >= {TARGET_RATE:,}/s, late within {1 - TARGET_LATE_RATIO:.0%} of early)")
    header = (f"{'store':<10}{'acked':>9}{'seconds':>9}{'overall/s':>11}{f'0-{chunk:,}/s':>12}"
              f"{f'{late[0]:,}-{late[1]:,}/s':>18}{'late/early':>11}{'max gap ms':>11}{'loop stall':>12}"
              f"{'srv CPU':>9}{'gen CPU':>9}{'RSS MiB':>9}  ended")
    print(header)
    for run in runs:
        early, later = run.rate(0, chunk), run.rate(*late)
        ratio = f"{later / early:.2f}" if early and later else "-"
        overall = run.acked / run.seconds if run.seconds else None
        print(f"{run.store:<10}{run.acked:>9,}{run.seconds:>9.1f}{fmt_rate(overall):>11}{fmt_rate(early):>12}"
              f"{fmt_rate(later):>18}{ratio:>11}{run.longest_gap_ms():>11.1f}{stall_text(run.stall_s):>12}"
              f"{run.server_cpu:>9.0%}{run.generator_cpu:>9.0%}{run.rss_mib:>9.0f}  {run.ended_by}")
        problems = []
        if run.duplicates:
            problems.append(f"{run.duplicates} duplicate echoes")
        if run.errors:
            problems.append(f"error frames {run.errors}")
        if problems:
            print(f"{'':<10}  ({'; '.join(problems)})")

    points = [p for p in CURVE_POINTS if p + CURVE_CHUNK <= wanted]
    print(f"\nmsg/s over {CURVE_CHUNK:,} messages starting at message:")
    print(f"{'store':<10}" + "".join(f"{p:>9,}" for p in points))
    for run in runs:
        print(f"{run.store:<10}" + "".join(f"{fmt_rate(run.rate(p, p + CURVE_CHUNK)):>9}" for p in points))

    print("loop stall: the server's event_loop_stall_max_seconds after the run (the longest since it started; "
          "the value before sending is in the lines above); CPU: share of one core while sending")
    print("\nwith the log as the run left it (medians of 5):")
    print(f"{'store':<10}{'messages':>10}{'join ms':>9}{'history page ms':>17}")
    for run in runs:
        print(f"{run.store:<10}{run.acked:>10,}{run.join_ms:>9.1f}{run.history_ms:>17.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=105_000, help="messages to send (default 105,000)")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="the early/late rates are over this many")
    parser.add_argument("--window", type=int, default=WINDOW, help="messages unacknowledged at once")
    parser.add_argument("--seconds", type=float, default=600, help="cap on sending to SQLite")
    parser.add_argument("--reference-messages", type=int, help="messages to send to mongomock (default: --messages)")
    parser.add_argument("--reference-seconds", type=float, default=60, help="cap on sending to mongomock")
    parser.add_argument("--no-reference", action="store_true", help="skip the mongomock-motor reference")
    args = parser.parse_args()

    pin = pin_generator()
    print("server pinned to CPU 0 (taskset), load generator to CPU 1" if pin else "server and generator not pinned")
    print(f"before: {load_note()}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="chat_store_bench_") as directory:
        sqlite_environment = {**SERVER_ENVIRONMENT, "SQLITE_PATH": os.path.join(directory, "events.sqlite3")}
        runs.append(bench_store("sqlite", [PYTHON, "server.py"], sqlite_environment, directory, pin,
                                args.messages, args.seconds, args.window))
        if not args.no_reference:
            runs.append(bench_store("mongomock", [PYTHON, "-m", "bench.mongomock_server"], SERVER_ENVIRONMENT,
                                    directory, pin, args.reference_messages or args.messages,
                                    args.reference_seconds, args.window))
    print_report(runs, args.chunk)


if __name__ == "__main__":
    main()
