"""The HTTP server's hold on connections: how long a client may take to send a request, how
many connections one client address may keep open, and what happens when the process runs out of
descriptors.

Without limits, a client trickling a byte every 20 s keeps a connection (and a request in flight)
open forever, and 50 of them from one address cost nothing to keep up.
"""
import asyncio
import collections
import errno
import json
import logging
import resource
import socket
import time

import tornado.httpserver
import tornado.ioloop
from tornado.iostream import StreamClosedError

from handlers.base import address_in
from handlers.photos import MULTIPART_OVERHEAD_BYTES

log = logging.getLogger("handlers")


# Descriptors the process keeps for itself besides its connections: the database, logs, the
# photo workers' pipes, files being served. A connection that would eat into them is answered 503.
RESERVED_DESCRIPTORS = 64
FULL_RETRY_AFTER_SECONDS = 10
# At most one log line per this many seconds about refused connections, with their count: a
# crowd refused at once must not become a crowd of log lines.
REFUSAL_LOG_SECONDS = 10
# accept() failing for want of a descriptor (the reserve used up by files, the database...): the
# listening socket is left alone this long instead of being retried at once, which would spin the
# loop on the same error while the queued clients wait in the backlog.
ACCEPT_PAUSE_SECONDS = 0.1
REFUSAL_LINGER_SECONDS = 2
READ_CHUNK = 4096
MAX_LINGERING = 16
# Per wake-up, connections are accepted ACCEPT_BATCH at least (Tornado's own handler takes 128),
# then on for up to ACCEPT_SLICE_SECONDS: in a reconnect storm the loop's turns grow long with
# handshakes, and at 128 a turn the kernel's queue drained at a few hundred a second; clients
# whose connections it dropped meanwhile were reset. Accepted, a connection waits in the server,
# which has no such timeout.
ACCEPT_BATCH = 128
ACCEPT_SLICE_SECONDS = 0.01
OUT_OF_DESCRIPTORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def raise_open_files_limit():
    """Raises the soft limit on open files to the hard one and returns (before, now): every
    connection is a descriptor, and a shell's usual soft limit, 1,024, holds about a thousand
    clients where the hard limit allows many more. Leaves it where it is when it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, hard, e)
            return soft, soft
        return soft, hard
    return soft, soft


def listen_queue(requested):
    """The listen queue the kernel gives for `requested`: Linux caps it at net.core.somaxconn
    without a word, so the log says what it is (None where that cannot be read)."""
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as somaxconn:
            return min(requested, int(somaxconn.read()))
    except (OSError, ValueError):
        return None


def make_http_server(app, settings, metrics):
    """The server of `app`, with the body size, header and body timeouts and connection cap of
    the settings; refused connections are counted in `metrics`."""
    return GuardedHTTPServer(
        app,
        max_body_size=max(settings.max_body_bytes, settings.photo_max_bytes) + MULTIPART_OVERHEAD_BYTES,
        # Tornado's header timeout runs from the moment it waits for a request: it bounds both a
        # keep-alive connection left idle and request headers sent slowly.
        idle_connection_timeout=settings.header_timeout_seconds,
        # The whole body, from its first byte to its last, not the gap between two reads.
        body_timeout=settings.body_timeout_seconds,
        max_connections_per_address=settings.max_connections_per_address,
        trusted_proxies=settings.trusted_proxies,
        refused=metrics.connections_refused,
    )


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """Caps the HTTP connections open per client address (a chat socket stops counting once it
    is upgraded: the chat caps sockets per user). Connections from a trusted proxy are not
    counted: every client behind it shares its address, and the proxy applies its own limits.

    Answers 503 `server_full` to a connection that leaves fewer than RESERVED_DESCRIPTORS free
    descriptors, REST request or WebSocket handshake alike, before reading it; and survives
    accept() failing for want of one (the reserve used up anyway)."""

    def initialize(self, *args, max_connections_per_address, trusted_proxies, refused, **kwargs):
        super().initialize(*args, **kwargs)
        self.max_connections_per_address = max_connections_per_address
        self.trusted_proxies = trusted_proxies
        self.refused = refused  # a Counter labelled by reason
        self._open = collections.Counter()
        self._counted = {}  # stream -> the address it is counted under
        self._full_log = RefusalLog(
            "open files limit reached: %d connections refused (503 server_full) since the last such line; raise "
            "the hard limit (LimitNOFILE=, ulimit -Hn) or run more processes")
        self._accept_log = RefusalLog(
            "accept() out of descriptors %d times since the last such line: clients wait in the listen queue; "
            "something besides connections holds the reserved descriptors")

    def add_sockets(self, sockets):
        # Tornado's accept handler, but one that outlives running out of descriptors.
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_from(sock)

    def _accept_from(self, sock):
        loop = tornado.ioloop.IOLoop.current()
        state = {"removed": False, "paused": False}

        def accept(fd, events):
            until = time.monotonic() + ACCEPT_SLICE_SECONDS
            accepted = 0
            while accepted < ACCEPT_BATCH or time.monotonic() < until:
                accepted += 1
                if state["removed"]:
                    return
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as e:
                    if e.errno not in OUT_OF_DESCRIPTORS:
                        raise
                    self.refused.labels("accept_failed").inc()
                    self._accept_log.note()
                    loop.remove_handler(sock)
                    state["paused"] = True
                    loop.call_later(ACCEPT_PAUSE_SECONDS, resume)
                    return
                self._handle_connection(connection, address)

        def resume():
            state["paused"] = False
            if not state["removed"]:
                loop.add_handler(sock, accept, tornado.ioloop.IOLoop.READ)

        def remove():
            if not state["paused"]:
                loop.remove_handler(sock)
            state["removed"] = True

        loop.add_handler(sock, accept, tornado.ioloop.IOLoop.READ)
        return remove

    def handle_stream(self, stream, address):
        # Descriptors are handed out lowest first: this one's number is a lower bound of those open.
        if stream.socket.fileno() >= resource.getrlimit(resource.RLIMIT_NOFILE)[0] - RESERVED_DESCRIPTORS:
            self.refused.labels("server_full").inc()
            self._full_log.note()
            _refuse(stream, 503, "Service Unavailable", FULL_RETRY_AFTER_SECONDS,
                    "The server holds as many connections as it can; try again shortly.", "server_full")
            return None
        host = address[0] if isinstance(address, tuple) else None
        if host is None or address_in(host, self.trusted_proxies):
            return super().handle_stream(stream, address)
        if self._open[host] >= self.max_connections_per_address:
            log.warning("refused a connection from %s: %d already open", host, self._open[host])
            self.refused.labels("too_many_connections").inc()
            _refuse(stream, 429, "Too Many Requests", 5,
                    "Too many connections from your address; close some and try again.", "too_many_connections")
            return None
        self._open[host] += 1
        self._counted[stream] = host
        return super().handle_stream(stream, address)

    def on_close(self, server_conn):
        host = self._counted.pop(server_conn.stream, None)
        if host is not None:
            self._open[host] -= 1
            if not self._open[host]:
                del self._open[host]
        super().on_close(server_conn)


class RefusalLog:
    """A warning for the first refusal, then at most one per REFUSAL_LOG_SECONDS with the count
    of refusals since the previous one, while they go on."""

    def __init__(self, message):
        self.message = message  # with %d for the count
        self.count = 0
        self.timer = None

    def note(self):
        self.count += 1
        if self.timer is None:
            self._flush()

    def _flush(self):
        if not self.count:
            self.timer = None
            return
        log.warning(self.message, self.count)
        self.count = 0
        self.timer = tornado.ioloop.IOLoop.current().call_later(REFUSAL_LOG_SECONDS, self._flush)


def _refuse(stream, status, phrase, retry_after, message, code):
    """An error in the API's shape, then the connection is closed, before any request is read."""
    body = json.dumps({"message": message, "code": code}).encode()
    head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json; charset=UTF-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: {retry_after}\r\nConnection: close\r\n"
            "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n\r\n").encode()
    asyncio.ensure_future(_answer_and_close(stream, head + body))


_lingering = [0]  # refused connections waiting for their client to close


async def _answer_and_close(stream, answer):
    # Closing a socket with unread input resets the connection, and the client may then lose the
    # answer: the request is read (and dropped) until the client closes, within REFUSAL_LINGER_SECONDS.
    # Not for more than MAX_LINGERING at once: each holds a descriptor, and they come from the reserve.
    lingering = _lingering[0] < MAX_LINGERING
    _lingering[0] += lingering
    try:
        await stream.write(answer)
        if lingering and not stream.closed():  # a client gone meanwhile has no socket left
            stream.socket.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(REFUSAL_LINGER_SECONDS):
                while True:
                    await stream.read_bytes(READ_CHUNK, partial=True)
    except (StreamClosedError, OSError, TimeoutError):
        pass
    finally:
        _lingering[0] -= lingering
        stream.close()
