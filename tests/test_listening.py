"""Where a server process listens, and the links it hands out, as an operator starts it.

Development listens on this machine only; production names its address and keeps /metrics
closed, or does not start (one line, exit status 2). Without PUBLIC_BASE_URL, photo URLs and
reset links name the address and port the server listens on, --port included, and they load.
"""
import http.client
import json
import re
import resource
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

from tests.conftest import PASSWORD, ROOT
from tests.event_builders import event_body
from tests.photo_uploads import jpeg_with_gps, multipart
from tests.running_server import SAFETY_TIMEOUT, RunningServer

PRODUCTION = {"ENV": "production", "SECRET_KEY": secrets.token_urlsafe(48), "JWT_SECRET_KEY": secrets.token_urlsafe(48),
              "ADDRESS": "127.0.0.1", "PUBLIC_BASE_URL": "https://events.example.com",
              "METRICS_TOKEN": secrets.token_urlsafe(32)}


def accepts(host, port):
    try:
        socket.create_connection((host, port), timeout=SAFETY_TIMEOUT).close()
        return True
    except ConnectionRefusedError:
        return False


def refused_start(environment):
    """(exit status, stderr lines) of `python server.py` in production with these settings."""
    environment = {"PATH": "/usr/bin:/bin", "SQLITE_PATH": "/nonexistent/events.sqlite3", **environment}
    result = subprocess.run([sys.executable, "server.py"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={name: value for name, value in environment.items() if value is not None})
    return result.returncode, result.stderr.strip().splitlines()


def reset_email(server, address):
    """The console mailer's reset email to `address`, from the server's stderr (bounded wait)."""
    assert server.request("POST", "/api/v1/auth/forgot-password", {"email": address})[0] == 200
    for _ in range(int(SAFETY_TIMEOUT / 0.05)):
        if f"To: {address}\n" in server.stderr():
            return server.stderr()
        time.sleep(0.05)
    raise AssertionError("no email on the server's stderr")


def upload_photo(server, event_id, token):
    body, headers = multipart(jpeg_with_gps())
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=SAFETY_TIMEOUT)
    try:
        connection.request("POST", f"/api/v1/events/{event_id}/photos", body=body,
                           headers={**headers, "Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_without_public_base_url_photo_urls_and_reset_links_name_the_port_given_and_load():
    # As in the report: --port, no PUBLIC_BASE_URL, no --address (development's 127.0.0.1).
    with RunningServer(address=None) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, registered = server.request("POST", "/api/v1/auth/register", {
            "username": "organizer", "email": "organizer@example.com", "password": PASSWORD, "role": "organizer"})
        assert status == 201
        token = registered["data"]["token"]
        status, event = server.request("POST", "/api/v1/events", event_body(),
                                       headers={"Authorization": f"Bearer {token}"})
        assert status == 201, event

        status, photo = upload_photo(server, event["data"]["id"], token)
        assert status == 201, photo
        assert photo["data"]["url"].startswith(f"{base}/media/events/")
        with urllib.request.urlopen(photo["data"]["url"], timeout=SAFETY_TIMEOUT) as served:
            assert served.status == 200 and served.headers["Content-Type"] == "image/jpeg"

        email = reset_email(server, "organizer@example.com")
        [link] = [line for line in email.splitlines() if "/reset-password#token=" in line]
        assert link.startswith(f"{base}/reset-password#token=")
        with urllib.request.urlopen(link, timeout=SAFETY_TIMEOUT) as page:
            assert page.status == 200 and b"Choose a new password" in page.read()


def test_development_listens_on_127_0_0_1_only_unless_told_otherwise():
    # 127.0.0.2 is this machine too, but not the interface 127.0.0.1: a server bound to every
    # interface accepts there, one bound to 127.0.0.1 does not.
    with RunningServer(address=None) as server:
        assert f"listening on 127.0.0.1:{server.port}" in server.ready_message
        assert accepts("127.0.0.1", server.port) and not accepts("127.0.0.2", server.port)
    with RunningServer(address=None, environment={"ADDRESS": "0.0.0.0"}) as everywhere:
        assert accepts("127.0.0.2", everywhere.port)
        everywhere.terminate()
        everywhere.wait()
        warnings = [entry["message"] for entry in everywhere.log_entries() if entry["level"] == "warning"]
    assert any("/metrics open to every address" in warning for warning in warnings)


def test_production_without_an_address_refuses_to_start_with_one_line():
    code, lines = refused_start({**PRODUCTION, "ADDRESS": None})
    assert code == 2
    assert lines == ["cannot start: setting address (ADDRESS or --address): production needs the interface to "
                     "listen on: 127.0.0.1 behind a proxy on this host, 0.0.0.0 in a container"]


def test_production_with_metrics_open_to_everyone_refuses_to_start_with_one_line():
    code, lines = refused_start({**PRODUCTION, "METRICS_TOKEN": None})
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("cannot start: setting metrics_token (METRICS_TOKEN) or metrics_allowed_addresses "
                               "(METRICS_ALLOWED_ADDRESSES): production does not serve /metrics to everyone")


def test_production_without_its_public_url_refuses_to_start_with_one_line():
    code, lines = refused_start({**PRODUCTION, "PUBLIC_BASE_URL": None})
    assert code == 2 and len(lines) == 1 and "setting public_base_url (PUBLIC_BASE_URL)" in lines[0]


def test_production_with_an_address_and_a_metrics_token_starts_and_metrics_need_the_token():
    with RunningServer(PRODUCTION, address=None) as server:
        assert f"listening on 127.0.0.1:{server.port}" in server.ready_message
        assert server.request("GET", "/metrics")[0] == 401
        token = PRODUCTION["METRICS_TOKEN"]
        assert server.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})[0] == 200


def test_the_server_raises_its_open_files_limit_says_how_many_connections_fit_and_queues_a_large_backlog():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = max(256, hard // 2) if hard != resource.RLIM_INFINITY else soft
    server = RunningServer(environment={"LISTEN_BACKLOG": "2048"})
    # Started as from a shell whose soft limit is below the hard one.
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        server.launch()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        server.notify.wait_for("READY=1", server.process)
        with open(f"/proc/{server.process.pid}/limits", encoding="ascii") as limits:
            [line] = [line for line in limits if line.startswith("Max open files")]
        expected = hard if hard != resource.RLIM_INFINITY else low
        assert line.split()[3:5] == [str(expected), str(expected)]
        messages = [entry["message"] for entry in server.log_entries()]
        assert (f"open files limit {expected} (raised from {low}): room for about {expected - 64} connections "
                "at once") in messages
        status, metrics = server.request("GET", "/metrics")
        assert status == 200 and f"process_max_fds {float(expected)}" in metrics
        # The listening socket's queue (ss shows it as Send-Q), capped by the kernel's somaxconn.
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as somaxconn:
            queue = min(2048, int(somaxconn.read()))
        listing = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True,
                                 timeout=SAFETY_TIMEOUT).stdout
        assert re.search(rf"LISTEN\s+\d+\s+{queue}\s", listing), listing
        assert any(message.startswith(f"listening on 127.0.0.1:{server.port}; {queue} connections queue")
                   for message in messages), messages
    finally:
        server.close()


def test_a_server_out_of_descriptors_answers_503_before_reading_and_logs_it_once():
    limit = 160  # of which 64 are kept for the database, logs and files: about 96 connections
    with RunningServer({"MAX_CONNECTIONS_PER_ADDRESS": "1000"}, open_files=limit) as server:
        held, answers = [], []
        try:
            while not answers or answers[-1][0] == 200:
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=SAFETY_TIMEOUT)
                connection.request("GET", "/metrics")  # kept open afterwards: keep-alive
                response = connection.getresponse()
                answers.append((response.status, response.getheader("Retry-After"), response.read()))
                held.append(connection)
                assert len(held) <= limit, "never refused"
            status, retry_after, body = answers[-1]
            assert status == 503 and retry_after == "10"
            assert json.loads(body)["code"] == "server_full"
            # A WebSocket handshake is refused as plainly, before its upgrade is read.
            with socket.create_connection(("127.0.0.1", server.port), timeout=SAFETY_TIMEOUT) as handshake:
                handshake.sendall(b"GET /ws/notifications?token=x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                  b"Connection: Upgrade\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n"
                                  b"Sec-WebSocket-Version: 13\r\n\r\n")
                reply = handshake.makefile("rb").read()
            assert reply.startswith(b"HTTP/1.1 503 ") and b'"code": "server_full"' in reply
            for _ in range(5):
                assert server.request("GET", "/metrics")[0] == 503
        finally:
            for connection in held[:20]:
                connection.close()
        # Room again: served, with the refusals counted.
        status, metrics = server.request("GET", "/metrics")
        assert status == 200
        assert 'connections_refused_total{reason="server_full"} 7.0' in metrics
        for connection in held[20:]:
            connection.close()
        server.terminate()
        server.wait()
        lines = [entry["message"] for entry in server.log_entries() if "open files limit reached" in entry["message"]]
    assert len(lines) == 1 and lines[0].startswith("open files limit reached: 1 connections refused")
