"""The one place that turns an exception into an HTTP status and the contract's error body."""
import http
import json

import tornado.web

from domain import errors

STATUS = {
    errors.InvalidInput: 400,
    errors.NotAuthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.TooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.Refused: 422,
    errors.RateLimited: 429,
    errors.UpstreamFailed: 502,
    errors.Unavailable: 503,
}

# When a client may try again after a database outage: long enough for a failover or a lock
# held by another process to pass.
STORE_RETRY_AFTER_SECONDS = 5

CODES = {400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
         422: "refused", 429: "rate_limited", 500: "internal_error", 502: "upstream_failed",
         503: "unavailable"}


def error_response(exc, fallback_status=500):
    """(status, body, headers) for an exception; nothing about internals ever reaches the body."""
    if isinstance(exc, errors.DomainError):
        status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
        body = {"message": exc.message, "code": exc.code, **exc.extra}
        return status, body, _retry_after(exc)
    if isinstance(exc, tornado.web.HTTPError):
        return plain_error(exc.status_code, exc.log_message if exc.status_code < 500 else None)
    return plain_error(fallback_status)


def _retry_after(exc):
    if isinstance(exc, errors.RateLimited):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, errors.StoreUnavailable):
        return {"Retry-After": str(STORE_RETRY_AFTER_SECONDS)}
    return {}


def plain_error(status, detail=None):
    phrase = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else "Error"
    message = f"{phrase}: {detail}" if detail and "%" not in detail else f"{phrase}."
    return status, {"message": message, "code": CODES.get(status, "error")}, {}


def write_error_response(handler, status_code, exc_info=None):
    """What every handler's write_error does: the contract's JSON error body, never a page."""
    status, body, headers = error_response((exc_info or (None, None, None))[1], fallback_status=status_code)
    handler.error_code = body["code"]  # for the access log and the metrics (database errors)
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json; charset=UTF-8")
    handler.set_header("Cache-Control", "no-store")
    for name, value in headers.items():
        handler.set_header(name, value)
    handler.finish(json.dumps(body))
