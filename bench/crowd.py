"""A crowd of chat clients in several processes, for the idle-memory and reconnect-storm runs of
bench/chat_app_bench.py: one process holds at most CLIENTS_PER_PROCESS sockets (a process's open
files limit here is 20,000) and connects from a source address of its own (127.0.0.2, .3, ...),
so that the crowd is not capped by the ~28,000 ephemeral ports of one source address.

Each worker drives its sockets with epoll in one thread, as bench/chat_bench.py's LoadGenerator
does, but handshakes without blocking: in a storm every socket connects at once, sends its
upgrade, and sends join_chat as soon as its 101 arrives, as a client coming back does.

    crowd = Crowd(urls_by_room, processes)
    crowd.run("open", at_once=False)   # every socket upgraded, not joined
    crowd.run("join")                  # join_chat on each, until each has recent_messages
    crowd.run("open", at_once=True, join=True)   # the storm: all at once, then joined
    crowd.close()

`run` returns the workers' figures summed: sockets opened and joined, refusals (an answer other
than 101), connections closed or reset during the upgrade (reset), connects that failed
(connect_failed), sockets closed by the server after the upgrade (lost), and the monotonic time
(shared by the processes) at which the last one was joined.
"""
import base64
import errno
import multiprocessing
import os
import resource
import select
import socket
import time
from urllib.parse import urlsplit

from bench.chat_bench import JOIN_FRAME, JOINED_MARK

CLIENTS_PER_PROCESS = 15_000
# At most this many handshakes in flight per process when not in a storm: the idle run measures
# memory, not the server's accept queue.
PENDING_HANDSHAKES = 200
RECV_BYTES = 65536
LIMIT_S = 300.0

CONNECTING, UPGRADING, OPEN, JOINING, JOINED = range(5)


class _Client:
    __slots__ = ("sock", "request", "state", "buffer")

    def __init__(self, sock, request):
        self.sock, self.request, self.state, self.buffer = sock, request, CONNECTING, b""


def _request(url):
    parts = urlsplit(url)
    key = base64.b64encode(os.urandom(16)).decode()
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return (parts.hostname, parts.port), (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


class _Worker:
    """The sockets of one process."""

    def __init__(self, urls, source):
        self.requests = [_request(url) for url in urls]
        self.source = source
        self.epoll = select.epoll()
        self.clients = {}  # fd -> _Client
        self.figures = {}

    def open(self, at_once, join):
        figures = {"opened": 0, "joined": 0, "refused": 0, "reset": 0, "connect_failed": 0, "lost": 0,
                   "last_joined": 0.0}
        waiting = list(self.requests)
        waiting.reverse()
        deadline = time.monotonic() + LIMIT_S
        pending = 0
        while (waiting or pending) and time.monotonic() < deadline:
            while waiting and (at_once or pending < PENDING_HANDSHAKES):
                address, request = waiting.pop()
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.bind((self.source, 0))
                code = sock.connect_ex(address)
                if code not in (0, errno.EINPROGRESS):
                    figures["connect_failed"] += 1
                    sock.close()
                    continue
                self.clients[sock.fileno()] = _Client(sock, request)
                self.epoll.register(sock.fileno(), select.EPOLLOUT)
                pending += 1
            for fd, _ in self.epoll.poll(0.05, 4096):
                pending -= self._step(fd, figures, join)
        self.figures = figures
        if join:
            self._await_joined(figures, deadline)
        return figures

    def _step(self, fd, figures, join):
        """Advances one client's handshake; 1 when it has ended (open, refused or reset)."""
        client = self.clients[fd]
        if client.state == CONNECTING:
            if client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return self._drop(fd, figures, "connect_failed")
            try:
                client.sock.send(client.request)  # a few hundred bytes into an empty buffer
            except OSError:
                return self._drop(fd, figures, "reset")
            client.state = UPGRADING
            self.epoll.modify(fd, select.EPOLLIN)
            return 0
        try:
            data = client.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return 0
        except OSError:
            data = b""
        if client.state == UPGRADING:
            if not data:
                return self._drop(fd, figures, "reset")
            client.buffer += data
            if b"\r\n\r\n" not in client.buffer:
                return 0
            head, _, rest = client.buffer.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                return self._drop(fd, figures, "refused")
            figures["opened"] += 1
            client.state, client.buffer = OPEN, b""
            if join:
                self._join(client)
                self._saw(client, rest, figures)
            return 1
        if not data:
            self._drop(fd, figures, "lost")
        elif client.state == JOINING:
            self._saw(client, data, figures)
        return 0

    @staticmethod
    def _join(client):
        client.state = JOINING
        try:
            client.sock.send(JOIN_FRAME)
        except OSError:
            pass  # its read sees the reset

    def _saw(self, client, data, figures):
        seen = client.buffer + data
        if JOINED_MARK in seen:
            client.state, client.buffer = JOINED, b""
            figures["joined"] += 1
            figures["last_joined"] = max(figures["last_joined"], time.monotonic())
        else:
            client.buffer = seen[-len(JOINED_MARK):]

    def _drop(self, fd, figures, why):
        client = self.clients.pop(fd)
        self.epoll.unregister(fd)
        client.sock.close()
        figures[why] += 1
        return 1

    def join(self):
        figures = self.figures
        for client in list(self.clients.values()):
            if client.state == OPEN:
                self._join(client)
        self._await_joined(figures, time.monotonic() + LIMIT_S)
        return figures

    def _await_joined(self, figures, deadline):
        while any(c.state == JOINING for c in self.clients.values()) and time.monotonic() < deadline:
            for fd, _ in self.epoll.poll(0.05, 4096):
                if fd in self.clients:
                    self._step(fd, figures, True)

    def idle(self, seconds):
        """Reads (and drops) what arrives for `seconds`: announcements, pings."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for fd, _ in self.epoll.poll(0.05, 4096):
                if fd in self.clients:
                    self._step(fd, self.figures, True)
        return self.figures


def _serve(pipe, urls, source):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    worker = _Worker(urls, source)
    while True:
        command, kwargs = pipe.recv()
        if command == "close":
            return
        pipe.send(getattr(worker, command)(**kwargs))


class Crowd:
    """The client processes, each with whole rooms."""

    def __init__(self, urls_by_room, processes=None):
        total = sum(len(room) for room in urls_by_room)
        processes = processes or max(1, -(-total // CLIENTS_PER_PROCESS))
        shares = [[] for _ in range(processes)]
        for index, room in enumerate(urls_by_room):
            shares[index * processes // len(urls_by_room)].extend(room)
        context = multiprocessing.get_context("fork")
        self.pipes, self.processes = [], []
        for index, urls in enumerate(shares):
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, urls, f"127.0.0.{2 + index}"), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    def run(self, command, **kwargs):
        for pipe in self.pipes:
            pipe.send((command, kwargs))
        replies = [pipe.recv() for pipe in self.pipes]
        total = {name: sum(reply[name] for reply in replies)
                 for name in ("opened", "joined", "refused", "reset", "connect_failed", "lost")}
        total["last_joined"] = max(reply["last_joined"] for reply in replies)
        return total

    def close(self):
        for pipe in self.pipes:
            pipe.send(("close", {}))
        for process in self.processes:
            process.join(timeout=30)
