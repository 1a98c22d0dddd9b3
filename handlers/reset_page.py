"""The page a password reset email links to by default: /reset-password#token=...

A person who forgot their password on a computer, or whose app has no deep link (RESET_LINK),
finishes the reset here: the page reads the token from its address (the link puts it in the
fragment, which browsers never send, so no server or proxy logs it) and sends it, with the new
password, to POST /api/v1/auth/reset-password; the API's messages are shown as they come.
Outside the OpenAPI document, like /docs: a page for a browser, not an operation of the API.
"""
import tornado.web

from handlers.docs_page import STATIC_ROOT, PageHandler

PAGE = (STATIC_ROOT / "reset-password.html").read_bytes()


class ResetPageHandler(PageHandler):
    def set_default_headers(self):
        super().set_default_headers()
        # The address holds a credential: no copy of this answer is kept under it. The page's
        # Referrer-Policy (no-referrer, PageHandler) keeps the address out of its requests.
        self.set_header("Cache-Control", "no-store")

    def get(self):
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(PAGE)


class ResetFileHandler(PageHandler, tornado.web.StaticFileHandler):
    """The page's script and style, beside it (the route names the only two files)."""

    def initialize(self, services, route=None):
        PageHandler.initialize(self, services, route)
        tornado.web.StaticFileHandler.initialize(self, path=str(STATIC_ROOT))


ROUTES = [
    (r"/reset-password", ResetPageHandler),
    (r"/(reset-password\.(?:js|css))", ResetFileHandler),
]
