"""Errors the domain raises. handlers/errors.py maps each to an HTTP status, in one place.

Every error carries a machine `code` for clients and a human `message`; a few carry
extra fields that the contract puts in the error body (`errors`, `distance_m`).
"""


class DomainError(Exception):
    code = "error"
    message = "The request could not be completed."

    def __init__(self, message=None, code=None, **extra):
        super().__init__(message or self.message)
        self.message = message or self.message
        if code:
            self.code = code
        self.extra = extra


class InvalidInput(DomainError):
    """A well-formed request whose values break a rule (400). `errors` lists {path, message}."""
    code = "invalid_input"
    message = "The request is not valid."

    def __init__(self, message=None, errors=None, code=None, **extra):
        super().__init__(message, code, **({"errors": errors} if errors else {}), **extra)


class NotAuthenticated(DomainError):
    code = "not_authenticated"
    message = "Authentication is required."


class Forbidden(DomainError):
    code = "forbidden"
    message = "You are not allowed to do this."


class NotFound(DomainError):
    code = "not_found"
    message = "Not found."


class Conflict(DomainError):
    code = "conflict"
    message = "The request conflicts with the current state."


class Refused(DomainError):
    """Well-formed, but the domain refuses it (422), e.g. an arrival outside the geofence."""
    code = "refused"
    message = "The request was refused."


class RateLimited(DomainError):
    code = "rate_limited"
    message = "Too many requests. Try again later."

    def __init__(self, retry_after, message=None, code=None):
        super().__init__(message, code)
        self.retry_after = max(1, int(retry_after + 0.999))


class Unavailable(DomainError):
    """A backing service (database, object storage, mail) cannot be reached (503)."""
    code = "unavailable"
    message = "A backing service is unavailable. Try again shortly."


class UpstreamFailed(DomainError):
    """A backing service answered with an error (502)."""
    code = "upstream_failed"
    message = "A backing service failed."


class TooLarge(DomainError):
    code = "too_large"
    message = "The request body is too large."


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"
    message = "This content type is not supported."


class StoreUnavailable(Unavailable):
    """The database cannot be reached or cannot take a write right now (503, Retry-After)."""
    code = "database_unavailable"
    message = "The database is not answering. Try again shortly."


class StoreBroken(Exception):
    """The database can never serve as it is (a corrupt or unwritable file): the server refuses
    to start, with this text as its one line."""
