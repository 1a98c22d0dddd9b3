"""Liveness and readiness for the operator's tools."""
from domain.errors import StoreUnavailable
from handlers.base import BaseHandler
from handlers.docs import operation


class HealthHandler(BaseHandler):
    authentication = "none"
    docs = {"get": operation("Liveness: 200 while the process runs", response="Status", public=True)}

    def get(self):
        self.reply({"status": "ok"}, "The server is running.")


class ReadyHandler(BaseHandler):
    authentication = "none"
    docs = {"get": operation("Readiness: 200 when the database answers and is fully prepared, and Redis answers "
                             "when several processes share it", response="Status", errors=[503], public=True)}

    async def get(self):
        store = self.services.store
        try:
            await store.ping()
        except StoreUnavailable:
            self._not_ready("The database is not answering.", "database_unavailable")
            return
        problems = store.problems()
        if problems:
            self._not_ready(f"The database is not ready: {'; '.join(problems)}.", "database_not_ready")
            return
        problem = self.services.chat.broker.problem()
        if problem is not None:
            # The chat still serves this process's members, but not the other processes' ones.
            self._not_ready(problem, "redis_unavailable")
            return
        self.reply({"status": "ready", "database": store.kind}, "Ready.")

    def _not_ready(self, message, code):
        self.set_status(503)
        self.finish({"message": message, "code": code})


ROUTES = [
    (r"/healthz", HealthHandler),
    (r"/readyz", ReadyHandler),
]
