"""Chat history over REST: GET /api/v1/events/<id>/messages, newest first, page by page."""
from domain.chat import chat_event_id
from domain.discovery import MAX_LIMIT, parse_page_args
from handlers.base import BaseHandler
from handlers.docs import operation

PAGE_QUERY = (
    ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 20}, "Messages per page."),
    ("cursor", {"type": "string", "pattern": "^[0-9a-f]{24}$"},
     "next_cursor of the previous page, as given (opaque): the messages before it. Omit for the newest."),
)


class MessagesHandler(BaseHandler):
    docs = {"get": operation("An event's chat history, newest first (its organizer and RSVPed users)",
                             response="MessagePage", errors=[403, 404], query=PAGE_QUERY)}

    async def get(self, event_id):
        event_oid = await chat_event_id(self.services.store, event_id, self.current_user["_id"])
        limit, cursor = parse_page_args({name: self.get_query_argument(name, None) for name, _, _ in PAGE_QUERY})
        self.reply(await self.services.chat.log.page(event_oid, limit, cursor))


ROUTES = [(r"/api/v1/events/(?P<event_id>[^/]+)/messages", MessagesHandler)]
