"""Users as others see them, and the follow graph: profile, follow, unfollow, followers, following."""
from domain import social
from handlers.base import BaseHandler
from handlers.docs import operation
from handlers.paging import page_query, page_request


class UserHandler(BaseHandler):
    docs = {"get": operation("A user's public profile", response="UserProfile")}

    async def get(self, user_id):
        self.reply(await social.user_profile(self.services.store, user_id, self.current_user))


class FollowHandler(BaseHandler):
    docs = {"post": operation("Follow a user (idempotent; no body)", response="UserProfile", errors=[400],
                              description="Following yourself is a 400. A FOLLOW activity is recorded when "
                                          "the follow is new, not on repeats.")}

    async def post(self, user_id):
        profile = await social.follow(self.services.store, self.current_user, user_id)
        self.reply(profile, f"You follow {profile['username']}.")


class UnfollowHandler(BaseHandler):
    docs = {"post": operation("Stop following a user (idempotent; no body)", response="UserProfile", errors=[400],
                              description="Unfollowing yourself is a 400, like following yourself.")}

    async def post(self, user_id):
        profile = await social.unfollow(self.services.store, self.current_user, user_id)
        self.reply(profile, f"You no longer follow {profile['username']}.")


class FollowersHandler(BaseHandler):
    docs = {"get": operation("Who follows a user, in user id order", response="UserPage",
                             query=page_query(social.USER_CURSOR_PATTERN))}

    async def get(self, user_id):
        limit, cursor = page_request(self)
        page = await social.list_followers(self.services.store, user_id, limit, cursor)
        self.reply(page.as_json())


class FollowingHandler(BaseHandler):
    docs = {"get": operation("Whom a user follows, in user id order", response="UserPage",
                             query=page_query(social.USER_CURSOR_PATTERN))}

    async def get(self, user_id):
        limit, cursor = page_request(self)
        page = await social.list_following(self.services.store, user_id, limit, cursor)
        self.reply(page.as_json())


# After auth's routes in the table: /api/v1/users/me must reach its own handler first.
ROUTES = [
    (r"/api/v1/users/(?P<user_id>[^/]+)", UserHandler),
    (r"/api/v1/users/(?P<user_id>[^/]+)/follow", FollowHandler),
    (r"/api/v1/users/(?P<user_id>[^/]+)/unfollow", UnfollowHandler),
    (r"/api/v1/users/(?P<user_id>[^/]+)/followers", FollowersHandler),
    (r"/api/v1/users/(?P<user_id>[^/]+)/following", FollowingHandler),
]
