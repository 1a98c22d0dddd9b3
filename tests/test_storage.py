"""Photo storage backends against real components: a directory, and moto's S3 server over HTTP."""

import asyncio
import json
import socket
import urllib.request

import boto3
import pytest
from moto.server import ThreadedMotoServer

from domain.errors import NotFound, Unavailable, UpstreamFailed
from domain.storage import LocalStorage, S3Storage, make_storage
from tests.running_server import free_port

REGION = "eu-central-1"
BUCKET = "event-photos"
KEY = "events/65a1f0c2e4b0a1b2c3d4e5f6/0123456789abcdef0123456789abcdef.jpg"
PHOTO = b"\xff\xd8\xff\xe0 pretend these are JPEG bytes"
# Uploads carry no ACL; as in production, the bucket policy makes photos publicly readable.
PUBLIC_READ_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{BUCKET}/*",
        }
    ],
}



@pytest.fixture(autouse=True)
def dummy_aws_credentials(monkeypatch):
    """Whatever the machine has configured, the tests never sign with a real AWS identity."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket_client(moto_endpoint, dummy_aws_credentials):
    client = boto3.client("s3", region_name=REGION, endpoint_url=moto_endpoint)
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(PUBLIC_READ_POLICY))
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)
    client.close()


async def put_once(storage, key=KEY, data=PHOTO, content_type="image/jpeg"):
    await storage.start()
    try:
        return await storage.put(key, data, content_type)
    finally:
        await storage.close()


def test_s3_put_stores_the_object_and_returns_its_endpoint_url(moto_endpoint, bucket_client):
    storage = S3Storage(BUCKET, REGION, endpoint_url=moto_endpoint)

    url = asyncio.run(put_once(storage))

    assert url == f"{moto_endpoint}/{BUCKET}/{KEY}"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == PHOTO
        assert response.headers["Content-Type"] == "image/jpeg"
    stored = bucket_client.get_object(Bucket=BUCKET, Key=KEY)
    assert stored["ContentType"] == "image/jpeg"
    assert stored["Body"].read() == PHOTO


def test_s3_put_returns_the_public_base_url_when_one_is_configured(moto_endpoint, bucket_client):
    storage = S3Storage(
        BUCKET, REGION, endpoint_url=moto_endpoint, public_base_url="https://cdn.example.com/"
    )

    url = asyncio.run(put_once(storage))

    assert url == f"https://cdn.example.com/{KEY}"
    assert bucket_client.head_object(Bucket=BUCKET, Key=KEY)["ContentLength"] == len(PHOTO)


def test_s3_url_without_endpoint_is_the_regional_virtual_hosted_aws_url():
    storage = S3Storage(BUCKET, REGION)

    assert storage.url_for(KEY) == f"https://{BUCKET}.s3.{REGION}.amazonaws.com/{KEY}"


def test_s3_put_into_a_missing_bucket_is_an_upstream_failure(moto_endpoint):
    storage = S3Storage("no-such-bucket", REGION, endpoint_url=moto_endpoint)

    with pytest.raises(UpstreamFailed, match="refused the upload"):
        asyncio.run(put_once(storage))


def test_s3_put_to_an_endpoint_nobody_listens_on_is_unavailable():
    storage = S3Storage(BUCKET, REGION, endpoint_url=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(Unavailable, match="Photo storage is unavailable"):
        asyncio.run(put_once(storage))


def test_s3_put_to_an_endpoint_that_accepts_but_never_answers_is_unavailable():
    # The kernel completes the handshake for the listen backlog; nobody ever reads or answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host, port = silent.getsockname()
        storage = S3Storage(
            BUCKET, REGION, endpoint_url=f"http://{host}:{port}", upload_timeout=0.5
        )

        with pytest.raises(Unavailable, match="Photo storage is unavailable"):
            asyncio.run(put_once(storage))


def test_s3_credentials_passed_explicitly_are_not_shown_in_its_repr():
    storage = S3Storage(BUCKET, REGION, access_key_id="AKIDEXAMPLE", secret_access_key="s3cr3t")

    assert "AKIDEXAMPLE" not in repr(storage)
    assert "s3cr3t" not in repr(storage)


def test_s3_close_without_start_does_nothing():
    asyncio.run(S3Storage(BUCKET, REGION).close())


def test_local_put_writes_the_file_and_returns_its_url_under_media(tmp_path):
    storage = LocalStorage(tmp_path, "http://localhost:8888/")

    url = asyncio.run(put_once(storage))

    assert url == f"http://localhost:8888/media/{KEY}"
    assert (tmp_path / KEY).read_bytes() == PHOTO
    assert storage.path_for(KEY) == tmp_path / KEY


def test_local_put_never_overwrites_an_existing_photo(tmp_path):
    storage = LocalStorage(tmp_path, "http://localhost:8888")
    asyncio.run(put_once(storage))

    with pytest.raises(Unavailable):
        asyncio.run(put_once(storage, data=b"other bytes"))
    assert (tmp_path / KEY).read_bytes() == PHOTO


@pytest.mark.parametrize(
    "key",
    [
        "../outside.jpg",
        "events/../../outside.jpg",
        "/etc/passwd",
        "events//x.jpg",
        ".hidden",
        "",
        "a\x00b",
    ],
)
def test_local_keys_that_could_leave_the_root_name_no_photo(tmp_path, key):
    storage = LocalStorage(tmp_path / "media", "http://localhost:8888")

    with pytest.raises(NotFound):
        storage.path_for(key)
    with pytest.raises(NotFound):
        asyncio.run(storage.put(key, PHOTO, "image/jpeg"))
    assert list(tmp_path.iterdir()) == []


EVENT_KEYS = [f"events/65a1f0c2e4b0a1b2c3d4e5f6/{n:032x}.jpg" for n in range(5)]
KEPT_KEYS = ["events/65a1f0c2e4b0a1b2c3d4e5f7/0.jpg", "events/65a1f0c2e4b0a1b2c3d4e5f6x/0.jpg"]


async def delete_event_keys(storage):
    """Stores EVENT_KEYS and KEPT_KEYS, deletes the first event's folder (twice: idempotent), a
    key that was never stored and one of the kept ones."""
    await storage.start()
    try:
        for key in EVENT_KEYS + KEPT_KEYS:
            await storage.put(key, PHOTO, "image/jpeg")
        for _ in range(2):
            await storage.delete_all("events/65a1f0c2e4b0a1b2c3d4e5f6/")
        await storage.delete("events/65a1f0c2e4b0a1b2c3d4e5f7/never-stored.jpg")
        await storage.delete(KEPT_KEYS[0])
    finally:
        await storage.close()


def test_s3_delete_all_deletes_every_object_of_the_folder_page_by_page_and_nothing_else(
        moto_endpoint, bucket_client, monkeypatch):
    monkeypatch.setattr("domain.storage._S3_DELETE_BATCH", 2)  # three pages of EVENT_KEYS

    asyncio.run(delete_event_keys(S3Storage(BUCKET, REGION, endpoint_url=moto_endpoint)))

    left = [item["Key"] for item in bucket_client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert left == KEPT_KEYS[1:]


def test_s3_photos_may_be_cached_for_an_hour_not_a_year(moto_endpoint, bucket_client):
    asyncio.run(put_once(S3Storage(BUCKET, REGION, endpoint_url=moto_endpoint)))

    assert bucket_client.head_object(Bucket=BUCKET, Key=KEY)["CacheControl"] == "public, max-age=3600"


def test_s3_delete_at_an_endpoint_nobody_listens_on_is_unavailable():
    async def delete_all(storage):
        await storage.start()
        try:
            await storage.delete_all("events/65a1f0c2e4b0a1b2c3d4e5f6/")
        finally:
            await storage.close()

    with pytest.raises(Unavailable, match="Photo storage is unavailable"):
        asyncio.run(delete_all(S3Storage(BUCKET, REGION, endpoint_url=f"http://127.0.0.1:{free_port()}")))


def test_local_delete_all_deletes_the_folders_files_and_nothing_else(tmp_path):
    asyncio.run(delete_event_keys(LocalStorage(tmp_path, "http://localhost:8888")))

    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert left == KEPT_KEYS[1:]
    assert not (tmp_path / "events/65a1f0c2e4b0a1b2c3d4e5f6").exists()


def test_local_delete_all_refuses_a_folder_outside_the_root(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "precious.jpg").write_bytes(PHOTO)
    storage = LocalStorage(tmp_path / "media", "http://localhost:8888")

    for prefix in ("../", "events/../../", "/"):
        with pytest.raises(NotFound):
            asyncio.run(storage.delete_all(prefix))
    assert (tmp_path / "precious.jpg").read_bytes() == PHOTO


def test_make_storage_builds_the_named_backend(tmp_path):
    local = make_storage("local", root_dir=tmp_path, public_base_url="http://x")
    assert isinstance(local, LocalStorage)
    assert isinstance(make_storage("s3", bucket=BUCKET, region=REGION), S3Storage)
    with pytest.raises(ValueError):
        make_storage("ftp")
