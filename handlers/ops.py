"""Liveness and readiness for the operator's tools."""
from domain import store
from handlers.base import BaseHandler
from handlers.docs import operation


class HealthHandler(BaseHandler):
    authentication = "none"
    docs = {"get": operation("Liveness: 200 while the process runs", response="Status", public=True)}

    def get(self):
        self.reply({"status": "ok"}, "The server is running.")


class ReadyHandler(BaseHandler):
    authentication = "none"
    docs = {"get": operation("Readiness: 200 when the database answers", response="Status", errors=[503],
                             public=True)}

    async def get(self):
        try:
            await self.services.store.ping()
        except store.UNAVAILABLE_ERRORS:
            self.set_status(503)
            self.finish({"message": "The database is not answering.", "code": "database_unavailable"})
            return
        self.reply({"status": "ready", "database": "in-memory" if self.services.store.in_memory else "mongodb"},
                   "Ready.")


ROUTES = [
    (r"/healthz", HealthHandler),
    (r"/readyz", ReadyHandler),
]
