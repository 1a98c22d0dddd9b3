"""Endings of sockets on every process: a logout or password reset (tokens revoked), an RSVP
cancelled, a removal from an event's chat by its organizer and an event deleted close the affected
sockets, and refuse the handshakes in progress, on whichever process they are open, with the same
close codes (4401, 4403, 4404).

The process where the ending happens applies it at once through its own listeners, as one process
alone does, and publishes it on the `endings` channel (cluster/channel.py); every other process
applies it through the same listeners: each process applies each ending exactly once.

Pub/sub delivers at most once. A lost ending only delays a close, never lets anything new in: every
REST request and every handshake checks the token and the membership in the store, where the ending
was written before it was published. What a lost message leaves open is a socket opened before it;
so each time the subscription is made again after a failure, the process re-checks its open sockets
against the store (`recheck`): a missed ending lasts no longer than the outage plus
channel.RETRY_SECONDS and one pass over the open sockets.
"""
import logging

from cluster.channel import Channel
from domain.times import parse_iso, to_iso

log = logging.getLogger("cluster")


class ClusterEndings:
    """`revoked`, `left`, `deleted`: the local listeners (as Accounts and Events call them), applied
    to endings from other processes. `recheck`: an async callable closing what endings missed
    meanwhile would have closed. `failures`: a counter (prometheus) of Redis failures by part."""

    def __init__(self, client, revoked, left, deleted, moderated, recheck, failures):
        self.listeners = {"revoked": revoked, "left": left, "deleted": deleted, "moderated": moderated}
        self.channel = Channel(client, "endings", self._apply, failures, "endings", resubscribed=recheck)
        self.start, self.stop = self.channel.start, self.channel.stop

    # --- the listeners Accounts and Events call, after the local ones ----------------------

    def revoked(self, user_id, jti=None, issued_before=None):
        self.channel.publish({"kind": "revoked", "args": [user_id],
                              "kwargs": {"jti": jti, "issued_before": issued_before}})

    def left(self, event_id, user_id):
        self.channel.publish({"kind": "left", "args": [event_id, user_id], "kwargs": {}})

    def deleted(self, event_id):
        self.channel.publish({"kind": "deleted", "args": [event_id], "kwargs": {}})

    def moderated(self, event_id, user_id, action, until):
        # A removal closes the user's sockets on every process; a mute's end goes as text.
        self.channel.publish({"kind": "moderated", "args": [event_id, user_id, action],
                              "kwargs": {"until": to_iso(until)}})

    def _apply(self, ending):
        if ending["kind"] == "moderated":
            ending["kwargs"]["until"] = parse_iso(ending["kwargs"]["until"])
        for listener in self.listeners[ending["kind"]]:
            try:
                listener(*ending["args"], **ending["kwargs"])
            except Exception:
                log.exception("applying an ending from another process failed")
