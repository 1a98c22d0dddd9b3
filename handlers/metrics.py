"""Prometheus metrics: the figures the server keeps, and GET /metrics to read them."""
import hmac

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from domain.errors import Forbidden, NotAuthenticated
from handlers.base import BaseHandler, address_in, bearer_token
from handlers.docs import operation
from handlers.logs import route_of

# From a cache hit to a bcrypt check under load; WebSocket handshakes land in the low buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    """The server's figures, in a registry of their own (one per application: tests do not collide).

    HTTP figures are recorded for every request by `observe_request`. The chat records its own:
      open_websockets.inc() / .dec()       a chat socket opened / closed
      rooms.set(n) (or .inc() / .dec())    rooms with at least one open socket
      chat_messages_in.inc()               a message accepted from a client
      chat_messages_out.inc(n)             a message written to n sockets
      slow_consumers_dropped.inc()         a socket closed with 1013 for falling behind
      redis_up.set(1 or 0), redis_disconnects.inc(), chat_catch_ups.inc()   several processes
      rate_limit_refusals.labels(route).inc()   a chat message refused by the rate limit
      database_errors.labels(route).inc()       the database did not answer
      connections_refused.labels(reason).inc()  a connection refused before its request (handlers/connections.py)
    """

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("http_requests", "HTTP requests answered, by route template, method and status",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("http_request_duration_seconds", "Time to answer an HTTP request",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge("http_requests_in_flight", "HTTP requests being handled", registry=registry)
        self.rate_limit_refusals = Counter("rate_limit_refusals",
                                           "Requests (429) and chat messages refused by a rate limit",
                                           ["route"], registry=registry)
        self.database_errors = Counter("database_errors",
                                       "Requests that failed because the database did not answer (503)",
                                       ["route"], registry=registry)
        self.open_websockets = Gauge("chat_open_websockets", "Open chat WebSocket connections", registry=registry)
        self.rooms = Gauge("chat_rooms", "Chat rooms with at least one open connection", registry=registry)
        self.chat_messages_in = Counter("chat_messages_received", "Chat messages accepted from clients",
                                        registry=registry)
        self.chat_messages_out = Counter("chat_messages_sent", "Chat messages written to sockets, one per recipient",
                                         registry=registry)
        self.slow_consumers_dropped = Counter("chat_slow_consumers_dropped",
                                              "Chat connections closed (1013) because they could not keep up",
                                              registry=registry)
        self.redis_up = Gauge("redis_up", "1 while Redis is reached (several processes, REDIS_URL set), else 0",
                              registry=registry)
        self.redis_disconnects = Counter("redis_disconnects", "Times Redis stopped answering (REDIS_URL set)",
                                         registry=registry)
        self.chat_catch_ups = Counter("chat_catch_ups",
                                      "Times a chat room read from the database batches that had not arrived "
                                      "in order (another process's, or missed while Redis was away)",
                                      registry=registry)
        self.redis_failures = Counter("cluster_redis_failures",
                                      "Redis commands of several processes that failed, by part: endings (a "
                                      "socket ending not shared), notifications (a push not shared), limits "
                                      "(an in-process limit used instead)",
                                      ["part"], registry=registry)
        self.connections_refused = Counter(
            "connections_refused", "Connections answered and closed before any request was read: server_full (503, "
            "open files limit), too_many_connections (429, per address); accept_failed: accept() found no descriptor",
            ["reason"], registry=registry)
        self.loop_stall_max = Gauge("event_loop_stall_max_seconds",
                                    "The longest the event loop was held by one callback since start",
                                    registry=registry)
        prometheus_client.ProcessCollector(registry=registry)
        prometheus_client.PlatformCollector(registry=registry)
        prometheus_client.GCCollector(registry=registry)

    def observe_request(self, handler):
        """Tornado's log_function hook: called once for every answered request."""
        route, status = route_of(handler), handler.get_status()
        method = handler.request.method
        if method not in handler.SUPPORTED_METHODS:
            method = "other"  # any token is a method to HTTP; keep label values bounded
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(handler.request.request_time())
        if status == 429:
            self.rate_limit_refusals.labels(route).inc()
        if getattr(handler, "error_code", None) == "database_unavailable":
            self.database_errors.labels(route).inc()


class MetricsHandler(BaseHandler):
    # Not the bearer tokens of users: an address allow-list and an optional token of its own.
    authentication = "none"
    docs = {"get": operation(
        "Prometheus metrics", errors=[401, 403], public=True, envelope=False, content_type="text/plain",
        description="Prometheus text format (text/plain; version=0.0.4), or OpenMetrics when the "
                    "Accept header asks for it; not the JSON envelope. "
                    "With metrics_allowed_addresses set, other addresses get 403; with metrics_token "
                    "set, a request without `Authorization: Bearer <metrics_token>` gets 401.")}

    def get(self):
        self.check_access()
        # Prometheus says in Accept which format it wants (OpenMetrics or the classic text).
        encode, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        self.set_header("Content-Type", content_type)
        self.finish(encode(self.services.metrics.registry))

    def check_access(self):
        allowed = self.config.metrics_allowed_addresses
        if allowed and not address_in(self.client_address(), allowed):
            raise Forbidden("This address may not read the metrics.", code="address_not_allowed")
        expected = self.config.metrics_token
        if expected:
            token = bearer_token(self.request) or ""
            if not hmac.compare_digest(token.encode(), expected.encode()):
                raise NotAuthenticated("The metrics need their bearer token.", code="metrics_token_required")


ROUTES = [
    (r"/metrics", MetricsHandler),
]
