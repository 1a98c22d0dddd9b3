"""Organizer moderation of an event's chat: mute a user for a while, remove a user from the chat
(until allowed back), and the log of every action, organizers' deletions of messages included.

Where each rule is enforced:
- muted and removed users' messages and edits are refused by the store (repositories.chat_refusal):
  on SQLite in the write that would store them, so a mute lands exactly between two messages; on
  MongoDB, which has no transaction here, from the standing read just before that write, so a
  message racing the mute by a few milliseconds may still be stored;
- a removed user's handshake and history reads are refused (check_chat_member), and their open
  sockets are closed by the chat (4403) through the listener, which also tells a muted user's
  sockets (they stop relaying the user's typing indicators);
- only the event's organizer acts, and never on themselves.
"""
import datetime
import re

from domain.errors import Forbidden, InvalidInput, NotFound
from domain.paging import ID_PATTERN
from domain.times import to_iso, utcnow


def action_json(action):
    """The contract's ModerationAction from an action record."""
    shown = {"id": action["id"], "event_id": action["event_id"], "action": action["action"],
             "user_id": action["user_id"] or "", "actor_id": action["actor_id"] or "", "at": to_iso(action["at"])}
    if action["message_id"] is not None:
        shown["message_id"] = action["message_id"]
    if action["until"] is not None:
        shown["until"] = to_iso(action["until"])
    return shown


class ChatModeration:
    """Each of `listeners`, `listener(event_id, user_id, action, until)`, is called after each action
    is stored: the chat closes a removed user's sockets in that event, and tells a muted user's
    sockets; with several processes, the others are told too (cluster/endings.py)."""

    def __init__(self, store, listeners, clock=utcnow):
        self.store = store
        self.listeners = listeners
        self.clock = clock

    async def act(self, event_id, organizer, body):
        """Applies one action ({action, user_id, duration_seconds with a mute and only then:
        schemas/ModerationRequest.json}); returns it as logged."""
        await self.check_organizer(event_id, organizer)
        action, user_id = body["action"], body["user_id"]
        if user_id == organizer["id"]:
            raise InvalidInput("The organizer cannot be muted or removed from their own event's chat.",
                               code="cannot_moderate_organizer")
        if await self.store.users.get(user_id) is None:
            raise NotFound("There is no such user.", code="user_not_found")
        now, until = self.clock(), None
        if action == "mute":
            until = now + datetime.timedelta(seconds=body["duration_seconds"])
        logged = await self.store.messages.moderate(event_id, action, user_id, organizer["id"], now, until)
        for listener in self.listeners:
            listener(event_id, user_id, action, until)
        return action_json(logged)

    async def log(self, event_id, organizer, limit, cursor=None):
        """A page of the event's moderation log, newest first: {items, next_cursor}."""
        if cursor is not None and not re.fullmatch(ID_PATTERN, cursor):
            raise InvalidInput("The cursor is not one this server handed out.", code="invalid_cursor",
                               errors=[{"path": "cursor", "message": "is not a cursor this server handed out"}])
        await self.check_organizer(event_id, organizer)
        actions = await self.store.messages.actions(event_id, cursor, limit + 1)
        items = [action_json(action) for action in actions[:limit]]
        return {"items": items, "next_cursor": items[-1]["id"] if len(actions) > limit else None}

    async def check_organizer(self, event_id, organizer):
        """Raises NotFound or Forbidden unless `organizer` organizes the event."""
        event = await self.store.events.get(event_id)
        if event is None:
            raise NotFound("There is no such event.", code="event_not_found")
        if event["organizer_id"] != organizer["id"]:
            raise Forbidden("Only the event's organizer can moderate its chat.", code="not_event_organizer")
