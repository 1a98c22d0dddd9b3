"""Schemathesis against a live server: every documented operation, its default checks, fixed seed."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from tests.conftest import PASSWORD, ROOT

SEED = "20261124"
EXAMPLES_PER_OPERATION = "25"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body):
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _wait_until_up(base, server):
    for _ in range(200):
        assert server.poll() is None, "the server exited"
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the server did not come up")


def test_schemathesis_finds_no_failures(tmp_path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PORT": str(port), "ADDRESS": "127.0.0.1", "BCRYPT_LOG_ROUNDS": "4",
           "LOGIN_ATTEMPTS_PER_ADDRESS": "1000000", "LOGIN_ATTEMPTS_PER_EMAIL": "1000000",
           "MEDIA_ROOT": str(tmp_path / "media"), "LOG_LEVEL": "WARNING"}
    env.pop("MONGO_URI", None)
    server = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(base, server)
        accounts = []
        for role in ("organizer", "attendee"):
            email = f"fuzz-{role}@example.com"
            _post(base + "/api/v1/auth/register",
                  {"username": f"fuzz_{role}", "email": email, "password": PASSWORD, "role": role})
            accounts.append([email, PASSWORD])
        schemathesis = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or "schemathesis"
        # Coverage follows child processes (.coveragerc: patch = subprocess); the server is ours to
        # measure, the fuzzer is not, and tracing it costs a third of this test's time.
        fuzzer_env = {name: value for name, value in env.items() if name != "COVERAGE_PROCESS_CONFIG"}
        result = subprocess.run(
            [schemathesis, "run", base + "/api/v1/openapi.json", "--url", base,
             "--checks", "all", "--max-examples", EXAMPLES_PER_OPERATION, "--seed", SEED,
             "--generation-database", "none", "--workers", "1", "--no-color",
             "--phases", "examples,coverage,fuzzing", "--request-timeout", "30"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**fuzzer_env, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "FUZZ_BASE_URL": base,
                 "FUZZ_ACCOUNTS": json.dumps(accounts), "PYTHONPATH": str(ROOT)})
        assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
