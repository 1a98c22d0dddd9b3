"""What several server processes share through Redis when REDIS_URL is set: the chat's rooms,
presence, the endings of sockets (logout, RSVP cancelled, event deleted) and the limits.

Without REDIS_URL the server is one process and keeps all of it in memory; nothing here is used.
"""
import redis.asyncio


def connect(url):
    """A client for `url` (empty: None, one process alone). It connects lazily, on its first command,
    and again after Redis went away: starting does not wait for Redis, readiness says how it is."""
    if not url:
        return None
    return redis.asyncio.Redis.from_url(url, health_check_interval=10, socket_connect_timeout=2)
