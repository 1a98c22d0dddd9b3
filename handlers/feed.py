"""The caller's activity feed."""
from domain import social
from handlers.base import BaseHandler
from handlers.docs import operation
from handlers.paging import page_query, page_request


class FeedHandler(BaseHandler):
    docs = {"get": operation("Activities of the users the caller follows, newest first", response="ActivityPage",
                             query=page_query(social.FEED_CURSOR_PATTERN),
                             description="Pages stay stable while new activities arrive: the cursor points "
                                         "at the last activity shown and the next page is strictly older.")}

    async def get(self):
        limit, cursor = page_request(self)
        page = await social.feed_page(self.services.store, self.current_user, limit, cursor)
        self.reply(page.as_json())


ROUTES = [
    (r"/api/v1/feed", FeedHandler),
]
