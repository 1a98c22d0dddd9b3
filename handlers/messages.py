"""Chat over REST: an event's history (GET /api/v1/events/<id>/messages, newest first, page by
page) and the user's chats with their unread counts (GET /api/v1/users/me/chats)."""
from domain.chat import chats_of, check_chat_member
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


class ChatsHandler(BaseHandler):
    docs = {"get": operation("Your event chats with their unread counts and last messages", response="ChatList",
                             description="The chats of the 200 newest events you organize or have RSVPed to. "
                                         "Read markers are kept by the server (the `mark_read` chat frame), so "
                                         "the counts agree on every device.")}

    async def get(self):
        self.reply(await chats_of(self.services.store, self.current_user["id"]))


ROUTES = [(r"/api/v1/events/(?P<event_id>[^/]+)/messages", MessagesHandler),
          (r"/api/v1/users/me/chats", ChatsHandler)]
