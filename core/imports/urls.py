"""Import images from URLs without becoming a proxy into the private network (SSRF).

Every hop (the first URL and each redirect) is resolved once, every address it resolves to must be
public (not private, loopback, link-local/metadata, multicast, reserved) unless the allow-list names
the host or its range, and the connection goes to that vetted address (no second DNS lookup an
attacker could answer differently). Bodies are capped in size and the whole download in time.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import logging
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

from core import limits
from core.errors import InvalidInput
from core.permissions import requires
from core.users import User

log = logging.getLogger(__name__)
MAX_URLS = 10_000
_CHUNK = 64 * 1024


@dataclass
class Download:
    url: str
    data: bytes
    filename: str
    content_type: str | None


def parse_url_list(text: str) -> tuple[list[str], list[dict]]:
    """URLs from pasted text: one per line, or CSV (a column named url/image_url, else the first cell
    that looks like a URL). Returns (urls, per-line errors); repeats are dropped."""
    urls: list[str] = []
    errors: list[dict] = []
    rows = list(csv.reader(io.StringIO(text or "", newline="")))
    url_column = None
    if rows and any(cell.strip().lower() in ("url", "image_url", "link") for cell in rows[0]):
        header = [cell.strip().lower() for cell in rows[0]]
        url_column = next(i for i, name in enumerate(header) if name in ("url", "image_url", "link"))
        rows = rows[1:]
    for row in rows:
        cells = [cell.strip() for cell in row if cell.strip()]
        if not cells:
            continue
        if url_column is not None:
            candidate = row[url_column].strip() if url_column < len(row) else ""
        else:
            candidate = next((c for c in cells if "://" in c), cells[0])
        try:
            check_url_syntax(candidate)
        except InvalidInput as exc:
            errors.append({"url": candidate[:500], "status": "rejected", "image_id": None, "duplicate_of": None,
                           "error": str(exc)})
            continue
        if candidate not in urls:
            urls.append(candidate)
    if len(urls) > MAX_URLS:
        raise InvalidInput(f"{len(urls):,} URLs given; at most {MAX_URLS:,} per import")
    return urls, errors


def check_url_syntax(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(f"not an http(s) URL: {url[:200]!r}")
    if not parts.hostname:
        raise InvalidInput(f"URL has no host: {url[:200]!r}")
    if parts.username or parts.password:
        raise InvalidInput("URLs with a user name or password are refused")


def _allowed(host: str, address: ipaddress._BaseAddress, allow_list: list[str]) -> bool:
    for entry in allow_list:
        if entry.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def vetted_address(host: str, port: int, allow_list: list[str]) -> str:
    """Resolve `host` and return an address safe to connect to, or raise InvalidInput."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(f"cannot resolve host {host!r} ({exc})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for text_address in addresses:
        address = ipaddress.ip_address(text_address.split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        checked = mapped or address
        if not checked.is_global and not _allowed(host, checked, allow_list):
            raise InvalidInput(f"refused: {host} resolves to {checked}, a private, loopback, link-local or "
                               "metadata address (add it to URL_ALLOW_LIST to allow)")
    return addresses[0]


def _filename(url: str, disposition: str | None) -> str:
    if disposition and "filename=" in disposition:
        return disposition.split("filename=", 1)[1].split(";")[0].strip().strip('"') or "download"
    return unquote(PurePosixPath(urlsplit(url).path).name) or "download"


def fetch_url(url: str, *, timeout_s: float, max_bytes: int, allow_list: list[str],
              max_redirects: int = limits.URL_MAX_REDIRECTS) -> Download:
    """Download one image URL under the address, size and time rules; InvalidInput says why not."""
    import urllib3

    deadline = time.monotonic() + timeout_s
    current = url
    for _hop in range(max_redirects + 1):
        check_url_syntax(current)
        parts = urlsplit(current)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = vetted_address(parts.hostname, port, allow_list)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InvalidInput(f"timed out after {timeout_s:g} s")
        timeout = urllib3.Timeout(connect=min(remaining, 10.0), read=remaining)
        pool_class = urllib3.HTTPSConnectionPool if parts.scheme == "https" else urllib3.HTTPConnectionPool
        tls = {"server_hostname": parts.hostname, "assert_hostname": parts.hostname} if parts.scheme == "https" else {}
        pool = pool_class(address, port, timeout=timeout, retries=False, maxsize=1, **tls)
        host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        try:
            response = pool.urlopen("GET", path, headers={"Host": host_header, "User-Agent": "cls-url-import/1",
                                                          "Accept": "image/*"},
                                    redirect=False, preload_content=False, timeout=timeout)
        except urllib3.exceptions.TimeoutError:
            raise InvalidInput(f"timed out after {timeout_s:g} s (no answer)") from None
        except urllib3.exceptions.HTTPError as exc:
            raise InvalidInput(f"could not connect ({_reason(exc)})") from None
        try:
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                if not location:
                    raise InvalidInput(f"redirect ({response.status}) without a Location header")
                current = urljoin(current, location)
                continue
            if response.status != 200:
                raise InvalidInput(f"server answered HTTP {response.status}")
            return Download(url, _read_body(response, max_bytes, deadline, timeout_s),
                            _filename(current, response.headers.get("Content-Disposition")),
                            response.headers.get("Content-Type"))
        finally:
            response.release_conn()
            pool.close()
    raise InvalidInput(f"more than {max_redirects} redirects")


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc).split(": ", 1)[-1][:200]


def _read_body(response, max_bytes: int, deadline: float, timeout_s: float) -> bytes:
    import urllib3

    content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type.startswith("text/") or content_type in ("application/xhtml+xml", "application/json"):
        raise InvalidInput(f"the URL served {content_type}, not an image")
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise InvalidInput(f"the URL serves {int(declared):,} bytes, over the limit of {max_bytes:,}")
    body = bytearray()
    try:
        for chunk in response.stream(_CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise InvalidInput(f"download passed the limit of {max_bytes:,} bytes; stopped")
            if time.monotonic() > deadline:
                raise InvalidInput(f"timed out after {timeout_s:g} s (download too slow)")
    except urllib3.exceptions.TimeoutError:
        raise InvalidInput(f"timed out after {timeout_s:g} s (download stalled)") from None
    except urllib3.exceptions.HTTPError as exc:
        raise InvalidInput(f"download failed ({_reason(exc)})") from None
    return bytes(body)


@requires("admin", "importing")
def import_urls(*, actor: User, urls: list[str], folder=None, tags=None, skip_duplicates=True,
                dataset_id: uuid.UUID | None = None, progress: Callable[[int, int], None] | None = None,
                allow_list: list[str] | None = None, timeout_s: float | None = None,
                max_bytes: int | None = None, threads: int = 4) -> dict:
    """Download and ingest each URL (downloads in a few threads, each image committed on its own);
    returns counts and one result per URL."""
    from core.config import get_settings
    from core.datasets.dataset import add_images_to_dataset
    from core.db import session_scope
    from core.library.images import clean_folder, clean_tags
    from core.library.ingest import ingest_bytes
    from core.storage import get_storage

    settings = get_settings()
    folder, tags = clean_folder(folder), clean_tags(tags)
    if allow_list is None:
        allow_list = [entry.strip() for entry in settings.url_allow_list.split(",") if entry.strip()]
    options = {"timeout_s": timeout_s or settings.url_import_timeout_s,
               "max_bytes": max_bytes or min(settings.url_import_max_bytes, settings.max_upload_bytes),
               "allow_list": allow_list}
    storage = get_storage()

    def fetch(url: str):
        try:
            return fetch_url(url, **options)
        except InvalidInput as exc:
            return exc

    results: list[dict] = []
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="url-import") as pool:
        for url, outcome in zip(urls, pool.map(fetch, urls), strict=True):
            if isinstance(outcome, InvalidInput):
                results.append({"url": url, "status": "rejected", "image_id": None, "duplicate_of": None,
                                "error": str(outcome)})
            else:
                with session_scope() as session:
                    result = ingest_bytes(session=session, actor=actor, storage=storage, data=outcome.data,
                                          filename=outcome.filename, source="url_import",
                                          folder=folder, tags=tags, skip_duplicates=skip_duplicates,
                                          meta={"url": url[:2000]})
                    if dataset_id is not None and result.image_id is not None:
                        add_images_to_dataset(session=session, actor=actor, dataset_id=dataset_id,
                                       image_ids=[result.image_id])
                results.append({"url": url, **result.as_dict()})
            if progress is not None:
                progress(len(results), len(urls))
    counts = {status: sum(1 for r in results if r["status"] == status) for status in ("imported", "duplicate", "rejected")}
    return {**counts, "total": len(urls), "results": results}


@requires("admin", "importing")
def start_url_import(*, actor: User, text: str, folder: str | None = None,
                     tags: list[str] | None = None, skip_duplicates: bool = True,
                     dataset_id: uuid.UUID | None = None) -> uuid.UUID:
    """Parse pasted URLs/CSV and queue the job; bad lines are reported in its result."""
    from core.jobs.queue import enqueue
    from core.library.images import clean_folder, clean_tags

    urls, rejected = parse_url_list(text)
    if not urls:
        reasons = "; ".join(r["error"] for r in rejected[:3])
        raise InvalidInput("no valid http(s) URL given" + (f" ({reasons})" if reasons else ""))
    params = {"urls": urls, "folder": clean_folder(folder),
              "tags": clean_tags(tags), "skip_duplicates": skip_duplicates,
              "dataset_id": str(dataset_id) if dataset_id else None, "rejected": rejected}
    return enqueue(actor=actor, kind="url_import", params=params)
