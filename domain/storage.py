"""Where prepared photos are kept: a local directory (development) or an S3 bucket.

Both backends have the same surface, `PhotoStorage`: `start()` before the first upload (the
gallery calls it then), `close()` at shutdown, `put(key, data, content_type)` returns the
public URL, `delete(key)` and `delete_all(prefix)` remove photos (a deleted event's: keys are
grouped by event, see `domain.photos.event_key_prefix`); deleting what is not there is no error.
Keys come from `domain.photos.new_object_key`, never from a client.
"""
import os

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import aiohttp
import botocore.exceptions
from aiobotocore.session import get_session
from botocore.config import Config

from domain.errors import NotFound, Unavailable, UpstreamFailed

# Segments of letters, digits, "_", "-" and ".", none starting with "." (so no "..", no
# hidden files), joined by single slashes: nothing that can leave the storage root.
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")

# A dead endpoint must fail an upload within seconds, not hold it for minutes: two attempts,
# each with a short connect and read timeout (S3 answers a 10 MiB PUT well within 5 s).
_S3_CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"mode": "standard", "total_max_attempts": 2},
)
# Those timeouts do not cover every wait: botocore sends "Expect: 100-continue" on PutObject
# and aiohttp waits for the interim response without any bound (an endpoint that accepts
# and stays silent holds the upload forever), nor do they bound a peer that stops reading
# the body. So the whole put has its own deadline.
DEFAULT_UPLOAD_TIMEOUT = 10.0

# Keys are never reused, so an object at a URL never changes; but it can be deleted with its
# event, and a cache may go on serving it for max-age after that. An hour bounds that; a cache
# then revalidates (Last-Modified, ETag), which costs a 304, and learns of a deletion by a 404.
PHOTO_CACHE_CONTROL = "public, max-age=3600"
# S3's DeleteObjects takes at most 1,000 keys, and ListObjectsV2 pages hold at most as many.
_S3_DELETE_BATCH = 1000

_S3_UNREACHABLE = (
    botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, SSLError
    botocore.exceptions.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError
    botocore.exceptions.NoCredentialsError,  # a deployment without AWS credentials: ours to fix, not the client's
    aiohttp.ClientError,
    TimeoutError,  # our own deadline
)


class PhotoStorage(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, key: str, data: bytes, content_type: str) -> str: ...

    async def delete(self, key: str) -> None: ...

    async def delete_all(self, prefix: str) -> None: ...


class LocalStorage:
    """Files under `root_dir`, served by the application at `<public_base_url>/media/<key>`."""

    def __init__(self, root_dir, public_base_url: str):
        self.root_dir = Path(root_dir)
        self._public_base_url = public_base_url.rstrip("/")

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def url_for(self, key: str) -> str:
        return f"{self._public_base_url}/media/{quote(key)}"

    def path_for(self, key: str) -> Path:
        """The file for `key`. Safe on a key taken from a URL: one that could name something
        outside `root_dir` (absolute, "..", hidden, odd characters) raises NotFound."""
        if not _SAFE_KEY.fullmatch(key):
            raise NotFound("No such photo.")
        return self.root_dir / key

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        path = self.path_for(key)
        try:
            await asyncio.get_running_loop().run_in_executor(None, _write_new_file, path, data)
        except OSError as error:
            raise Unavailable("Photo storage is unavailable.") from error
        return self.url_for(key)

    async def delete(self, key: str) -> None:
        await self._in_executor(_delete_file, self.path_for(key))

    async def delete_all(self, prefix: str) -> None:
        """Deletes the files of the directory `prefix` names ("events/<id>/")."""
        await self._in_executor(_delete_files_in, self.path_for(prefix.rstrip("/")))

    @staticmethod
    async def _in_executor(function, path):
        try:
            await asyncio.get_running_loop().run_in_executor(None, function, path)
        except OSError as error:
            raise Unavailable("Photo storage is unavailable.") from error


def _delete_file(path: Path) -> None:
    path.unlink(missing_ok=True)


def _delete_files_in(directory: Path) -> None:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:  # photos only: keys have no deeper levels
        _delete_file(directory / name)
    try:
        directory.rmdir()
    except OSError:
        pass  # a photo stored meanwhile: its upload, refused, deletes it; the empty directory stays


def _write_new_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # "x": a key is used once; never overwrite a photo someone already links to.
    with open(path, "xb") as file:
        file.write(data)


class S3Storage:
    """One S3 (or S3-compatible) bucket, through a single client kept open between start and close.

    With `endpoint_url` (MinIO, moto, R2...) requests and URLs are path-style:
    `<endpoint_url>/<bucket>/<key>`. Objects are not given an ACL; public reads are the
    bucket policy's (or the CDN's behind `public_base_url`) business.
    """

    def __init__(
        self,
        bucket: str,
        region: str,
        endpoint_url: str | None = None,
        public_base_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT,
    ):
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.public_base_url = public_base_url
        self.upload_timeout = upload_timeout
        # Handed to the client only; the repr leaves them out.
        self._credentials = dict(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key
        )
        self._exit_stack = None
        self._client = None

    def __repr__(self):
        return (
            f"S3Storage(bucket={self.bucket!r}, region={self.region!r}, "
            f"endpoint_url={self.endpoint_url!r})"
        )

    async def start(self) -> None:
        config = _S3_CLIENT_CONFIG
        if self.endpoint_url:
            config = config.merge(Config(s3={"addressing_style": "path"}))
        async with contextlib.AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=config,
                    **self._credentials,
                )
            )
            self._exit_stack = stack.pop_all()

    async def close(self) -> None:
        if self._exit_stack is not None:
            await self._exit_stack.aclose()
        self._exit_stack = None
        self._client = None

    def url_for(self, key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{quote(key)}"
        if self.endpoint_url:
            return f"{self.endpoint_url.rstrip('/')}/{self.bucket}/{quote(key)}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{quote(key)}"

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        if self._client is None:
            raise RuntimeError("S3Storage.put called before start()")
        try:
            async with asyncio.timeout(self.upload_timeout):
                await self._client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType=content_type,
                    CacheControl=PHOTO_CACHE_CONTROL,
                )
        except botocore.exceptions.ClientError as error:
            raise UpstreamFailed("Photo storage refused the upload.") from error
        except _S3_UNREACHABLE as error:
            raise Unavailable("Photo storage is unavailable.") from error
        return self.url_for(key)

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Bucket=self.bucket, Key=key)

    async def delete_all(self, prefix: str) -> None:
        """Deletes every object whose key starts with `prefix`, a page of keys at a time."""
        while True:
            # Always the first page: what is listed is deleted before the next listing.
            listed = await self._call("list_objects_v2", Bucket=self.bucket, Prefix=prefix, MaxKeys=_S3_DELETE_BATCH)
            keys = [{"Key": item["Key"]} for item in listed.get("Contents", [])]
            if not keys:
                return
            deleted = await self._call("delete_objects", Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
            if deleted.get("Errors"):
                raise UpstreamFailed("Photo storage refused to delete photos.")

    async def _call(self, operation, **parameters):
        """One S3 request, bounded like a put, its failures translated as a put's are."""
        if self._client is None:
            raise RuntimeError(f"S3Storage.{operation} called before start()")
        try:
            async with asyncio.timeout(self.upload_timeout):
                return await getattr(self._client, operation)(**parameters)
        except botocore.exceptions.ClientError as error:
            raise UpstreamFailed("Photo storage refused the request.") from error
        except _S3_UNREACHABLE as error:
            raise Unavailable("Photo storage is unavailable.") from error


def make_storage(kind: str, **options) -> PhotoStorage:
    """`make_storage("local", root_dir=..., public_base_url=...)`, or
    `make_storage("s3", bucket=..., region=..., ...)` with S3Storage's arguments."""
    backends = {"local": LocalStorage, "s3": S3Storage}
    if kind not in backends:
        raise ValueError(f"unknown photo storage {kind!r}; expected one of {sorted(backends)}")
    return backends[kind](**options)
