"""The page a password reset email links to by default: /reset-password#token=...

A person who forgot their password on a computer, or whose app has no deep link (RESET_LINK),
finishes the reset here: the page reads the token from its address (the link puts it in the
fragment, which browsers never send, so no server or proxy logs it) and sends it, with the new
password, to POST /api/v1/auth/reset-password; the API's messages are shown as they come.
Outside the OpenAPI document, like /docs: a page for a browser, not an operation of the API.
"""
from handlers.docs_page import STATIC_ROOT, HtmlPageHandler, StaticFilesHandler


class ResetPageHandler(HtmlPageHandler):
    page = (STATIC_ROOT / "reset-password.html").read_bytes()

    def set_default_headers(self):
        super().set_default_headers()
        # The address holds a credential: no copy of this answer is kept under it. The page's
        # Referrer-Policy (no-referrer, PageHandler) keeps the address out of its requests.
        self.set_header("Cache-Control", "no-store")


ROUTES = [
    (r"/reset-password", ResetPageHandler),
    # The page's script and style, beside it: the pattern names the only two files.
    (r"/(reset-password\.(?:js|css))", StaticFilesHandler),
]
