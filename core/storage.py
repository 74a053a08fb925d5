"""Object storage: one interface (put, get, open, exists, delete, copy, url, list_keys) with a
local-folder and an S3 implementation. Keys are relative POSIX paths (`images/<uuid>.jpg`); a key that
would escape the store's root or prefix is refused, so nothing is ever written outside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol
from urllib.parse import quote, urlparse

from core.config import get_settings
from core.errors import ConfigError, InvalidInput, NotFound, ServiceUnavailable


def check_key(key: str) -> str:
    """Refuse keys that are absolute, empty, or climb out with '..'."""
    path = PurePosixPath(key)
    if not key or key.startswith("/") or "\\" in key or any(part in ("..", "") for part in path.parts):
        raise InvalidInput(f"invalid storage key {key!r}")
    if key != str(path):
        raise InvalidInput(f"invalid storage key {key!r}")
    return key


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str | None = None) -> None: ...
    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None: ...
    def get(self, key: str) -> bytes: ...
    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def copy(self, src: str, dst: str) -> None: ...
    def url(self, key: str, expires_s: int = 3600) -> str: ...
    def list_keys(self, prefix: str = "") -> Iterator[str]: ...
    def local_path(self, key: str) -> Path | None: ...


class LocalStorage:
    """Files under a root folder; writes go to a temporary file and are renamed (never half-written)."""

    def __init__(self, root: str | Path, public_url: str | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.public_url = public_url

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no object {key!r} in storage") from None

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise NotFound(f"no object {key!r} in storage") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def copy(self, src: str, dst: str) -> None:
        if not self.exists(src):
            raise NotFound(f"no object {src!r} in storage")
        self.put_file(dst, self._path(src))

    def url(self, key: str, expires_s: int = 3600) -> str:
        if self.public_url:
            return f"{self.public_url.rstrip('/')}/{quote(check_key(key))}"
        return self._path(key).as_uri()

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        if ".." in PurePosixPath(prefix).parts or prefix.startswith("/"):
            raise InvalidInput(f"invalid storage prefix {prefix!r}")
        # Walk only the deepest folder the prefix names, then match the rest as S3 does (by string).
        folder = prefix if prefix.endswith("/") or not prefix else prefix.rpartition("/")[0]
        base = self.root / folder if folder else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.name.startswith(".tmp-") and key.startswith(prefix):
                yield key

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class S3Storage:
    """An S3 bucket (AWS, MinIO, moto) under an optional prefix, through boto3."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, public_url: str | None = None, client=None):
        import boto3  # deferred: the embedded set-up never needs it
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.public_url = public_url
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            # a pool as wide as the parallel fetch of a run's images (core.ml.data.FETCH_THREADS)
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                          max_pool_connections=32),
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _errors(self, exc: Exception, key: str):
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"no object {key!r} in storage")
            return ServiceUnavailable(f"object store error on {key!r}: {code or exc}")
        if isinstance(exc, EndpointConnectionError):
            return ServiceUnavailable(f"STORAGE_URL: cannot reach the object store ({exc})")
        if isinstance(exc, NoCredentialsError):
            return ConfigError("STORAGE_URL: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        return exc

    def _call(self, key: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._errors(exc, key) from exc

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self._call(key, self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        extra = {"ExtraArgs": {"ContentType": content_type}} if content_type else {}
        self._call(key, self.client.upload_file, str(path), self.bucket, self._key(key), **extra)

    def get(self, key: str) -> bytes:
        response = self._call(key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return response["Body"].read()

    def open(self, key: str) -> BinaryIO:
        response = self._call(key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return response["Body"]

    def exists(self, key: str) -> bool:
        try:
            self._call(key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        self._call(key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def copy(self, src: str, dst: str) -> None:
        if not self.exists(src):
            raise NotFound(f"no object {src!r} in storage")
        source = {"Bucket": self.bucket, "Key": self._key(src)}
        self._call(dst, self.client.copy_object, Bucket=self.bucket, Key=self._key(dst), CopySource=source)

    def url(self, key: str, expires_s: int = 3600) -> str:
        if self.public_url:
            return f"{self.public_url.rstrip('/')}/{quote(check_key(key))}"
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        if ".." in PurePosixPath(prefix).parts or prefix.startswith("/"):
            raise InvalidInput(f"invalid storage prefix {prefix!r}")
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self._call(prefix or "/", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full_prefix))):
            for item in page.get("Contents", []):
                yield item["Key"][strip:]

    def local_path(self, key: str) -> Path | None:
        return None

    def ensure_bucket(self) -> None:
        """Create the bucket when missing (first start of MinIO or moto)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._call(self.bucket, self.client.create_bucket, Bucket=self.bucket)


def storage_from_url(url: str, endpoint_url: str | None = None, region: str | None = None,
                     public_url: str | None = None) -> Storage:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(parsed.path, public_url=public_url)
    if parsed.scheme == "s3":
        return S3Storage(parsed.netloc, parsed.path, endpoint_url=endpoint_url, region=region, public_url=public_url)
    raise ConfigError("STORAGE_URL: must be file:///folder or s3://bucket[/prefix]")


_storages: dict[tuple[int, str], Storage] = {}


def get_storage() -> Storage:
    """The configured store, one per process (boto3 clients are not fork-safe)."""
    settings = get_settings()
    cache_key = (os.getpid(), settings.storage_url)
    store = _storages.get(cache_key)
    if store is None:
        store = storage_from_url(settings.storage_url, settings.s3_endpoint_url, settings.s3_region,
                                 settings.storage_public_url)
        _storages[cache_key] = store
    return store


def reset_storage_cache() -> None:
    _storages.clear()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
