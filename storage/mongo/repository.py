"""What every MongoDB repository shares: the one translation of the driver's "cannot serve now"
errors into `StoreUnavailable`, applied to every public method, and limited reads."""
import functools
import inspect
import logging

from pymongo import errors as driver_errors

from domain.errors import StoreUnavailable

log = logging.getLogger("store")

# The server's error codes for "cannot serve this call now, for a reason no caller can change".
_UNAVAILABLE_CODES = frozenset({
    6, 7, 89, 9001,               # HostUnreachable, HostNotFound, NetworkTimeout, SocketException
    91, 11600, 11602,             # ShutdownInProgress, InterruptedAtShutdown, ...DueToReplStateChange
    189, 10107, 13435, 13436,     # PrimarySteppedDown, NotWritablePrimary, NotPrimary(NoSecondaryOk|OrSecondary)
    133,                          # FailedToSatisfyReadPreference
    50, 262,                      # MaxTimeMSExpired, ExceededTimeLimit
    64,                           # WriteConcernFailed (a write concern timeout)
    24, 14031,                    # LockTimeout, OutOfDiskSpace
    # IndexNotFound, NoQueryExecutionPlans: $geoNear before the 2dsphere index is built, or when
    # it could not be (store.problems() says so); the search works once it is there.
    27, 291,
})


# The server refusing this client: AuthenticationFailed (wrong user, password or mechanism in
# MONGO_URI) and Unauthorized (the user lacks a role for the command). PyMongo authenticates each
# new connection when the pool checks it out, after server selection (monitoring's hello needs no
# credentials), and raises the server's answer as OperationFailure with its code: so wrong
# credentials reach every call, ping included, as code 18, not as a ConnectionFailure. No caller
# can change them; the operator can, without a restart (create the user, grant the role), so they
# are "cannot serve now": 503, and the index preparation keeps retrying (storage/mongo/indexes.py).
REFUSED_CODES = frozenset({18, 13})


def refusal(error):
    """The reason to report when `error` is the server refusing the credentials, else None."""
    if isinstance(error, driver_errors.OperationFailure) and error.code in REFUSED_CODES:
        return f"the database refused the credentials (code {error.code})"
    return None


def is_unavailable(error):
    """Whether a driver error means the database cannot be reached or cannot serve right now.
    ConnectionFailure covers ServerSelectionTimeoutError, AutoReconnect, NetworkTimeout,
    WaitQueueTimeoutError and NotPrimaryError. Any other driver error is a bug and propagates as
    it is.

    Timeouts: with the client's timeoutMS (MongoStore.connect) PyMongo 4.2+ raises, when an
    operation's deadline passes, whichever error the step it was in gives: NetworkTimeout (no
    answer on the socket), ExecutionTimeout (the server's maxTimeMS, which the driver derives
    from the deadline, or "operation would exceed time limit" before sending), WTimeoutError or a
    WriteConcernError/BulkWriteError for a write concern that timed out, ServerSelectionTimeoutError.
    Their common mark is PyMongoError.timeout (4.2+), which is what is checked: "the database did
    not answer in time" is unavailable, whatever class carries it."""
    if isinstance(error, (driver_errors.ConnectionFailure, driver_errors.ExecutionTimeout)):
        return True
    if getattr(error, "timeout", False):
        return True
    return isinstance(error, driver_errors.OperationFailure) and (
        error.code in _UNAVAILABLE_CODES or error.code in REFUSED_CODES)


def translating_unavailable(method):
    """`method` raising StoreUnavailable instead of the driver's "cannot serve now" errors."""
    @functools.wraps(method)
    async def translated(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except driver_errors.PyMongoError as error:
            if not is_unavailable(error):
                raise
            log.warning("the database failed %s: %s", method.__qualname__, refusal(error) or type(error).__name__)
            raise StoreUnavailable() from error
    return translated


class Repository:
    """A repository over collections of one database. Every public coroutine method a subclass
    defines is wrapped by `translating_unavailable` when the class is made, so none can forget it
    and no driver error meaning "unavailable" leaves the adapter."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(cls, name, translating_unavailable(member))


async def found(cursor, limit):
    """The documents of a find cursor, the server stopping after `limit` (None: all of them).
    MongoDB reads a limit of 0 as "no limit"; here it means no documents."""
    if limit is None:
        return await cursor.to_list(None)
    if limit < 1:
        return []
    return await cursor.limit(limit).to_list(None)
