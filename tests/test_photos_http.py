"""Event photos through HTTP with the local storage: upload, gallery, and the /media/ route."""
import io
import json
import pathlib

import pytest
import tornado.httpclient
from PIL import Image

import domain.gallery
from domain.activities import PHOTO_UPLOADED
from domain.gallery import MAX_PHOTOS_PER_EVENT
from handlers.photos import MULTIPART_OVERHEAD_BYTES
from tests.conftest import make_settings
from tests.event_builders import publish
from tests.photo_uploads import carries_gps, jpeg_with_gps, multipart, png, upload

pytestmark = pytest.mark.gen_test

SMALL_LIMIT = 20_000


@pytest.fixture
def settings(request, tmp_path, base_url):
    """Photos in a directory of this test, at URLs of the server under test, so they can be fetched."""
    overrides = {"media_root": str(tmp_path / "media"), "public_base_url": base_url}
    for marker in reversed(list(request.node.iter_markers("settings"))):
        overrides.update(marker.kwargs)
    return make_settings(**overrides)


async def event_with_organizer(api):
    organizer, token = await api.register(role="organizer")
    return await publish(api, token), organizer, token


async def stored_photos(services, event):
    """The event's gallery as stored, newest first."""
    photos, start = await services.store.events.photos(event["id"], None, 100)
    assert start == 0
    return photos


def stored_files(settings):
    return [path for path in pathlib.Path(settings.media_root).rglob("*") if path.is_file()]


async def fetch(http_client, url, **options):
    return await http_client.fetch(url, raise_error=False, **options)


async def test_the_organizer_uploads_a_photo_that_is_served_without_its_gps_at_the_returned_url(
        api, http_client, base_url):
    event, _, token = await event_with_organizer(api)

    reply = await upload(api, event["id"], token, jpeg_with_gps())

    assert reply.status == 201, reply
    url = reply.data["url"]
    assert url.startswith(f"{base_url}/media/events/{event['id']}/") and url.endswith(".jpg")
    served = await fetch(http_client, url)
    assert served.code == 200
    assert served.headers["Content-Type"] == "image/jpeg"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert Image.open(io.BytesIO(served.body)).size == (64, 48)
    assert not carries_gps(served.body)


async def test_an_rsvped_attendee_uploads_a_photo_and_the_event_counts_it(api, services):
    event, _, _ = await event_with_organizer(api)
    attendee, token = await api.register()
    await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=token)
    watcher, watcher_token = await api.register()  # whose feed shows the attendee's activities
    assert (await api.call("POST", f"/api/v1/users/{attendee['id']}/follow", token=watcher_token)).status == 200

    reply = await upload(api, event["id"], token, png(), filename="x.jpg", content_type="image/jpeg")

    assert reply.status == 201 and reply.data["url"].endswith(".png")
    shown = await api.call("GET", f"/api/v1/events/{event['id']}", token=token)
    assert shown.data["photo_count"] == 1
    [stored] = await stored_photos(services, event)
    assert (stored["url"], stored["uploaded_by"]) == (reply.data["url"], attendee["id"])
    [activity] = await services.store.activities.feed(watcher["id"], [PHOTO_UPLOADED], None, 10)
    assert activity["actor_id"] == attendee["id"] and activity["event_id"] == event["id"]
    assert activity["summary"] == f"{attendee['username']} shared a photo from {event['title']}"


async def test_anyone_else_is_refused_with_403_and_nothing_is_stored(api, services, settings):
    event, _, _ = await event_with_organizer(api)
    _, stranger = await api.register()
    _, other_organizer = await api.register(role="organizer")

    for token in (stranger, other_organizer):
        reply = await upload(api, event["id"], token)
        assert reply.status == 403 and reply.json["code"] == "rsvp_required"
    assert await stored_photos(services, event) == []
    assert stored_files(settings) == []


async def test_a_cancelled_rsvp_no_longer_allows_uploads(api):
    event, _, _ = await event_with_organizer(api)
    _, token = await api.register()
    await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=token)
    await api.call("DELETE", f"/api/v1/events/{event['id']}/rsvp", token=token)

    assert (await upload(api, event["id"], token)).status == 403


@pytest.mark.parametrize("event_id", ["65a1f0c2e4b0a1b2c3d4e5f6", "not-an-id"])
async def test_an_unknown_or_malformed_event_is_404_for_upload_and_list(api, event_id):
    _, token = await api.register(role="organizer")

    uploaded = await upload(api, event_id, token)
    listed = await api.call("GET", f"/api/v1/events/{event_id}/photos", token=token)

    assert uploaded.status == 404 and uploaded.json["code"] == "event_not_found"
    assert listed.status == 404 and listed.json["code"] == "event_not_found"


async def test_a_jpg_that_is_really_text_is_415_and_not_stored(api, services, settings):
    event, _, token = await event_with_organizer(api)

    reply = await upload(api, event["id"], token, b"I am a text file, honest.", filename="beach.jpg")

    assert reply.status == 415 and reply.json["code"] == "unsupported_media_type"
    assert await stored_photos(services, event) == []
    assert stored_files(settings) == []


async def test_a_body_that_is_not_multipart_is_415(api):
    event, _, token = await event_with_organizer(api)

    reply = await api.call("POST", f"/api/v1/events/{event['id']}/photos", {"photo": "aGVsbG8="}, token=token)

    assert reply.status == 415 and reply.json["code"] == "multipart_required"


async def test_a_multipart_body_without_the_photo_field_is_400(api):
    event, _, token = await event_with_organizer(api)
    body, headers = multipart(jpeg_with_gps(), field="picture")

    reply = await api.call("POST", f"/api/v1/events/{event['id']}/photos", token=token, raw=body, headers=headers)

    assert reply.status == 400 and reply.json["code"] == "photo_required"


async def test_a_malformed_multipart_body_is_400(api):
    event, _, token = await event_with_organizer(api)

    reply = await api.call("POST", f"/api/v1/events/{event['id']}/photos", token=token, raw=b"--x\r\nnonsense",
                           headers={"Content-Type": "multipart/form-data; boundary=x"})

    assert reply.status == 400 and reply.json["code"] == "malformed_multipart"


def test_a_gallery_holds_ten_thousand_photos():
    assert MAX_PHOTOS_PER_EVENT == 10_000


async def test_a_full_gallery_refuses_more_photos_with_409(api, monkeypatch):
    # A cap of three stands in for the 10,000: filling the real one would take 10,000 uploads.
    monkeypatch.setattr(domain.gallery, "MAX_PHOTOS_PER_EVENT", 3)
    event, _, token = await event_with_organizer(api)
    for _ in range(3):
        assert (await upload(api, event["id"], token, png())).status == 201

    reply = await upload(api, event["id"], token)

    assert reply.status == 409 and reply.json["code"] == "gallery_full"


@pytest.mark.settings(photo_max_bytes=SMALL_LIMIT)
async def test_a_body_declared_over_the_limit_is_413_before_it_is_read(api):
    event, _, token = await event_with_organizer(api)

    reply = await upload(api, event["id"], token, b"\xff\xd8\xff" + bytes(SMALL_LIMIT + MULTIPART_OVERHEAD_BYTES))

    assert reply.status == 413 and reply.json["code"] == "too_large"


@pytest.mark.settings(photo_max_bytes=SMALL_LIMIT)
async def test_a_chunked_body_over_the_limit_is_413(api, http_client, base_url):
    event, _, token = await event_with_organizer(api)
    body, headers = multipart(b"\xff\xd8\xff" + bytes(SMALL_LIMIT + MULTIPART_OVERHEAD_BYTES))

    async def producer(write):
        for start in range(0, len(body), 8192):
            await write(body[start:start + 8192])

    request = tornado.httpclient.HTTPRequest(
        f"{base_url}/api/v1/events/{event['id']}/photos", method="POST", body_producer=producer,
        headers={**headers, "Authorization": f"Bearer {token}", "Transfer-Encoding": "chunked"})
    response = await http_client.fetch(request, raise_error=False)

    assert response.code == 413 and json.loads(response.body)["code"] == "too_large"


@pytest.mark.settings(photo_max_bytes=SMALL_LIMIT)
async def test_a_photo_over_the_limit_is_413_even_when_the_framing_fits(api, services):
    event, _, token = await event_with_organizer(api)

    reply = await upload(api, event["id"], token, b"\xff\xd8\xff" + bytes(SMALL_LIMIT))

    assert reply.status == 413 and reply.json["code"] == "too_large"
    assert await stored_photos(services, event) == []


async def test_the_gallery_lists_photos_newest_first_with_their_uploaders(api, services):
    event, organizer, organizer_token = await event_with_organizer(api)
    attendee, attendee_token = await api.register()
    await api.call("POST", f"/api/v1/events/{event['id']}/rsvp", token=attendee_token)
    first = (await upload(api, event["id"], organizer_token)).data["url"]
    second = (await upload(api, event["id"], attendee_token, png())).data["url"]
    _, reader = await api.register()

    reply = await api.call("GET", f"/api/v1/events/{event['id']}/photos", token=reader)

    assert reply.status == 200 and reply.data["next_cursor"] is None
    assert [item["url"] for item in reply.data["items"]] == [second, first]
    assert [item["uploaded_by"] for item in reply.data["items"]] == [
        {"id": attendee["id"], "username": attendee["username"]},
        {"id": organizer["id"], "username": organizer["username"]}]
    assert all(item["uploaded_at"].endswith("Z") for item in reply.data["items"])


async def test_the_gallery_pages_stay_stable_while_photos_are_added(api):
    event, _, token = await event_with_organizer(api)
    urls = [(await upload(api, event["id"], token, png())).data["url"] for _ in range(5)]
    path = f"/api/v1/events/{event['id']}/photos"

    first = await api.call("GET", f"{path}?limit=2", token=token)
    await upload(api, event["id"], token, png())
    second = await api.call("GET", f"{path}?limit=2&cursor={first.data['next_cursor']}", token=token)
    last = await api.call("GET", f"{path}?limit=2&cursor={second.data['next_cursor']}", token=token)

    shown = [item["url"] for page in (first, second, last) for item in page.data["items"]]
    assert shown == urls[::-1]
    assert last.data["next_cursor"] is None


async def test_a_malformed_gallery_cursor_is_400(api):
    event, _, token = await event_with_organizer(api)

    reply = await api.call("GET", f"/api/v1/events/{event['id']}/photos?cursor=abc", token=token)

    assert reply.status == 400 and reply.json["code"] == "invalid_cursor"


async def test_the_gallery_needs_a_token(api):
    event, _, _ = await event_with_organizer(api)

    assert (await api.call("GET", f"/api/v1/events/{event['id']}/photos")).status == 401


@pytest.mark.parametrize("path", [
    "/media/..%2Foutside.jpg",
    "/media/events/..%2F..%2Foutside.jpg",
    "/media/%2Fetc%2Fpasswd.jpg",
    "/media/.hidden.jpg",
    "/media/notes.txt",
    "/media/events/65a1f0c2e4b0a1b2c3d4e5f6/0123456789abcdef0123456789abcdef.jpg",
])
async def test_the_media_route_serves_only_photos_inside_its_root(http_client, base_url, settings, path):
    root = pathlib.Path(settings.media_root)
    root.mkdir(parents=True)
    (root.parent / "outside.jpg").write_bytes(jpeg_with_gps())
    (root / ".hidden.jpg").write_bytes(jpeg_with_gps())
    (root / "notes.txt").write_text("private notes")

    response = await fetch(http_client, base_url + path)

    assert response.code == 404
    assert json.loads(response.body)["code"] == "not_found"
    assert response.headers["Content-Type"].startswith("application/json")
