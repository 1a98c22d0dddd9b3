"""The chat broker of several processes (handlers/chat_broker.py has the seam and the one-process
broker): Redis pub/sub carries each stored batch and each room frame to every process.

Channels: `chat:batch:<event>` carries a stored batch as "<process> <previous id or -> <JSON items>";
`chat:relay:<event>` carries a frame for the room's members as "<process> <JSON frame>";
`chat:user:<event>` a frame for one user's sockets in the event as "<process> <user id> <JSON
frame>". Each process subscribes to the three patterns on a connection of its own and skips what it
sent itself and rooms it has no member in, before decoding anything.

Order is not Redis's job. Pub/sub delivers at most once, and two processes' PUBLISHes may cross;
each batch names the message stored just before it, and the room feed (domain/chat_feed.py)
delivers batches in that chain order and reads whatever is missing from the store. A batch is also
offered to this process's own feed at once, without the round trip. So:
- Redis unreachable (at start or later): the process serves on; its own rooms' messages are
  stored, acknowledged and delivered here; other processes' messages reach this process's members
  as soon as a batch of the room is stored here (the gap is read from the store), and when Redis
  is back every followed room reads what it missed (`RoomFeed.catch_up`). Nothing acknowledged is
  lost (it is stored before it is acknowledged) and a client reconnecting with `since`, to any
  process, replays from the store. `/readyz` answers 503 (`problem()`), a log line says when Redis
  went away and came back, and the metrics show it (`redis_up`, `redis_disconnects`).
- Presence is counted in Redis (cluster/presence.py); while Redis is away, frames announce this
  process's own count, and on its return this process's holdings are put right.
"""
import asyncio
import json
import logging
import uuid

from redis.exceptions import RedisError

from cluster.presence import HEARTBEAT_SECONDS, RedisPresence
from handlers.chat_broker import presence_frame
from handlers.chat_hub import encode_json

log = logging.getLogger("cluster")

BATCH, RELAY, USER = "chat:batch:", "chat:relay:", "chat:user:"
PATTERNS = (BATCH + "*", RELAY + "*", USER + "*")
_KIND = {"hold": "user_joined", "drop": "user_left"}
RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)  # between attempts to reach Redis again, then the last


class RedisBroker:
    def __init__(self, redis, feed, hub, metrics, tell):
        self.redis = redis
        self.feed = feed
        self.hub = hub
        self.tell = tell  # as LocalBroker's
        self.metrics = metrics
        self.process = uuid.uuid4().hex
        self._origin = self.process.encode()
        self.presence = RedisPresence(redis, self.process)
        # Readiness: the subscription is up, and the last command did not fail (a command on a
        # connection pooled before Redis restarted may fail once; the next one succeeds).
        self._subscribed = False
        self._error = "Redis has not been reached yet"  # the last failure, None after a success
        self._reported_away = False  # a log line said Redis is unreachable, none yet that it is back
        self._outbox = []  # (channel, data) to PUBLISH, in order
        self._sending = None
        self._here = {}  # (event id, user id) -> user: the users this process has in each room
        self._presence_work = []  # ("hold" or "drop", event id, user), in order
        self._presence_task = None
        self._counts = {}  # event id -> the room's last known online count
        self._tasks = []
        # What a failed command left undone while the subscription stayed up (a pooled
        # connection refused, say): put right by the next heartbeat that reaches Redis, so other
        # processes miss an acknowledged message, and a ghost or a missing presence lasts, no
        # longer than HEARTBEAT_SECONDS after Redis answers again.
        self._unsent = {}  # batch channel -> the last batch of the room not published
        self._presence_stale = False  # a presence pipeline failed: Redis may not hold what we do
        metrics.redis_up.set(0)

    # --- the seam ------------------------------------------------------------------------

    def publish(self, event_id, items, previous_id):
        self.feed.offer(event_id, previous_id, items)
        self._send(BATCH + event_id, f"{self.process} {previous_id or '-'} {json.dumps(items, separators=(',', ':'))}")

    def relay(self, event_id, payload, skip=None):
        # `skip` is a connection of this process; on the others the sender has none to skip.
        self.hub.broadcast(event_id, payload, skip=skip)
        self._send(RELAY + event_id, f"{self.process} {encode_json(payload)}")

    def to_user(self, event_id, user_id, payload):
        self.tell(event_id, user_id, payload)
        self._send(USER + event_id, f"{self.process} {user_id} {encode_json(payload)}")

    def joined(self, event_id, user):
        self._here[(event_id, user["id"])] = user
        self._presence_change("hold", event_id, user)

    def left(self, event_id, user):
        self._here.pop((event_id, user["id"]), None)
        self._presence_change("drop", event_id, user)

    async def online_counts(self, event_ids):
        # Read from Redis: a room with no member here has no count here (none announced to us).
        # Redis away: the best this process knows, its announced counts or its own members.
        try:
            return await self.presence.online_counts(event_ids)
        except (RedisError, OSError) as error:
            self._went_away(error)
            return {event_id: self._counts.get(event_id, self.hub.online_count(event_id)) for event_id in event_ids}

    def room_closed(self, event_id):
        for key in [key for key in self._here if key[0] == event_id]:
            self._presence_work.append(("drop", event_id, self._here.pop(key)))
        self._counts.pop(event_id, None)
        self._run_presence()

    def problem(self):
        if self._subscribed and self._error is None:
            return None
        return f"Redis is not answering: {self._error or 'subscription lost'}."

    async def start(self):
        self._tasks = [asyncio.ensure_future(self._listen()), asyncio.ensure_future(self._heartbeat())]

    async def close(self):
        for task in self._tasks:
            task.cancel()
        for task in (self._sending, self._presence_task):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        try:
            for event_id, user, count in await self.presence.leave_all():
                self._send(RELAY + event_id, f"{self.process} {encode_json(presence_frame('user_left', user, count))}")
            if self._sending is not None:
                await self._sending
        except RedisError as error:
            log.warning("could not take this process's chat presence out of Redis: %s", error)

    # --- sending ---------------------------------------------------------------------------

    def _send(self, channel, data):
        self._outbox.append((channel, data))
        if self._sending is None:
            self._sending = asyncio.ensure_future(self._flush())

    async def _flush(self):
        """One sender, so this process's PUBLISHes go out in order, as many as queued in one
        pipeline. When Redis cannot take them they are dropped: the batches are stored, and the
        other processes read them from the store (module docstring)."""
        try:
            while self._outbox:
                outbox, self._outbox = self._outbox, []
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for channel, data in outbox:
                            pipe.publish(channel, data)
                        await pipe.execute()
                except (RedisError, OSError) as error:
                    self._went_away(error)
                    # The room's last batch is enough: a process it reaches reads the gap before
                    # it from the store, and drops it if delivered already.
                    self._unsent.update((channel, data) for channel, data in outbox if channel.startswith(BATCH))
                else:
                    self._answered()
        finally:
            self._sending = None

    # --- receiving -------------------------------------------------------------------------

    async def _listen(self):
        attempt = 0
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(*PATTERNS)
                async for message in pubsub.listen():
                    # Every pattern confirmed: from now on nothing published is missed. Also after
                    # redis-py reconnected the subscription by itself, subscribing again.
                    if message["type"] == "psubscribe" and message["data"] == len(PATTERNS):
                        attempt = 0
                        await self._came_back()
                    elif message["type"] == "pmessage":
                        self._received(message["channel"], message["data"])
                raise ConnectionError("the subscription ended")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                self._subscribed = False
                self._went_away(error)
            finally:
                await asyncio.shield(_close_quietly(pubsub))
            await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
            attempt += 1

    def _received(self, channel, data):
        # One bad message (not JSON, not UTF-8) or a failure in delivering it must not end the
        # listener: the subscription would look up while nothing is received any more.
        try:
            self._receive(channel, data)
        except Exception:
            log.exception("a chat message from Redis on %r could not be handled", channel)

    def _receive(self, channel, data):
        origin, _, rest = data.partition(b" ")
        if origin == self._origin:
            return  # our own, offered to our feed when published
        if channel.startswith(BATCH.encode()):
            event_id = channel[len(BATCH):].decode()
            if not self.feed.follows(event_id):
                return
            previous, _, items = rest.partition(b" ")
            self.feed.offer(event_id, None if previous == b"-" else previous.decode(), json.loads(items))
        elif channel.startswith(USER.encode()):
            user_id, _, payload = rest.partition(b" ")
            self.tell(channel[len(USER):].decode(), user_id.decode(), json.loads(payload))
        else:
            event_id = channel[len(RELAY):].decode()
            if not self.hub.online_count(event_id):
                return
            payload = json.loads(rest)
            if "online_count" in payload:
                self._counts[event_id] = payload["online_count"]
            self.hub.broadcast(event_id, payload)

    def _went_away(self, error):
        self._error = str(error).rstrip(".") or type(error).__name__
        self._report()

    def _answered(self):
        self._error = None
        self._report()

    def _report(self):
        """One log line when Redis goes away, one when it is back; the metrics follow."""
        away = self.problem() is not None
        if away and not self._reported_away:
            log.error("%s: chat serves this process's members alone and catches up from the database "
                      "when Redis is back", self.problem().rstrip("."))
            self.metrics.redis_disconnects.inc()
        elif not away and self._reported_away:
            log.info("Redis reachable again: chat rooms catch up on what they missed")
        self._reported_away = away
        self.metrics.redis_up.set(0 if away else 1)

    async def _came_back(self):
        self._subscribed = True
        self._answered()
        self.feed.catch_up()
        try:
            await self._reconcile_presence()
        except (RedisError, OSError) as error:
            self._went_away(error)

    # --- presence --------------------------------------------------------------------------

    def _presence_change(self, change, event_id, user):
        self._presence_work.append((change, event_id, user))
        self._run_presence()

    def _run_presence(self):
        if self._presence_task is None and self._presence_work:
            self._presence_task = asyncio.ensure_future(self._apply_presence())

    async def _apply_presence(self):
        """In order, what queued meanwhile in one pipeline: a user's leave never overtakes the join
        before it, and a burst of joins (or a room closing) costs one round trip."""
        try:
            while self._presence_work:
                work, self._presence_work = self._presence_work, []
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for change, event_id, user in work:
                            if change == "hold":
                                await self.presence.hold(pipe, event_id, user)
                            else:
                                await self.presence.drop(pipe, event_id, user["id"])
                        results = await pipe.execute()
                    self._answered()
                except (RedisError, OSError) as error:
                    # Put right by _reconcile_presence once Redis is back; meanwhile the room here
                    # hears of it with this process's own count.
                    self._went_away(error)
                    self._presence_stale = True
                    for change, event_id, user in work:
                        count = self.hub.online_count(event_id)
                        self.hub.broadcast(event_id, presence_frame(_KIND[change], user, count))
                    continue
                for (change, event_id, user), (announce, count) in zip(work, results):
                    if self.hub.online_count(event_id):
                        # The count changes only with an announcement. An unannounced result (the
                        # user is held by another process too) can come back after another
                        # process's later announcement reached us over pub/sub: it only starts
                        # a room's count here, never overwrites one.
                        if announce or event_id not in self._counts:
                            self._counts[event_id] = count
                    else:
                        self._counts.pop(event_id, None)
                    if announce:
                        self.relay(event_id, presence_frame(_KIND[change], user, count))
        finally:
            self._presence_task = None

    async def _reconcile_presence(self):
        """After Redis came back (perhaps empty, after a restart): holds what this process has
        and Redis lacks, drops what it holds and no longer has, announcing the differences."""
        self._presence_stale = False
        try:
            held = await self.presence.held()
        except BaseException:
            self._presence_stale = True
            raise
        for (event_id, user_id), username in held.items():
            if (event_id, user_id) not in self._here:
                self._presence_work.append(("drop", event_id, {"id": user_id, "username": username}))
        for key in self._here.keys() - held.keys():
            self._presence_work.append(("hold", key[0], self._here[key]))
        self._run_presence()

    async def _put_right(self):
        """What failed commands left undone (see `_unsent`, `_presence_stale`), once Redis answers."""
        unsent, self._unsent = self._unsent, {}
        for channel, data in unsent.items():
            self._send(channel, data)
        if self._presence_stale:
            await self._reconcile_presence()

    async def _heartbeat(self):
        while True:
            try:
                reaped, gone = await self.presence.heartbeat()
                for event_id, user, count in gone:
                    self.relay(event_id, presence_frame("user_left", user, count))
                self._answered()
                if reaped:
                    # Our loop stalled past the alive key's TTL and another process took our
                    # holdings out of the counts: put them back.
                    log.warning("this process's chat presence was reaped (its loop stalled?): putting it back")
                    self._presence_stale = True
                await self._put_right()
            except (RedisError, OSError) as error:
                self._went_away(error)
            except Exception:
                log.exception("chat heartbeat failed")  # the next one tries again
            await asyncio.sleep(HEARTBEAT_SECONDS)


async def _close_quietly(pubsub):
    try:
        await pubsub.aclose()
    except (RedisError, OSError):
        pass
