"""Event photos: who may add one, adding it (clean, stored, then listed), and reading the gallery.

An event keeps the old backend's `photo_gallery`, a plain list of URLs in upload order, which
the old backend reads and `photo_count` counts. Beside it, `photos` holds who uploaded each one
and when: `{url, uploaded_by, uploaded_at}`. Both are pushed by the same single-document update,
so they cannot disagree; URLs found only in `photo_gallery` (put there by the old backend) are
listed with an unknown uploader.

Order of an upload: check the uploader, strip the metadata, store the object, and only then
push its URL in an update whose filter checks the uploader again. A gallery entry therefore
always names a stored object. The reverse can happen: if the uploader loses the right while the
photo is being stored (RSVP cancelled, event deleted), the object stays in storage, unlisted.

Listing: any signed-in user may read an event's gallery, as they may read the event itself:
the photo URLs are public (the media route and the bucket need no token), so hiding the list
would protect nothing.
"""
import asyncio
import os
import re

from domain.activities import PHOTO_UPLOADED, record_activity
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from domain.events import organizer_or_rsvped, parse_event_id
from domain.paging import Page
from domain.photos import new_object_key, prepare_photo_async
from domain.times import to_iso, utcnow

# Each photo adds ~250 bytes to the event document (URL twice, uploader, time); 10,000 keep it
# near 2.5 MB, far from MongoDB's 16 MB limit on the document that also holds the RSVPs.
MAX_PHOTOS_PER_EVENT = 10_000
# A cursor is the gallery position of the last (oldest) photo shown; pages hold the photos
# before it. Uploads only ever append, so positions never move and every number is a position.
PHOTO_CURSOR_PATTERN = r"^[0-9]{1,9}$"


class Gallery:
    def __init__(self, store, storage, clock=utcnow):
        self.store = store
        self.storage = storage
        self.clock = clock
        # Decoding a 50 MP photo holds ~200 MB and a core for up to a second. More at once than
        # there are cores is no faster, costs memory, and would take every thread of the default
        # executor from the password checks that share it.
        self._preparing = asyncio.Semaphore(os.cpu_count() or 1)
        self._storage_started = False
        self._starting = asyncio.Lock()
        self._puts_in_flight = 0
        self._closing = False

    # --- uploading -------------------------------------------------------------------------

    async def check_uploader(self, event_text_id, user):
        """Raises NotFound, Forbidden or Conflict unless `user` may add a photo to the event now;
        cheap, so a refused upload can be answered before its body is read."""
        await self._check_uploader(parse_event_id(event_text_id), user["_id"])

    async def _check_uploader(self, event_id, user_id):
        if not await self._finds(_may_add_photo(event_id, user_id)):
            raise await self._refusal(event_id, user_id)

    async def upload(self, event_text_id, user, data):
        """Adds the photo in `data` to the event's gallery; returns {"url": ...}.

        Raises UnsupportedMediaType or InvalidInput for bytes that are not a usable photo,
        NotFound / Forbidden / Conflict as `check_uploader`, and Unavailable or UpstreamFailed
        when the storage fails (then nothing is added to the gallery)."""
        event_id = parse_event_id(event_text_id)
        await self._check_uploader(event_id, user["_id"])  # before the CPU work and the storage
        async with self._preparing:
            photo = await prepare_photo_async(data)
        url = await self._put(new_object_key(str(event_id), photo.extension), photo)
        now = self.clock()
        event = await self.store.events.find_one_and_update(
            _may_add_photo(event_id, user["_id"]),
            {"$push": {"photo_gallery": url, "photos": {"url": url, "uploaded_by": user["_id"], "uploaded_at": now}}},
            projection={"title": 1})
        if event is None:
            raise await self._refusal(event_id, user["_id"])
        await record_activity(self.store, PHOTO_UPLOADED, user, event=event, clock=self.clock)
        return {"url": url}

    async def _refusal(self, event_id, user_id):
        """The error that says why `_may_add_photo` matched nothing."""
        if not await self._finds({"_id": event_id}):
            return NotFound("There is no such event.", code="event_not_found")
        if not await self._finds({"_id": event_id, **organizer_or_rsvped(user_id)}):
            return Forbidden("Only the organizer and people who RSVPed can add photos.", code="rsvp_required")
        return Conflict(f"This event already has {MAX_PHOTOS_PER_EVENT} photos.", code="gallery_full")

    async def _finds(self, query):
        return await self.store.events.find_one(query, {"_id": 1}) is not None

    # --- the storage's life ----------------------------------------------------------------

    async def _put(self, key, photo):
        if self._closing:
            raise Unavailable("The server is shutting down; upload the photo again in a moment.")
        await self._start_storage()
        self._puts_in_flight += 1
        try:
            return await self.storage.put(key, photo.data, photo.content_type)
        finally:
            self._puts_in_flight -= 1
            if self._closing and not self._puts_in_flight:
                await self.storage.close()

    async def _start_storage(self):
        # On first use rather than at start: the S3 client belongs to the event loop that serves.
        async with self._starting:
            if not self._storage_started:
                await self.storage.start()
                self._storage_started = True

    async def close(self):
        """Called at shutdown once requests in flight are done; returns at once. Should an upload
        outlive the grace period, the storage closes when it has been stored."""
        self._closing = True
        if not self._puts_in_flight:
            await self.storage.close()

    # --- listing ---------------------------------------------------------------------------

    async def list_photos(self, event_text_id, limit, cursor=None):
        """A page of the event's photos, newest first: {url, uploaded_by {id, username} or None,
        uploaded_at or None}."""
        event = await self.store.events.find_one(
            {"_id": parse_event_id(event_text_id)}, {"photo_gallery": 1, "photos": 1})
        if event is None:
            raise NotFound("There is no such event.", code="event_not_found")
        gallery = event.get("photo_gallery") or []
        end = len(gallery) if cursor is None else min(len(gallery), photo_position(cursor))
        start = max(0, end - limit)
        known = {entry.get("url"): entry for entry in event.get("photos") or [] if isinstance(entry, dict)}
        shown = [(url, known.get(url, {})) for url in reversed(gallery[start:end])]
        usernames = await self._usernames({entry.get("uploaded_by") for _, entry in shown} - {None})
        items = [_photo_json(url, entry, usernames) for url, entry in shown]
        return Page(items, str(start) if start else None)

    async def _usernames(self, user_ids):
        users = await self.store.users.find({"_id": {"$in": list(user_ids)}}, {"username": 1}).to_list(None)
        return {user["_id"]: user.get("username", "") for user in users}


def _may_add_photo(event_id, user_id):
    """Filter: the event, when user_id organizes it or has RSVPed, and its gallery has room."""
    return {"_id": event_id, **organizer_or_rsvped(user_id),
            f"photo_gallery.{MAX_PHOTOS_PER_EVENT - 1}": {"$exists": False}}


def _photo_json(url, entry, usernames):
    uploader_id = entry.get("uploaded_by")
    return {
        "url": str(url),
        # A deleted uploader keeps their id, with the empty name deleted organizers get too.
        "uploaded_by": {"id": str(uploader_id), "username": usernames.get(uploader_id, "")} if uploader_id else None,
        "uploaded_at": to_iso(entry.get("uploaded_at")),
    }


def photo_position(cursor):
    """The gallery position a cursor points before."""
    if not re.fullmatch(PHOTO_CURSOR_PATTERN, cursor):
        raise InvalidInput("The cursor is not valid; start again without one.", code="invalid_cursor", errors=[
            {"path": "cursor", "message": f"must be a next_cursor of this list ({PHOTO_CURSOR_PATTERN})"}])
    return int(cursor)
