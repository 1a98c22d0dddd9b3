"""The chat's broker seam: how a room's stored batches and its other frames reach the room's
members, in this process alone (`LocalBroker`, REDIS_URL empty) or in every process serving the
event (cluster/chat_broker.py, `RedisBroker`). The chat service talks to either through the same
methods; the room hub and the message log know neither.

  publish(event_id, items, previous_id)  the message log's stored batch (items with ids, in stored
                                         order, opaque otherwise; previous_id: the id stored just
                                         before), for the room feed of every process
  relay(event_id, payload, skip=None)    a frame for every member of the room, not ordered with the
                                         batches (presence, typing indicators); `skip`: a connection
                                         of this process left out (the typist's own)
  joined(event_id, user) / left(...)     the user's first / last connection to the room in this
                                         process: announces user_joined / user_left when it is the
                                         user's first / last anywhere, with the room's online_count
  to_user(event_id, user_id, payload)    a frame for the user's own sockets in the event (a read
                                         marker: their other devices), in every process
  online_counts(event_ids)               (awaited) {event id: users in the room's live chat,
                                         counted once}
  room_closed(event_id)                  the room's sockets were closed at once (event deleted,
                                         shutdown): their presence goes
  problem()                              None, or why the chat cannot reach the other processes
The Redis broker also has `start()` and `close()`, the server's startup and shutdown hooks
(handlers/app.py).
"""


def presence_frame(kind, user, online_count):
    return {"type": kind, "user": user, "online_count": online_count}


class LocalBroker:
    """One process: batches go straight to the room feed, frames straight to the hub, presence is
    the hub's."""

    def __init__(self, feed, hub, tell):
        self.feed = feed
        self.hub = hub
        self.tell = tell  # tell(event_id, user_id, payload): to the user's sockets here in the event

    def publish(self, event_id, items, previous_id):
        self.feed.offer(event_id, previous_id, items)

    def relay(self, event_id, payload, skip=None):
        self.hub.broadcast(event_id, payload, skip=skip)

    def to_user(self, event_id, user_id, payload):
        self.tell(event_id, user_id, payload)

    def joined(self, event_id, user):
        self.relay(event_id, presence_frame("user_joined", user, self.hub.online_count(event_id)))

    def left(self, event_id, user):
        self.relay(event_id, presence_frame("user_left", user, self.hub.online_count(event_id)))

    async def online_counts(self, event_ids):
        return {event_id: self.hub.online_count(event_id) for event_id in event_ids}

    def room_closed(self, event_id):
        pass

    def problem(self):
        return None
