"""The HTTP server's hold on connections: how long a client may take to send a request, and how
many connections one client address may keep open.

Without limits, a client trickling a byte every 20 s keeps a connection (and a request in flight)
open forever, and 50 of them from one address cost nothing to keep up.
"""
import collections
import json
import logging
import resource

import tornado.httpserver

from handlers.base import address_in
from handlers.photos import MULTIPART_OVERHEAD_BYTES

log = logging.getLogger("handlers")


# Descriptors the process keeps for itself besides its connections: the database, logs, the
# photo workers' pipes, files being served.
RESERVED_DESCRIPTORS = 64


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


def make_http_server(app, settings):
    """The server of `app`, with the body size, header and body timeouts and connection cap of
    the settings."""
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
    )


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """Caps the HTTP connections open per client address (a chat socket stops counting once it
    is upgraded: the chat caps sockets per user). Connections from a trusted proxy are not
    counted: every client behind it shares its address, and the proxy applies its own limits."""

    def initialize(self, *args, max_connections_per_address, trusted_proxies, **kwargs):
        super().initialize(*args, **kwargs)
        self.max_connections_per_address = max_connections_per_address
        self.trusted_proxies = trusted_proxies
        self._open = collections.Counter()
        self._counted = {}  # stream -> the address it is counted under

    def handle_stream(self, stream, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is None or address_in(host, self.trusted_proxies):
            return super().handle_stream(stream, address)
        if self._open[host] >= self.max_connections_per_address:
            log.warning("refused a connection from %s: %d already open", host, self._open[host])
            _refuse(stream)
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


def _refuse(stream):
    """A 429 in the API's error shape, then the connection is closed, before any request is read."""
    body = json.dumps({"message": "Too many connections from your address; close some and try again.",
                       "code": "too_many_connections"}).encode()
    head = ("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json; charset=UTF-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 5\r\nConnection: close\r\n"
            "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n\r\n").encode()
    written = stream.write(head + body)
    written.add_done_callback(lambda future: (future.exception(), stream.close()))
