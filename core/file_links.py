"""Signed, expiring links to local storage files (images and thumbnails), for the app's own file route.

With local storage the app serves image files itself (serve.py's `/files/<key>` route). A link is
`files/<key>?exp=<unix time>&sig=<HMAC-SHA256>`: only a page that was allowed to show the image (a
signed-in session, when login is configured) hands one out, and it stops working at `exp`. Links are
stable within a window (`exp` is the end of the next window, never less than one window away), so the
browser's cache and prefetch keep working across page runs (measured: halves labeling latency).
Why hand-written: the route is ours and needs one HMAC; itsdangerous would add a dependency for ten lines.

The key comes from FILE_LINK_SECRET (set the same value on every app replica behind one address), or
else from a random secret kept in the data folder (created once, owner-only).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from core.config import DATA_DIR, get_settings
from core.models import utcnow

WINDOW_S = 6 * 3600
"""Links stay the same for a window; one is valid from one to two windows after it is made."""
SERVED_PREFIXES = ("images", "thumbs")
"""Storage keys under these folders are images people may see; nothing else is ever served."""

_secret_cache: dict[str, bytes] = {}
route_mounted = False
"""Set by serve.py: this process serves the links (plain `streamlit run app.py` does not)."""


def _secret() -> bytes:
    configured = get_settings().file_link_secret
    if configured:
        return configured.encode()
    path = (DATA_DIR / "file-link-secret").resolve()
    cached = _secret_cache.get(str(path))
    if cached:
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # create once, owner-only; a concurrent creator's file wins
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    except FileExistsError:
        pass
    value = Path(path).read_text().strip().encode()
    if not value:
        raise RuntimeError(f"{path} is empty: delete it (a new secret is made) or set FILE_LINK_SECRET")
    _secret_cache[str(path)] = value
    return value


def _signature(key: str, expires: int) -> str:
    return hmac.new(_secret(), f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def is_served(key: str) -> bool:
    return key.split("/", 1)[0] in SERVED_PREFIXES and "/" in key


def signed_path(key: str, *, now: float | None = None) -> str:
    """`files/<key>?exp=..&sig=..` (relative to the app's root URL) for a storage key."""
    if not is_served(key):
        raise ValueError(f"no browser link for storage key {key!r}")
    now = time.time() if now is None else now
    expires = (int(now) // WINDOW_S + 2) * WINDOW_S
    return f"files/{quote(key)}?exp={expires}&sig={_signature(key, expires)}"


def check(key: str, expires: str | None, signature: str | None, *, now: float | None = None) -> str | None:
    """None when the link is good; else why it is refused (for the 403 response)."""
    if not is_served(key):
        return "not a served file"
    if not expires or not signature or not expires.isdigit():
        return "unsigned link"
    now = time.time() if now is None else now
    if int(expires) < now:
        return "expired link"
    if int(expires) > now + 2 * WINDOW_S:
        return "bad signature"  # a link the app never makes
    if not hmac.compare_digest(_signature(key, int(expires)), signature):
        return "bad signature"
    return None


_url_cache: dict[str, tuple[str, datetime]] = {}


def stable_url(storage, key: str, *, expires_s: int = 6 * 3600) -> str | None:
    """An http(s) URL for a storage key that stays the same across page runs, so the browser's
    cache and prefetch work: the public URL, or a presigned S3 URL reused until half its life is
    gone (a new signature per run would defeat the cache). None for local storage without a
    public URL: the page serves those itself."""
    now = utcnow()
    cached = _url_cache.get(key)
    if cached and cached[1] > now:
        return cached[0]
    url = storage.url(key, expires_s=expires_s)
    if not url.startswith(("http://", "https://")):
        return None
    if len(_url_cache) > 20000:
        _url_cache.clear()
    _url_cache[key] = (url, now + timedelta(seconds=expires_s // 2))
    return url
