"""Logging: one JSON object a line on stdout, each tagged with the request id it belongs to."""
import contextvars
import json
import logging
import re
import sys
import time

from domain.mailer import EMAIL_TEXT

request_id_var = contextvars.ContextVar("request_id", default=None)

# Tokens may arrive in a query string (the WebSocket handshake, a calendar feed's key); they never
# reach a log line.
_SECRET_QUERY = re.compile(r"(?i)\b(token|access_token|password|key)=[^&\s]*")
# A bearer token or a JWT quoted in some exception text is caught here as a last line of defence.
_BEARER = re.compile(r"(?i)\b(bearer)\s+[\w.~+/=-]+")
_JWT = re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*")


def redact(text):
    text = _SECRET_QUERY.sub(r"\1=[redacted]", text)
    text = _BEARER.sub(r"\1 [redacted]", text)
    return _JWT.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    EXTRA_FIELDS = ("request_id", "method", "route", "path", "status", "code", "duration_ms", "user_id",
                    "remote_ip", "scheme")

    def format(self, record):
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for field in self.EXTRA_FIELDS[1:]:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class ConsoleEmailFormatter(logging.Formatter):
    """An email of the console mailer as a person reads it: headers, blank line, body. Its text is
    not redacted: in development this is the mailbox, and the reset link must work from here."""

    def format(self, record):
        return getattr(record, EMAIL_TEXT)


def configure_logging(level="INFO", stream=None, email_stream=None):
    """JSON lines on stdout; the console mailer's emails, readable, on stderr."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    emails = logging.StreamHandler(email_stream or sys.stderr)
    emails.setFormatter(ConsoleEmailFormatter())
    emails.addFilter(lambda record: hasattr(record, EMAIL_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler, emails]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings too become JSON lines rather than bare stderr text


access_log = logging.getLogger("access")


def route_of(handler):
    """The route template that matched (bounded, unlike paths), or the handler's class name."""
    return getattr(handler, "route_name", None) or type(handler).__name__


def log_request(handler):
    """Tornado's log_function: one line a request, with the route template rather than the raw path."""
    status = handler.get_status()
    level = logging.INFO if status < 500 else logging.ERROR
    request = handler.request
    user = handler.current_user if isinstance(getattr(handler, "_current_user", None), dict) else None
    # Behind a trusted proxy this is the real client, the address the rate limits see.
    remote_ip = handler.client_address() if hasattr(handler, "client_address") else request.remote_ip
    access_log.log(level, "%s %s %d", request.method, redact(request.uri), status, extra={
        "request_id": getattr(handler, "request_id", None),
        "method": request.method,
        "route": route_of(handler),
        "path": request.path,
        "status": status,
        "code": getattr(handler, "error_code", None),
        "duration_ms": round(request.request_time() * 1000, 2),
        "user_id": user["id"] if user else None,
        "remote_ip": remote_ip,
        "scheme": request.protocol,
    })
