"""Chat history over REST: GET /api/v1/events/<id>/messages, newest first, page by page."""
from domain.chat import check_chat_member
from domain.paging import ID_PATTERN
from handlers.base import BaseHandler
from handlers.docs import operation
from handlers.paging import page_query, page_request


class MessagesHandler(BaseHandler):
    docs = {"get": operation("An event's chat history, newest first (its organizer and RSVPed users)",
                             response="MessagePage", errors=[403, 404],
                             query=page_query(ID_PATTERN))}

    async def get(self, event_id):
        await check_chat_member(self.services.store, event_id, self.current_user["id"])
        limit, cursor = page_request(self)
        self.reply(await self.services.chat.log.page(event_id, limit, cursor))


ROUTES = [(r"/api/v1/events/(?P<event_id>[^/]+)/messages", MessagesHandler)]
