"""Event photos through HTTP with the S3 storage: the app talks to moto's S3 server over real HTTP."""
import pytest

from domain.activities import PHOTO_UPLOADED
from tests.conftest import make_settings
from tests.event_builders import publish
from tests.photo_uploads import carries_gps, jpeg_with_gps, upload
# Fixtures of the storage tests: dummy AWS credentials, moto's server, a public-read bucket.
from tests.running_server import free_port
from tests.test_storage import BUCKET, REGION, bucket_client, dummy_aws_credentials, moto_endpoint  # noqa: F401

pytestmark = [pytest.mark.gen_test,
              pytest.mark.settings(storage_backend="s3", cloud_storage_bucket=BUCKET, s3_region=REGION)]

NOBODY_LISTENS = f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def settings(request, moto_endpoint):  # noqa: F811
    """The settings markers, on top of moto's address (a test's marker may name another endpoint)."""
    overrides = {"s3_endpoint_url": moto_endpoint}
    for marker in reversed(list(request.node.iter_markers("settings"))):
        overrides.update(marker.kwargs)
    return make_settings(**overrides)


@pytest.fixture(autouse=True)
def close_storage(services, io_loop):
    """What the server's shutdown hooks do: the S3 client's connections are closed."""
    yield
    io_loop.run_sync(services.gallery.close)


async def organizer_event(api):
    _, token = await api.register(role="organizer")
    return await publish(api, token), token


async def stored_gallery(services, event):
    """(photos newest first, position of the oldest) as stored."""
    return await services.store.events.photos(event["id"], None, 10)


async def test_an_upload_is_stored_in_the_bucket_without_its_gps(api, http_client, moto_endpoint,  # noqa: F811
                                                                 bucket_client):  # noqa: F811
    event, token = await organizer_event(api)

    reply = await upload(api, event["id"], token, jpeg_with_gps())

    assert reply.status == 201, reply
    url = reply.data["url"]
    assert url.startswith(f"{moto_endpoint}/{BUCKET}/events/{event['id']}/") and url.endswith(".jpg")
    served = await http_client.fetch(url)
    assert served.headers["Content-Type"] == "image/jpeg"
    assert not carries_gps(served.body)
    listed = await api.call("GET", f"/api/v1/events/{event['id']}/photos", token=token)
    assert [item["url"] for item in listed.data["items"]] == [url]


@pytest.mark.settings(s3_public_base_url="https://photos.example.com")
async def test_the_url_is_under_the_public_base_url_when_one_is_set(api, bucket_client):  # noqa: F811
    event, token = await organizer_event(api)

    reply = await upload(api, event["id"], token)

    key = reply.data["url"].removeprefix("https://photos.example.com/")
    assert key.startswith(f"events/{event['id']}/")
    assert bucket_client.head_object(Bucket=BUCKET, Key=key)["ContentType"] == "image/jpeg"


@pytest.mark.settings(s3_endpoint_url=NOBODY_LISTENS)
async def test_storage_that_cannot_be_reached_is_503_and_adds_nothing_to_the_gallery(api, services):
    event, token = await organizer_event(api)
    watcher, watcher_token = await api.register()  # whose feed shows the organizer's activities
    assert (await api.call("POST", f"/api/v1/users/{event['organizer']['id']}/follow",
                           token=watcher_token)).status == 200

    reply = await upload(api, event["id"], token)

    assert reply.status == 503 and reply.json["code"] == "unavailable"
    assert await stored_gallery(services, event) == ([], 0)
    assert (await services.store.events.get(event["id"]))["photo_count"] == 0
    assert await services.store.activities.feed(watcher["id"], [PHOTO_UPLOADED], None, 10) == []


@pytest.mark.settings(cloud_storage_bucket="no-such-bucket")
async def test_storage_that_refuses_the_upload_is_502_and_adds_nothing_to_the_gallery(api, services):
    event, token = await organizer_event(api)

    reply = await upload(api, event["id"], token)

    assert reply.status == 502 and reply.json["code"] == "upstream_failed"
    assert await stored_gallery(services, event) == ([], 0)


async def test_the_media_route_serves_nothing_with_s3_storage(http_client, base_url):
    response = await http_client.fetch(f"{base_url}/media/events/x/y.jpg", raise_error=False)

    assert response.code == 404


async def test_deleting_the_event_deletes_its_photos_from_the_bucket(api, http_client, bucket_client):  # noqa: F811
    event, token = await organizer_event(api)
    other, other_token = await organizer_event(api)
    urls = [(await upload(api, event["id"], token)).data["url"] for _ in range(2)]
    kept = (await upload(api, other["id"], other_token)).data["url"]

    assert (await api.call("DELETE", f"/api/v1/events/{event['id']}", token=token)).status == 200

    for url in urls:
        assert (await http_client.fetch(url, raise_error=False)).code in (403, 404)
    assert (await http_client.fetch(kept)).code == 200
    left = [item["Key"] for item in bucket_client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert all(key.startswith(f"events/{other['id']}/") for key in left) and len(left) == 1


@pytest.mark.settings(cloud_storage_bucket="no-such-bucket")
async def test_the_event_is_deleted_even_when_its_photos_cannot_be(api, services, caplog):
    event, token = await organizer_event(api)

    reply = await api.call("DELETE", f"/api/v1/events/{event['id']}", token=token)

    assert reply.status == 200
    assert await services.store.events.get(event["id"]) is None
    assert f"cleaning up after deleting event {event['id']} failed" in caplog.text
