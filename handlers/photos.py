"""Event photos over HTTP: the gallery, multipart uploads, and /media/ for the local storage."""

import tornado.httputil
import tornado.web

from domain.errors import InvalidInput, NotFound, TooLarge, UnsupportedMediaType
from domain.gallery import MAX_PHOTOS_PER_EVENT, PHOTO_CURSOR_PATTERN
from domain.photos import PHOTO_FORMATS
from domain.storage import PHOTO_CACHE_CONTROL, LocalStorage
from handlers.base import BaseHandler
from handlers.docs import operation
from handlers.errors import write_error_response
from handlers.paging import page_query, page_request

PHOTO_FIELD = "photo"
# Room for the multipart framing around the photo (boundaries, part headers, a long file name),
# so the envelope can be refused while it streams in and the photo itself held to its exact limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class EventPhotosHandler(BaseHandler):
    docs = {
        "get": operation(
            "An event's photos, newest first", response="PhotoPage", query=page_query(PHOTO_CURSOR_PATTERN),
            description="Any signed-in user may list them: the photo URLs themselves are public. "
                        "Photos added by the old backend have uploaded_by and uploaded_at null."),
        "post": operation(
            "Add a photo to an event (its organizer or an RSVPed user)", multipart=PHOTO_FIELD,
            response="PhotoUploaded", status=201, errors=[403, 404, 409, 413, 415, 502, 503],
            description="One JPEG, PNG or WebP, recognised by its bytes (not its name or declared type), "
                        "at most photo_max_bytes (10 MiB by default): 415 for anything else, 413 above "
                        "the limit. 400 image_too_large above 50 million pixels, image_too_complex for a "
                        "progressive JPEG with more scans than its size allows (100 at most) or an image "
                        "whose decoding takes more than photo_decode_cpu_seconds of CPU. "
                        "Metadata (EXIF with GPS, XMP, comments) is removed before it is "
                        "stored. 403 for anyone but the organizer and RSVPed users (before the body is "
                        f"read); 409 gallery_full at {MAX_PHOTOS_PER_EVENT} photos; 502/503 when the photo storage "
                        "fails, and then nothing is added to the gallery."),
    }

    def body_limit(self):
        if self.request.method == "POST":
            return self.config.photo_max_bytes + MULTIPART_OVERHEAD_BYTES
        return super().body_limit()

    async def prepare(self):
        await super().prepare()
        if self.request.method == "POST":
            # Refused before the body streams in: nobody should send 10 MiB to be told 403.
            await self.services.gallery.check_uploader(self.path_kwargs["event_id"], self.current_user)

    async def get(self, event_id):
        limit, cursor = page_request(self)
        page = await self.services.gallery.list_photos(event_id, limit, cursor)
        self.reply(page.as_json())

    async def post(self, event_id):
        photo = self.photo_from_body()
        self.reply(await self.services.gallery.upload(event_id, self.current_user, photo), "Photo added.", status=201)

    def photo_from_body(self):
        """The bytes of the one `photo` part; its file name and declared type are ignored."""
        content_type = self.request.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            raise UnsupportedMediaType(f"Send the photo as multipart/form-data, in the field {PHOTO_FIELD!r}.",
                                       code="multipart_required")
        arguments, files = {}, {}
        try:
            tornado.httputil.parse_body_arguments(content_type, self.body, arguments, files, self.request.headers)
        except tornado.httputil.HTTPInputError:
            raise InvalidInput("The multipart body is malformed.", code="malformed_multipart") from None
        parts = [file.body for file in files.get(PHOTO_FIELD, [])] + arguments.get(PHOTO_FIELD, [])
        if len(parts) != 1:
            raise InvalidInput(f"Send exactly one photo, in the multipart field {PHOTO_FIELD!r}.",
                               code="photo_required",
                               errors=[{"path": PHOTO_FIELD, "message": "exactly one file is required"}])
        if len(parts[0]) > self.config.photo_max_bytes:
            raise TooLarge(f"The photo is larger than {self.config.photo_max_bytes} bytes.")
        return parts[0]


class MediaHandler(tornado.web.StaticFileHandler):
    """The local storage's photos at /media/<key>; with S3 storage every path is a 404.

    Outside the API document: these are the public URLs uploads answer with, fetched by image
    views without a token (keys are random, so they cannot be guessed)."""

    CONTENT_TYPES = {photo_format.extension: photo_format.content_type for photo_format in PHOTO_FORMATS.values()}

    def initialize(self, services, route=None):
        self.route_name = route
        storage = services.storage
        self.storage = storage if isinstance(storage, LocalStorage) else None
        super().initialize(path=str(self.storage.root_dir) if self.storage else "")

    def set_default_headers(self):
        self.clear_header("Server")
        # Served as what the extension says and nothing a browser might guess instead.
        self.set_header("X-Content-Type-Options", "nosniff")

    async def get(self, key, include_body=True):
        if self.storage is None or key.rpartition(".")[2] not in self.CONTENT_TYPES:
            raise tornado.web.HTTPError(404)
        try:
            self.storage.path_for(key)  # refuses any key that could name a file outside the root
        except NotFound:
            raise tornado.web.HTTPError(404) from None
        await super().get(key, include_body)

    def get_content_type(self):
        return self.CONTENT_TYPES[self.absolute_path.rpartition(".")[2]]

    def compute_etag(self):
        # A key is never reused, so the URL already identifies the content; hashing every file
        # for an ETag would only read it twice.
        return None

    def set_extra_headers(self, path):
        self.set_header("Cache-Control", PHOTO_CACHE_CONTROL)

    def write_error(self, status_code, **kwargs):
        write_error_response(self, status_code, kwargs.get("exc_info"))


ROUTES = [
    (r"/api/v1/events/(?P<event_id>[^/]+)/photos", EventPhotosHandler),
    (r"/media/(.*)", MediaHandler),
]
