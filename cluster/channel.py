"""One Redis pub/sub channel that every process publishes to and listens on: what one process does
to the sockets of all (endings, notification pushes). Each process applies what the others publish;
its own messages come back too and are skipped by their origin, as it applied them itself already.

Pub/sub delivers at most once: what is published while a process is not subscribed (Redis away, the
subscription being made again) is lost to it. The users of a channel say what bounds that loss
(`resubscribed` is called after every subscription that follows a failure). A PUBLISH that fails
while the subscriptions stay up (a pooled connection refused, say) would be lost to every other
process without any of them noticing: it is tried again every RETRY_SECONDS for RESEND_SECONDS.
"""
import asyncio
import json
import logging
import uuid

import redis.exceptions

log = logging.getLogger("cluster")

PREFIX = "event-server:"
RETRY_SECONDS = 1.0  # between attempts to subscribe again after Redis went away
STARTUP_WAIT_SECONDS = 2.0
RESEND_SECONDS = 30.0  # how long a message that could not be published is tried again
POLL_SECONDS = 1.0  # a wait for a message that lets redis-py check the connection's health
REDIS_DOWN = (redis.exceptions.RedisError, OSError)


class Channel:
    """`apply(message)`: called with each JSON message another process published. `resubscribed`:
    an async callable, awaited after the subscription is made again following a failure.
    `failures`: a prometheus counter with a `part` label, counted as `part`."""

    def __init__(self, client, name, apply, failures, part, resubscribed=None):
        self.client = client
        self.name = PREFIX + name
        self.apply = apply
        self.failures = failures
        self.part = part
        self.resubscribed = resubscribed
        self.origin = uuid.uuid4().hex  # this process, to skip its own messages when they come back
        self.subscribed = asyncio.Event()
        self._task = None
        self._publishing = set()
        self._stopping = False  # at shutdown a failed publish is not tried again

    def publish(self, message):
        """Sends `message` (JSON-able) to the other processes; the caller does not wait for Redis."""
        task = asyncio.ensure_future(self._send(json.dumps({"origin": self.origin, "message": message})))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _send(self, text):
        loop = asyncio.get_running_loop()
        until = loop.time() + RESEND_SECONDS
        while True:
            try:
                await self.client.publish(self.name, text)
                return
            except REDIS_DOWN as e:
                self.failures.labels(self.part).inc()
                if self._stopping or loop.time() >= until:
                    log.warning("%s not published to the other processes (Redis: %s)", self.part, e)
                    return
            await asyncio.sleep(RETRY_SECONDS)

    async def start(self):
        """Starts listening; waits a moment for the subscription, so that a process that says it
        is ready hears the others from then on (with Redis away it starts without: see _listen)."""
        self._task = asyncio.ensure_future(self._listen())
        try:
            await asyncio.wait_for(self.subscribed.wait(), STARTUP_WAIT_SECONDS)
        except asyncio.TimeoutError:
            pass

    async def stop(self):
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._publishing, return_exceptions=True)

    async def _listen(self):
        missed = False  # at start there is nothing to have missed
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.name)
                self.subscribed.set()
                if missed:
                    log.info("listening to the other processes' %s again", self.part)
                    missed = False
                    if self.resubscribed is not None:
                        await self._resubscribed()
                while True:
                    message = await pubsub.get_message(timeout=POLL_SECONDS)
                    if message is not None:
                        self._receive(message["data"])
            except REDIS_DOWN as e:
                if not missed:
                    log.warning("not listening to the other processes' %s (Redis: %s); retrying", self.part, e)
                self.failures.labels(self.part).inc()
                self.subscribed.clear()
                missed = True
            finally:
                try:
                    await pubsub.aclose()
                except REDIS_DOWN:
                    pass
            await asyncio.sleep(RETRY_SECONDS)

    async def _resubscribed(self):
        try:
            await self.resubscribed()
        except Exception:
            log.exception("catching up on %s after Redis came back failed", self.part)

    def _receive(self, data):
        try:
            received = json.loads(data)
            if received["origin"] == self.origin:
                return
            message = received["message"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed message on %s", self.name)
            return
        try:
            self.apply(message)
        except Exception:
            log.exception("applying %s from another process failed", self.part)
