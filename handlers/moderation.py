"""The organizer's chat moderation over REST: POST an action, GET the log
(GET/POST /api/v1/events/<id>/moderation). The rules are domain/moderation.py's."""
from domain.paging import ID_PATTERN
from handlers.base import BaseHandler
from handlers.docs import operation
from handlers.paging import page_query, page_request


class ModerationHandler(BaseHandler):
    docs = {
        "get": operation("The moderation log of an event's chat, newest first (its organizer)",
                         response="ModerationPage", errors=[403, 404], query=page_query(ID_PATTERN),
                         description="Every mute, unmute, removal, return (allow) and deletion of someone "
                                     "else's message: who did it (actor_id), to whom (user_id), when (at)."),
        "post": operation("Mute, unmute, remove or allow back a user in an event's chat (its organizer)",
                          request="ModerationRequest", response="ModerationAction", errors=[403, 404],
                          description="mute: the user reads but cannot send or edit for duration_seconds "
                                      "(their sends get the chat error `muted` with the time left). remove: "
                                      "their chat sockets close with 4403 and they cannot rejoin, nor read "
                                      "the history, until `allow`. 400 cannot_moderate_organizer; 403 "
                                      "not_event_organizer; 404 event_not_found or user_not_found."),
    }

    async def get(self, event_id):
        limit, cursor = page_request(self)
        self.reply(await self.services.moderation.log(event_id, self.current_user, limit, cursor))

    async def post(self, event_id):
        # Who asks before what they ask: an attendee learns nothing from the body's validation.
        await self.services.moderation.check_organizer(event_id, self.current_user)
        body = self.json_body("ModerationRequest")
        self.reply(await self.services.moderation.act(event_id, self.current_user, body))


ROUTES = [(r"/api/v1/events/(?P<event_id>[^/]+)/moderation", ModerationHandler)]
