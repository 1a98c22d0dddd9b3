"""Chat history over REST: GET /api/v1/events/<id>/messages, newest first, page by page."""
from domain.chat import chat_event_id
from handlers.base import BaseHandler
from handlers.docs import operation
from handlers.paging import page_query, page_request


class MessagesHandler(BaseHandler):
    docs = {"get": operation("An event's chat history, newest first (its organizer and RSVPed users)",
                             response="MessagePage", errors=[403, 404],
                             query=page_query(r"^[0-9a-f]{24}$"))}

    async def get(self, event_id):
        event_oid = await chat_event_id(self.services.store, event_id, self.current_user["_id"])
        limit, cursor = page_request(self)
        self.reply(await self.services.chat.log.page(event_oid, limit, cursor))


ROUTES = [(r"/api/v1/events/(?P<event_id>[^/]+)/messages", MessagesHandler)]
