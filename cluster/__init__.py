"""What several server processes share through Redis when REDIS_URL is set: the chat's rooms and
presence, the endings of sockets (logout, password reset, RSVP cancelled, removal from a chat,
event deleted), notification pushes, and the limits.

Without REDIS_URL the server is one process and keeps all of it in memory; nothing here is used.
"""
import redis.asyncio

POOL_SIZE = 64
POOL_WAIT_SECONDS = 5


def connect(url):
    """A client for `url` (empty: None, one process alone). It connects lazily, on its first command,
    and again after Redis went away: starting does not wait for Redis, readiness says how it is."""
    if not url:
        return None
    # A blocking pool: a burst of commands (a thousand handshakes each checking a cap, presence,
    # publishes) waits up to POOL_WAIT_SECONDS for one of POOL_SIZE connections, where redis-py's
    # default pool (100) fails the command at once with "Too many connections".
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=POOL_WAIT_SECONDS, health_check_interval=10, socket_connect_timeout=2)
    return redis.asyncio.Redis.from_pool(pool)
