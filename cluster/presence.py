"""Who is in each room's live chat, counted once across processes, in Redis.

Keys (standalone Redis; the scripts name keys they build, so not Redis Cluster):
  chat:online:<event>    hash user id -> how many processes hold a connection of the user there
  chat:held:<process>    hash "<event> <user id>" -> username: what this process holds, to undo
  chat:alive:<process>   set with a TTL of ALIVE_TTL_SECONDS, renewed every HEARTBEAT_SECONDS
  chat:processes         set of the processes that hold something

Each change is one Lua script, atomic in Redis: `hold` counts the user in once per process
(HSETNX on the process's own hash makes it idempotent, so holding again after Redis came back
counts nothing twice), `drop` undoes it. A process killed with kill -9 stops renewing its alive
key; the next `reap`, run by every live process every HEARTBEAT_SECONDS, finds the key expired,
takes that process's holdings out of the counts and returns them to be announced as user_left.
So a dead process's presence lasts at most ALIVE_TTL_SECONDS + HEARTBEAT_SECONDS (20 s).
A live process whose loop stalled past ALIVE_TTL_SECONDS is reaped the same way; the reap leaves it
a mark (chat:reaped:<process>), which its next heartbeat takes, to put its holdings back.
"""

HEARTBEAT_SECONDS = 5
ALIVE_TTL_SECONDS = 15
GHOST_BOUND_SECONDS = ALIVE_TTL_SECONDS + HEARTBEAT_SECONDS
REAPED_MARK_SECONDS = 86400  # a reaped process that never comes back: its mark goes in a day

PROCESSES = "chat:processes"

# KEYS: online, held, alive, processes. ARGV: user id, field, username, process, ttl ms.
# Returns {1 if the user is now in the room in some process for the first time, online count}.
_HOLD = """
redis.call('SET', KEYS[3], 1, 'PX', ARGV[5])
redis.call('SADD', KEYS[4], ARGV[4])
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 0 then
  return {0, redis.call('HLEN', KEYS[1])}
end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return {n == 1 and 1 or 0, redis.call('HLEN', KEYS[1])}
"""

# KEYS: online, held. ARGV: user id, field. Returns {1 if the user left the room everywhere, count}.
_DROP = """
if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then
  return {0, redis.call('HLEN', KEYS[1])}
end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return {n <= 0 and 1 or 0, redis.call('HLEN', KEYS[1])}
"""

# KEYS: processes. ARGV: how long a reaped process's mark lasts, s. Returns a flat list of event,
# user id, username, online count for every user who left a room everywhere because the process
# holding them is gone.
_REAP = """
local gone = {}
for _, process in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', 'chat:alive:' .. process) == 0 then
    local held = redis.call('HGETALL', 'chat:held:' .. process)
    for i = 1, #held, 2 do
      local space = string.find(held[i], ' ', 1, true)
      local event, user = string.sub(held[i], 1, space - 1), string.sub(held[i], space + 1)
      local online = 'chat:online:' .. event
      local n = redis.call('HINCRBY', online, user, -1)
      if n <= 0 then
        redis.call('HDEL', online, user)
        table.insert(gone, event); table.insert(gone, user); table.insert(gone, held[i + 1])
        table.insert(gone, redis.call('HLEN', online))
      end
    end
    redis.call('DEL', 'chat:held:' .. process)
    redis.call('SREM', KEYS[1], process)
    redis.call('SET', 'chat:reaped:' .. process, 1, 'EX', ARGV[1])
  end
end
return gone
"""


class RedisPresence:
    def __init__(self, redis, process):
        self.redis = redis
        self.process = process
        self._held_key = f"chat:held:{process}"
        self._alive_key = f"chat:alive:{process}"
        self._reaped_key = f"chat:reaped:{process}"
        self._hold = redis.register_script(_HOLD)
        self._drop = redis.register_script(_DROP)
        self._reap = redis.register_script(_REAP)

    async def hold(self, pipe, event_id, user):
        """Queues on `pipe` the user's coming into the room here; its result in the pipeline's:
        [1 if the user just came into the room (in no process before), the online count]."""
        await self._hold(keys=[f"chat:online:{event_id}", self._held_key, self._alive_key, PROCESSES],
                         args=[user["id"], f"{event_id} {user['id']}", user["username"], self.process,
                               ALIVE_TTL_SECONDS * 1000], client=pipe)

    async def drop(self, pipe, event_id, user_id):
        """Queues on `pipe` the user's leaving the room here; its result: [1 if the user just
        left the room everywhere, the online count]."""
        await self._drop(keys=[f"chat:online:{event_id}", self._held_key], args=[user_id, f"{event_id} {user_id}"],
                         client=pipe)

    async def online_counts(self, event_ids):
        """{event id: the room's online count}, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.hlen(f"chat:online:{event_id}")
            return dict(zip(event_ids, await pipe.execute()))

    async def held(self):
        """{(event id, user id): username} of what this process holds in Redis."""
        fields = await self.redis.hgetall(self._held_key)
        return {tuple(field.decode().split(" ", 1)): username.decode() for field, username in fields.items()}

    async def heartbeat(self):
        """Renews this process's alive key, then takes dead processes' holdings out: returns
        (whether this process was reaped since its last heartbeat, [(event id, user, online
        count)] of the users gone from a room everywhere)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._alive_key, 1, px=ALIVE_TTL_SECONDS * 1000)
            pipe.getdel(self._reaped_key)
            _, reaped = await pipe.execute()
        return reaped is not None, await self._reaped()

    async def leave_all(self):
        """At shutdown: this process's holdings out of the counts now, not after the TTL; returns
        what `heartbeat` does."""
        await self.redis.delete(self._alive_key)
        gone = await self._reaped()
        await self.redis.delete(self._reaped_key)  # reaped by itself: no stall to put right
        return gone

    async def _reaped(self):
        flat = await self._reap(keys=[PROCESSES], args=[REAPED_MARK_SECONDS])
        return [(flat[i].decode(), {"id": flat[i + 1].decode(), "username": flat[i + 2].decode()}, flat[i + 3])
                for i in range(0, len(flat), 4)]
