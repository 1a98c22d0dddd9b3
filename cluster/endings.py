"""Endings of sockets on every process: a logout or password reset (tokens revoked), an RSVP
cancelled and an event deleted close the affected sockets, and refuse the handshakes in progress,
on whichever process they are open, with the same close codes (4401, 4403, 4404).

The process where the ending happens applies it at once through its own listeners, as one process
alone does, and publishes it on one Redis pub/sub channel; every process listens there and applies
the endings of the others (its own come back too and are skipped by their origin): each process
applies each ending exactly once.

Pub/sub delivers at most once: a message published while a process is not subscribed (Redis away,
the subscription being re-made) is lost to it. That only delays a close, never lets anything new
in: every REST request and every handshake checks the token and the membership in the store, where
the ending was written before it was published. What a lost message leaves open is a socket opened
before it; so each time the subscription is made again after a failure, the process re-checks its
open sockets against the store (`recheck`): a missed ending lasts no longer than the outage plus
RETRY_SECONDS and one pass over the open sockets.
"""
import asyncio
import json
import logging
import uuid

import redis.exceptions

log = logging.getLogger("cluster")

CHANNEL = "event-server:endings"
RETRY_SECONDS = 1.0  # between attempts to subscribe again after Redis went away
STARTUP_WAIT_SECONDS = 2.0
POLL_SECONDS = 1.0  # a wait for a message that lets redis-py check the connection's health
REDIS_DOWN = (redis.exceptions.RedisError, OSError)


class ClusterEndings:
    """`revoked`, `left`, `deleted`: the local listeners (as Accounts and Events call them), applied
    to endings from other processes. `recheck`: an async callable closing what endings missed
    meanwhile would have closed. `failures`: a counter (prometheus) of lost publications."""

    def __init__(self, client, revoked, left, deleted, recheck, failures):
        self.client = client
        self.origin = uuid.uuid4().hex  # this process, to skip its own endings when they come back
        self.appliers = {"revoked": revoked, "left": left, "deleted": deleted}
        self.recheck = recheck
        self.failures = failures
        self.subscribed = asyncio.Event()  # for tests and readiness: listening now
        self._task = None
        self._publishing = set()

    # --- the listeners Accounts and Events call, after the local ones ----------------------

    def revoked(self, user_id, jti=None, issued_before=None):
        self._publish({"kind": "revoked", "args": [user_id], "kwargs": {"jti": jti, "issued_before": issued_before}})

    def left(self, event_id, user_id):
        self._publish({"kind": "left", "args": [event_id, user_id], "kwargs": {}})

    def deleted(self, event_id):
        self._publish({"kind": "deleted", "args": [event_id], "kwargs": {}})

    def _publish(self, ending):
        # The request that caused it does not wait for Redis: its own process has applied it, the
        # store holds it, and the others learn it a round trip later.
        task = asyncio.ensure_future(self._send(json.dumps({"origin": self.origin, **ending})))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _send(self, text):
        try:
            await self.client.publish(CHANNEL, text)
        except REDIS_DOWN as e:
            self.failures.labels("endings").inc()
            log.warning("ending not published to the other processes (Redis: %s); they close those sockets "
                        "when they re-check after Redis is back", e)

    # --- listening -------------------------------------------------------------------------

    async def start(self):
        """Starts listening; waits a moment for the subscription, so that a process that says it
        is ready hears the endings from then on (with Redis away it starts without: see _listen)."""
        self._task = asyncio.ensure_future(self._listen())
        try:
            await asyncio.wait_for(self.subscribed.wait(), STARTUP_WAIT_SECONDS)
        except asyncio.TimeoutError:
            pass

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._publishing, return_exceptions=True)

    async def _listen(self):
        missed = False  # at start there is nothing open that an ending could have missed
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                self.subscribed.set()
                if missed:
                    log.info("listening to the other processes' endings again; re-checking open sockets")
                    await self._recheck()
                    missed = False
                while True:
                    message = await pubsub.get_message(timeout=POLL_SECONDS)
                    if message is not None:
                        self._apply(message["data"])
            except REDIS_DOWN as e:
                if not missed:
                    log.warning("not listening to the other processes' endings (Redis: %s); retrying", e)
                self.failures.labels("endings").inc()
                self.subscribed.clear()
                missed = True
            finally:
                try:
                    await pubsub.aclose()
                except REDIS_DOWN:
                    pass
            await asyncio.sleep(RETRY_SECONDS)

    async def _recheck(self):
        try:
            await self.recheck()
        except Exception:
            # The store is down too: its own checks refuse new connections; the next outage re-checks.
            log.exception("re-checking open sockets after Redis came back failed")

    def _apply(self, data):
        try:
            ending = json.loads(data)
            if ending["origin"] == self.origin:
                return
            listeners = self.appliers[ending["kind"]]
            args, kwargs = ending["args"], ending["kwargs"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed ending on %s", CHANNEL)
            return
        for listener in listeners:
            try:
                listener(*args, **kwargs)
            except Exception:
                log.exception("applying an ending from another process failed")
