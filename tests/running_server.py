"""server.py as a real child process, talking to it the way systemd and clients do.

The test opens the notify socket (a datagram socket, as systemd does) and learns from READY=1
that the server listens; stdout and stderr go to files the test reads after the process ends.
"""
import http.client
import json
import os
import pathlib
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import uuid

from domain.settings import SPECS

ROOT = pathlib.Path(__file__).resolve().parent.parent

SAFETY_TIMEOUT = 30  # seconds; only so that a broken server fails the test instead of hanging it


def free_port():
    # Free on every interface, not only loopback: a test server may listen on 0.0.0.0, where a
    # port that another program holds on some other address would not be free.
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class NotifyListener:
    """The service manager's end of NOTIFY_SOCKET: collects the datagrams the server sends."""

    def __init__(self, directory, abstract=False):
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"notify-{uuid.uuid4().hex[:8]}"
        if abstract:
            self.socket.bind("\0" + name)
            self.environment_value = "@" + name
        else:
            path = os.path.join(directory, name)
            self.socket.bind(path)
            self.environment_value = path
        self.socket.settimeout(0.2)
        self.messages = []

    def wait_for(self, field, process):
        """The first message (since the last wait) with the field, e.g. 'READY=1'."""
        for _ in range(int(SAFETY_TIMEOUT / 0.2)):
            try:
                message = self.socket.recv(4096).decode()
            except socket.timeout:
                if process.poll() is not None:
                    raise AssertionError(f"server exited with {process.returncode} before sending {field}")
                continue
            self.messages.append(message)
            if field in message.split("\n"):
                return message
        raise AssertionError(f"no {field} from the server; got {self.messages}")

    def close(self):
        self.socket.close()


class RunningServer:
    """`address`: given as --address; None starts the server without one (the address setting decides)."""

    def __init__(self, environment=None, abstract_notify_socket=False, address="127.0.0.1", open_files=None):
        self.open_files = open_files  # the process's hard (and soft) limit on open files, when given
        self.directory = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.address = address
        self.notify = NotifyListener(self.directory.name, abstract=abstract_notify_socket)
        self.stdout_path = os.path.join(self.directory.name, "stdout")
        self.stderr_path = os.path.join(self.directory.name, "stderr")
        self.database_path = os.path.join(self.directory.name, "events.sqlite3")
        self.environment = self._environment(environment or {})
        self.process = None
        self.ready_message = None

    def _environment(self, extra):
        # Nothing from the test runner's own environment may configure the server under test.
        ours = {spec.env for spec in SPECS.values()} | {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}
        environment = {name: value for name, value in os.environ.items() if name not in ours}
        # Each server keeps its data in its own file and directory, never in the checkout's data/
        # and media/; tests register
        # their users from one address.
        environment.update({"BCRYPT_LOG_ROUNDS": "4", "NOTIFY_SOCKET": self.notify.environment_value,
                            "SQLITE_PATH": self.database_path, "REGISTRATIONS_PER_ADDRESS": "100000",
                            "MEDIA_ROOT": os.path.join(self.directory.name, "media")})
        environment.update(extra)
        return environment

    def launch(self):
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "server.py", "--port", str(self.port),
                 *(["--address", self.address] if self.address else [])],
                cwd=ROOT, env=self.environment, stdout=stdout, stderr=stderr, preexec_fn=self._limit_open_files)

    def _limit_open_files(self):
        if self.open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def start(self):
        self.launch()
        self.ready_message = self.notify.wait_for("READY=1", self.process)

    def terminate(self):
        """SIGTERM, as systemctl stop sends it; returns the STOPPING=1 message."""
        self.process.send_signal(signal.SIGTERM)
        return self.notify.wait_for("STOPPING=1", self.process)

    def wait(self):
        return self.process.wait(timeout=SAFETY_TIMEOUT)

    def output(self):
        """Everything the process wrote to stdout and stderr."""
        with open(self.stdout_path, encoding="utf-8") as out, open(self.stderr_path, encoding="utf-8") as err:
            return out.read() + err.read()

    def stderr(self):
        """What the process wrote to stderr so far (the console mailer's emails, in development)."""
        with open(self.stderr_path, encoding="utf-8") as err:
            return err.read()

    def log_entries(self):
        with open(self.stdout_path, encoding="utf-8") as out:
            return [json.loads(line) for line in out if line.strip()]

    def request(self, method, path, body=None, headers=None):
        """(status, parsed JSON or text) for one request on a fresh connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SAFETY_TIMEOUT)
        try:
            headers = dict(headers or {})
            raw = None
            if body is not None:
                raw = json.dumps(body)
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=raw, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
            is_json = response.getheader("Content-Type", "").startswith("application/json")
            return response.status, json.loads(text) if is_json else text
        finally:
            connection.close()

    def close(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()
        self.directory.cleanup()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
