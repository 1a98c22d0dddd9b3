"""Schemathesis against a live server: every documented operation, its default checks, fixed seed."""
import json
import os
import shutil
import subprocess
import sys

from tests.conftest import PASSWORD, ROOT
from tests.running_server import RunningServer

SEED = "20261124"
EXAMPLES_PER_OPERATION = "25"


def test_schemathesis_finds_no_failures(tmp_path):
    environment = {"LOGIN_ATTEMPTS_PER_ADDRESS": "1000000", "LOGIN_ATTEMPTS_PER_EMAIL": "1000000",
                   "MEDIA_ROOT": str(tmp_path / "media"), "LOG_LEVEL": "WARNING"}
    with RunningServer(environment) as server:
        base = f"http://127.0.0.1:{server.port}"
        accounts = []
        for role in ("organizer", "attendee"):
            email = f"fuzz-{role}@example.com"
            status, _ = server.request("POST", "/api/v1/auth/register", {
                "username": f"fuzz_{role}", "email": email, "password": PASSWORD, "role": role})
            assert status == 201
            accounts.append([email, PASSWORD])
        schemathesis = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or "schemathesis"
        # Coverage follows child processes (.coveragerc: patch = subprocess); the server is ours to
        # measure, the fuzzer is not, and tracing it costs a third of this test's time.
        fuzzer_env = {name: value for name, value in server.environment.items()
                      if name != "COVERAGE_PROCESS_CONFIG"}
        result = subprocess.run(
            [schemathesis, "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
             "run", base + "/api/v1/openapi.json", "--url", base,
             "--checks", "all", "--max-examples", EXAMPLES_PER_OPERATION, "--seed", SEED,
             "--generation-database", "none", "--workers", "1", "--no-color",
             "--phases", "examples,coverage,fuzzing", "--request-timeout", "30"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**fuzzer_env, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "FUZZ_BASE_URL": base,
                 "FUZZ_ACCOUNTS": json.dumps(accounts), "PYTHONPATH": str(ROOT)})
        assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
