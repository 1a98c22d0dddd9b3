"""The API reference for people: Swagger UI on the OpenAPI document at /docs; `/` leads there.

Outside the OpenAPI document, like /media/: a page and its files for a browser, not operations
of the API. Swagger UI is vendored under static/swagger-ui/ (its VENDORED.md says from where), so
the page works offline and loads nothing from another origin.
"""
import pathlib

import tornado.web

from handlers.errors import write_error_response

STATIC_ROOT = pathlib.Path(__file__).resolve().parent.parent / "static"
PAGE = (STATIC_ROOT / "docs.html").read_bytes()

# Only this server's own files run and style the page (Swagger UI's icons are data: images); no
# inline script, nothing from another origin, no plugins, no framing (which could trick a
# visitor into pressing "Execute"), no base or form pointing elsewhere. The API's JSON answers keep
# their own headers (handlers/base.py).
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"))


class PageHandler(tornado.web.RequestHandler):
    """What the page, its files and the redirect to it share: the browser-facing headers."""

    def initialize(self, services, route=None):
        self.route_name = route

    def set_default_headers(self):
        self.clear_header("Server")  # no version banner
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        # Revalidated on every visit (304 when unchanged): after an upgrade the page is the new one.
        self.set_header("Cache-Control", "no-cache")

    def write_error(self, status_code, **kwargs):
        write_error_response(self, status_code, kwargs.get("exc_info"))


class RootHandler(PageHandler):
    """A person who opens the server's address wants the reference: `/` redirects to it, rather
    than serving a landing page that would be one more page to keep in step."""

    def get(self):
        # Relative, so it stays on the host, port and path prefix the browser used.
        self.redirect("docs")


class HtmlPageHandler(PageHandler):
    """One HTML file of static/, read at start: `page`."""
    page = b""

    def get(self):
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(self.page)


class DocsPageHandler(HtmlPageHandler):
    page = PAGE


class StaticFilesHandler(PageHandler, tornado.web.StaticFileHandler):
    """Files of static/, as the route's pattern names them (Tornado's StaticFileHandler refuses
    paths leading outside it): at /docs/static/ for the docs page, beside the reset page."""

    def initialize(self, services, route=None):
        PageHandler.initialize(self, services, route)
        tornado.web.StaticFileHandler.initialize(self, path=str(STATIC_ROOT))


ROUTES = [
    (r"/", RootHandler),
    (r"/docs", DocsPageHandler),
    (r"/docs/static/(.*)", StaticFilesHandler),
]
