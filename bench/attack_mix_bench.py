"""The event loop and /healthz, quiet and under a mix of attacks, on server.py as users start it.

    python -m bench.attack_mix_bench [--seconds 15] [--before DIR]

What one run does, on `python server.py` with the default SQLite store (a file in a temporary
directory; settings.yaml's defaults otherwise, bcrypt cost 12 included), not pinned to a core:
its photo workers and bcrypt threads use both cores, as on a two-core host:
1. single requests on an idle server, each sent 5 times, one at a time: the largest request
   bodies an attacker can make under the 1 MiB limit (big polygons valid and not, 100,000
   positions, 24,000 values where a string goes, a 1 MiB string, thousands of unknown fields,
   deep nesting). Loopback latency bounds how long the request held the loop (its work runs on
   the loop, the database on its own thread); then the loop-stall gauge of /metrics
   (`event_loop_stall_max_seconds`: the longest one callback held the loop since the start);
2. a fresh server, --seconds quiet: a probe sends GET /healthz every 20 ms on one keep-alive
   connection; its latencies (p50, p99, max) and the stall gauge at the end;
3. a fresh server, the same probe for --seconds under the mix, all at once:
     scan bombs        2 clients uploading a 160 kB progressive JPEG of 4,000 scans (~13 s of
                       CPU each if decoded), back to back
     photo CPU hog     1 client uploading a 34-byte lossless WebP of 49 M pixels, within every
                       limit: seconds of CPU to re-encode (in a worker process)
     big polygons      2 clients creating events with 5 rings of 1,000 wrong positions (50 kB)
     slow clients      40 connections trickling a request body, one byte every 2 s
     registrations     2 clients registering new users back to back (bcrypt cost 12)
   with each attacker's answers counted by status;
4. with --before DIR, steps 1 to 3 again on DIR/server.py (another checkout, e.g.
   `git archive <commit> | tar -x -C DIR`), printed beside: the reference of the same run.

Figures only; nothing is asserted. The budget for the loop is 20 ms per callback.
"""
import argparse
import asyncio
import io
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402

from bench.harness import PYTHON, HttpConnection, ServerProcess, load_note, percentile  # noqa: E402

PROBE_INTERVAL_S = 0.02
TRICKLERS = 40
TRICKLE_INTERVAL_S = 2.0
PASSWORD = "correct horse battery"


# --- what the attackers send -------------------------------------------------------------------

def scan_bomb(size=2000, scans=4000):
    """A progressive JPEG whose last scan (an AC refinement pass over every block, 14 bytes) is
    repeated; see tests/test_attacks.py::scan_bomb."""
    out = io.BytesIO()
    Image.new("L", (size, size), 128).save(out, "JPEG", progressive=True)
    data, segments, position = out.getvalue(), [], 2
    while data[position + 1] != 0xD9:
        end = position + 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if data[position + 1] == 0xDA:
            end = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, end).start()
        segments.append(data[position:end])
        position = end
    return b"\xff\xd8" + b"".join(segments) + b"".join(segments[-2:]) * (scans - 6) + b"\xff\xd9"


def cpu_hog_photo():
    out = io.BytesIO()
    Image.new("RGBA", (7000, 7000), (1, 2, 3, 255)).save(out, "WEBP", lossless=True, method=0, quality=0)
    return out.getvalue()


def multipart(data, filename):
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def event(**fields):
    return {"title": "Attack", "date": "2031-06-01T20:00:00Z", "category": "music",
            "location_address": "1 Rue de Rivoli", "location": {"type": "Point", "coordinates": [2.35, 48.85]},
            **fields}


def circle(points, radius=0.001, east=0.0, north=0.0):
    """A closed ring of `points` + 1 positions around the event's location, moved by east/north degrees."""
    ring = [[2.35 + east + radius * math.cos(2 * math.pi * k / points),
             48.85 + north + radius * math.sin(2 * math.pi * k / points)] for k in range(points)]
    return ring + [ring[0]]


def single_requests():
    """(label, path, JSON bytes) of the dearest bodies under the 1 MiB limit."""
    def raw(document):
        return json.dumps(document, separators=(",", ":")).encode()
    return [
        ("polygon 5 x 1,000 wrong positions", "/api/v1/events",
         raw(event(geofence={"type": "Polygon", "coordinates": [[[2.35, 100]] * 1000] * 5}))),
        ("polygon 5 x 1,000, last one wrong", "/api/v1/events",
         raw(event(geofence={"type": "Polygon", "coordinates": [circle(999)] * 4 + [circle(998) + [[2.35, 100]]]}))),
        ("polygon 5 x 1,000, valid (4 holes)", "/api/v1/events",
         raw(event(geofence={"type": "Polygon", "coordinates": [circle(999, 0.01)] + [
             circle(999, 0.001, east, north) for east, north in ((0.005, 0), (-0.005, 0), (0, 0.005), (0, -0.005))]}))),
        ("ring of 100,000 positions", "/api/v1/events",
         raw(event(geofence={"type": "Polygon", "coordinates": [[[1, 2]] * 100_000]}))),
        ("24,000 numbers as the title", "/api/v1/events", raw(event(title=[123456.789] * 24_000))),
        ("1 MiB string as the title", "/api/v1/events", raw(event(title="x" * ((1 << 20) - 300)))),
        ("5,900 unknown fields", "/api/v1/events", raw({f"field{n}": n for n in range(5_900)})),
        ("24,000 unknown fields", "/api/v1/events", raw({f"field{n}": n for n in range(24_000)})),
        ("nesting 900 deep", "/api/v1/auth/login", b'{"email": ' + b"[" * 900 + b"]" * 900 + b"}"),
    ]


# --- the clients -------------------------------------------------------------------------------

class Client(HttpConnection):
    async def send(self, method, path, payload=b"", content_type="application/json", token=None):
        if self.writer is None:
            await self.open()
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Type: {content_type}",
                f"Content-Length: {len(payload)}"] + ([f"Authorization: Bearer {token}"] if token else [])
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        return await self._response()


async def organizer(port):
    client = Client(port)
    name = f"org_{uuid.uuid4().hex[:8]}"
    status, body = await client.send("POST", "/api/v1/auth/register", json.dumps(
        {"username": name, "email": f"{name}@example.com", "password": PASSWORD, "role": "organizer"}).encode())
    token = json.loads(body)["data"]["token"]
    status, body = await client.send("POST", "/api/v1/events", json.dumps(event()).encode(), token=token)
    client.close()
    return token, json.loads(body)["data"]["id"]


async def probe(port, seconds):
    """/healthz latencies, one request every PROBE_INTERVAL_S (or as soon as the last answered)."""
    client, latencies = Client(port), []
    await client.open()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        started = loop.time()
        await client.send("GET", "/healthz")
        latencies.append(loop.time() - started)
        await asyncio.sleep(max(0.0, PROBE_INTERVAL_S - (loop.time() - started)))
    client.close()
    return latencies


async def repeat(port, statuses, label, request, stop):
    """Sends `request(client)` back to back until `stop` is set, counting answers by status."""
    client = Client(port)
    while not stop.is_set():
        try:
            status, _ = await request(client)
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            status = type(error).__name__
            client.close()
            client = Client(port)
            await asyncio.sleep(0.1)
        statuses.setdefault(label, {}).setdefault(status, 0)
        statuses[label][status] += 1
    client.close()


async def trickle(port, statuses, stop):
    """A request body that never ends: one byte every TRICKLE_INTERVAL_S until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000\r\n\r\n{")
    outcome = "still open at the end"
    while not stop.is_set():
        try:
            writer.write(b" ")
            await writer.drain()
            if await asyncio.wait_for(reader.read(65536), TRICKLE_INTERVAL_S) == b"":
                outcome = "closed by the server"
                break
        except asyncio.TimeoutError:
            continue
        except ConnectionError:
            outcome = "closed by the server"
            break
    writer.close()
    statuses.setdefault("slow clients", {}).setdefault(outcome, 0)
    statuses["slow clients"][outcome] += 1


async def attack_mix(port, seconds):
    token, event_id = await organizer(port)
    bomb = multipart(scan_bomb(), "bomb.jpg")
    hog = multipart(cpu_hog_photo(), "hog.webp")
    polygon = json.dumps(event(geofence={"type": "Polygon", "coordinates": [[[2.35, 100]] * 1000] * 5})).encode()
    statuses, stop = {}, asyncio.Event()

    def upload(photo):
        body, content_type = photo
        return lambda client: client.send("POST", f"/api/v1/events/{event_id}/photos", body, content_type, token)

    def register(client):
        name = f"flood_{uuid.uuid4().hex[:10]}"
        return client.send("POST", "/api/v1/auth/register", json.dumps(
            {"username": name, "email": f"{name}@example.com", "password": PASSWORD}).encode())

    attackers = {
        "scan bombs": [repeat(port, statuses, "scan bombs", upload(bomb), stop) for _ in range(2)],
        "photo CPU hog": [repeat(port, statuses, "photo CPU hog", upload(hog), stop)],
        "big polygons": [repeat(port, statuses, "big polygons", lambda client: client.send(
            "POST", "/api/v1/events", polygon, token=token), stop) for _ in range(2)],
        "slow clients": [trickle(port, statuses, stop) for _ in range(TRICKLERS)],
        "registrations": [repeat(port, statuses, "registrations", register, stop) for _ in range(2)],
    }
    attackers = [attacker for group in attackers.values() for attacker in group]
    running = [asyncio.ensure_future(attacker) for attacker in attackers]
    await asyncio.sleep(1)  # under way before the probe starts
    latencies = await probe(port, seconds)
    stop.set()
    await asyncio.wait(running, timeout=30)
    return latencies, statuses


async def single(port):
    token, _ = await organizer(port)
    rows = []
    for label, path, body in single_requests():
        client, times, status = Client(port), [], None
        for _ in range(5):
            started = time.perf_counter()
            status, answer = await client.send("POST", path, body, token=token)
            times.append(time.perf_counter() - started)
            client.close()
            client = Client(port)
        code = json.loads(answer).get("code", "") if status >= 400 else ""
        rows.append((label, len(body), f"{status} {code}".strip(), min(times), statistics.median(times)))
    return rows


# --- running and printing ----------------------------------------------------------------------

def start(root, name, directory):
    environment = {"SQLITE_PATH": str(Path(directory) / f"{name}.sqlite3"), "MEDIA_ROOT": str(Path(directory) / name)}
    argv = [PYTHON, str(Path(root) / "server.py"), "--settings", str(Path(root) / "settings.yaml")]
    return ServerProcess(name, argv, environment, directory, pin=False)


def on_fresh_server(root, name, directory, work):
    server = start(root, name, directory)
    try:
        result = asyncio.run(work(server.port))
        return result, server.metric()
    finally:
        server.stop()


def measure(root, label, directory, seconds):
    single_rows, single_stall = on_fresh_server(root, f"{label}-single", directory, single)
    quiet, quiet_stall = on_fresh_server(root, f"{label}-quiet", directory, lambda port: probe(port, seconds))
    (mixed, statuses), mixed_stall = on_fresh_server(root, f"{label}-mix", directory,
                                                     lambda port: attack_mix(port, seconds))
    return {"single": single_rows, "single_stall": single_stall, "quiet": quiet, "quiet_stall": quiet_stall,
            "mixed": mixed, "mixed_stall": mixed_stall, "statuses": statuses}


def ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.1f}"


def print_results(results):
    labels = list(results)
    print("\n1. Single requests on an idle server (5 each, one at a time): latency min / median, ms")
    print(f"{'request':<36}{'bytes':>9}  " + "".join(f"{label + ': answer':<34}{'min':>8}{'median':>8}  "
                                                      for label in labels))
    for index, (request, size, *_) in enumerate(results[labels[0]]["single"]):
        line = f"{request:<36}{size:>9}  "
        for label in labels:
            _, _, answer, low, middle = results[label]["single"][index]
            line += f"{answer:<34}{ms(low):>8}{ms(middle):>8}  "
        print(line)
    print("   loop-stall gauge after them: " + ", ".join(f"{label} {ms(results[label]['single_stall'])} ms"
                                                        for label in labels))

    print("\n2-3. GET /healthz every 20 ms, quiet and under the attack mix: latency ms, and the loop-stall gauge")
    print(f"{'':<12}" + "".join(f"{label + ' quiet':>16}{label + ' attacked':>16}" for label in labels))
    for name, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
        line = f"{name:<12}"
        for label in labels:
            for phase in ("quiet", "mixed"):
                line += f"{ms(percentile(results[label][phase], fraction)):>16}"
        print(line)
    line = f"{'requests':<12}"
    for label in labels:
        line += f"{len(results[label]['quiet']):>16}{len(results[label]['mixed']):>16}"
    print(line)
    line = f"{'loop stall':<12}"
    for label in labels:
        line += f"{ms(results[label]['quiet_stall']):>16}{ms(results[label]['mixed_stall']):>16}"
    print(line)
    for label in labels:
        print(f"\n   {label}: the attackers' answers during the mix")
        for attacker, counts in results[label]["statuses"].items():
            print(f"     {attacker:<16}" + ", ".join(f"{status}: {count}" for status, count in sorted(
                counts.items(), key=lambda item: str(item[0]))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--before", help="another checkout whose server.py to measure the same way, as the reference")
    args = parser.parse_args()
    print(load_note())
    this = str(Path(__file__).resolve().parent.parent)
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        results["now"] = measure(this, "now", directory, args.seconds)
        if args.before:
            results["before"] = measure(args.before, "before", directory, args.seconds)
    print_results(results)


if __name__ == "__main__":
    main()
