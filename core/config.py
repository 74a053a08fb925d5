"""Settings: one object read from the environment (and `.env`), validated once.

DATABASE_URL, STORAGE_URL (+ S3_ENDPOINT_URL) and REDIS_URL pick embedded or production parts;
a malformed value raises ConfigError naming the variable, never a traceback at the user. These URLs
may hold a password, so a message names the variable and the URL's scheme, never the URL itself; a
URL is parsed here in full (host and port included) so nothing later fails on it with a traceback.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core import limits
from core.errors import ConfigError

DATA_DIR = Path("data")
SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(value: str) -> str:
    """A URL's scheme for a message (`postgresql`), or "URL" when it has none; never more of it."""
    match = SCHEME.match(value or "")
    return match.group(1) if match else "URL"


def split_url(value: str) -> SplitResult:
    """urlsplit with the host and port checked, so a typo fails here with a message that holds no
    part of the URL (the user:password in it included)."""
    scheme = scheme_of(value)
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError(f"cannot parse this {scheme} URL: its host is malformed") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"cannot parse this {scheme} URL: its port must be a number from 1 to 65535")
    return parts


CREDENTIALS_HINT = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(default=f"sqlite:///{DATA_DIR / 'platform.db'}")
    storage_url: str = Field(default=f"file://{(DATA_DIR / 'storage').resolve()}")
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    redis_url: str | None = None
    # Public base URL under which a CDN/static server exposes storage keys (optional).
    storage_public_url: str | None = None
    # HMAC key for the app's signed links to local storage files (core/file_links.py); one per deployment.
    file_link_secret: str | None = None

    max_upload_bytes: int = limits.MAX_UPLOAD_BYTES
    max_image_pixels: int = limits.MAX_IMAGE_PIXELS
    max_archive_entries: int = limits.MAX_ARCHIVE_ENTRIES
    max_archive_bytes: int = limits.MAX_ARCHIVE_BYTES
    max_archive_ratio: int = limits.MAX_ARCHIVE_RATIO
    url_import_timeout_s: float = limits.URL_IMPORT_TIMEOUT_S
    url_import_max_bytes: int = limits.URL_IMPORT_MAX_BYTES
    # Fan-out jobs (core/jobs/fanout.py): chunk sizes, and how long a silent chunk waits before it is requeued.
    chunk_stale_after_s: float = limits.CHUNK_STALE_AFTER_S
    prediction_chunk_images: int = Field(default=limits.PREDICTION_CHUNK_IMAGES, ge=1)
    import_chunk_members: int = Field(default=limits.IMPORT_CHUNK_MEMBERS, ge=1)
    # Comma-separated hosts or CIDR ranges URL import may reach even if private (e.g. an intranet CDN).
    url_allow_list: str = ""

    # Local user shown when no OIDC login is configured.
    local_user_email: str = "local@localhost"
    # Roles: "alice@x.com=admin,x.com=labeler"; users matching nothing get default_role.
    roles: str = ""
    default_role: str = "admin"

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        scheme = split_url(value).scheme
        if not scheme.startswith(("sqlite", "postgresql", "postgres")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        if scheme in ("postgres", "postgresql"):
            # psycopg 3 is the installed driver; plain postgresql:// would ask for psycopg2.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        try:
            make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(f"cannot parse this {scheme} URL") from None
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str) -> str:
        parsed = split_url(value)
        if parsed.scheme == "file":
            if not parsed.path:
                raise ValueError("file:// needs a folder path, e.g. file:///srv/storage")
        elif parsed.scheme == "s3":
            if not parsed.netloc:
                raise ValueError("s3:// needs a bucket, e.g. s3://bucket/prefix")
            if "@" in parsed.netloc:
                raise ValueError(f"s3:// must not hold credentials (user:password@); {CREDENTIALS_HINT}")
        else:
            raise ValueError("must be file:///folder or s3://bucket[/prefix]")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parsed = split_url(value)
        if parsed.scheme not in ("redis", "rediss", "unix") or "://" not in value:
            raise ValueError("must be redis://host:port/db")
        database = parsed.path.strip("/")
        if parsed.scheme != "unix" and database and not database.isdigit():
            raise ValueError(f"cannot parse this {parsed.scheme} URL: its database must be a number (/0)")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_s3_endpoint_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parsed = split_url(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be http(s)://host[:port], e.g. http://minio:9000")
        if "@" in parsed.netloc:
            # botocore echoes the endpoint in its errors, and S3 signs with the AWS_* keys anyway
            raise ValueError(f"must not hold credentials (user:password@); {CREDENTIALS_HINT}")
        return value

    @field_validator("default_role")
    @classmethod
    def _check_role(cls, value: str) -> str:
        if value not in ("admin", "labeler", "viewer"):
            raise ValueError("must be admin, labeler or viewer")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides) -> Settings:
    """Read settings; turn pydantic's report into one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"{variable}: {first['msg'].removeprefix('Value error, ')}") from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings_cache() -> None:
    """Tests change the environment between cases; forget the cached settings and engines."""
    get_settings.cache_clear()
