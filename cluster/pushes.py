"""Notification pushes on every process: a notification stored by one process reaches the user's
sockets on all of them (/ws/notifications).

The process that stores it pushes to its own sockets at once, as one process alone does, and
publishes it on the `notifications` channel (cluster/channel.py) for the others, which push to
theirs. The pushes of one turn of the loop (the notifier stores and pushes a batch at a time) go
in one message: a deletion telling 100,000 members costs Redis a message per stored batch, not per
member. Every process receives every push and keeps those of the users it holds a socket of (one
dict lookup each).

A push lost while a process is not subscribed (Redis away) is not lost to the user: every pushed
notification is stored first, and GET /api/v1/notifications lists it.
"""
import asyncio

from cluster.channel import Channel


class ClusterNotificationHub:
    """The notifier's `push`, for several processes, around this process's LocalNotificationHub."""

    def __init__(self, client, local, failures):
        self.local = local
        self.channel = Channel(client, "notifications", self._apply, failures, "notifications")
        self.start, self.stop = self.channel.start, self.channel.stop
        self._outbox = []

    def push(self, user_id, notification):
        self.local.push(user_id, notification)
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append([user_id, notification])

    def _flush(self):
        outbox, self._outbox = self._outbox, []
        self.channel.publish(outbox)

    def _apply(self, pushes):
        for user_id, notification in pushes:
            self.local.push(user_id, notification)
