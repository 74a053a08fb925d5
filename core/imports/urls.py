"""Import images from URLs without becoming a proxy into the private network (SSRF).

Every hop (the first URL and each redirect) is resolved once, every address it resolves to must be
public unless the allow-list names the host or its range, and the connection goes to that vetted
address (no second DNS lookup an attacker could answer differently). Bodies are capped in size and
the whole download in time.

"Public" (`address_problem`) is `ipaddress.is_global` plus an explicit deny list, because is_global
passes some ranges that reach private hosts: unspecified, loopback, link-local (cloud metadata),
multicast, private and reserved addresses of both families, IPv6 site-local `fec0::/10` and the
local-use NAT64 prefix `64:ff9b:1::/48` are refused; an IPv6 form that carries an IPv4 address
(IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`,
Teredo `2001::/32`) is refused when the IPv4 address it carries is not public.
"""

from __future__ import annotations

import csv
import hashlib
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
from core.config import get_settings
from core.datasets.dataset import add_images_to_dataset
from core.db import session_scope
from core.errors import InvalidInput
from core.jobs.fanout import done_items, record_items
from core.jobs.queue import enqueue
from core.library.images import clean_folder, clean_tags
from core.library.ingest import ingest_bytes
from core.permissions import requires
from core.storage import get_storage
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


SITE_LOCAL = ipaddress.ip_network("fec0::/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]]:
    """The IPv6 form that carries IPv4 addresses and those addresses (Teredo carries its server and
    its client), or ("", []) for any other address."""
    if address.version != 6:
        return "", []
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.ipv4_mapped:
        return "IPv4-mapped", [address.ipv4_mapped]
    if address in NAT64:
        return "NAT64", [low32]
    if address in IPV4_COMPATIBLE:  # `::` and `::1` are judged before, as unspecified and loopback
        return "IPv4-compatible", [low32]
    if address.sixtofour:
        return "6to4", [address.sixtofour]
    if address.teredo:
        return "Teredo", list(address.teredo)
    return "", []


def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why URL import must not connect to `address`, or None when it is public."""
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local (cloud metadata) address"
    if address.is_multicast:  # is_global is True for global-scope multicast of both families
        return "a multicast address"
    if address.version == 6 and address in SITE_LOCAL:
        return "a site-local address"
    if address.version == 6 and address in NAT64_LOCAL_USE:
        return "a local-use NAT64 address"
    form, carried = embedded_ipv4(address)
    for inner in carried:
        problem = address_problem(inner)
        if problem:
            return f"the {form} form of {inner}, {problem}"
    if form == "IPv4-mapped":  # the connection goes to the IPv4 address itself, judged above
        return None
    if form:  # these forms sit in the reserved ::/8 (or 2001::/23): public when is_global says so
        return None if address.is_global else f"a {form} address that is not globally reachable"
    if address.is_reserved:  # before is_private, which also holds 240.0.0.0/4 and the broadcast address
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a globally reachable address"
    return None


def _allowed(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_list: list[str]) -> bool:
    """The allow-list names the host, or a range holding the address (an IPv4-mapped address: the
    IPv4 address, where the connection goes)."""
    mapped = address.ipv4_mapped if address.version == 6 else None
    candidates = [address, mapped] if mapped else [address]
    for entry in allow_list:
        if entry.lower() == host.lower():
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if any(candidate.version == network.version and candidate in network for candidate in candidates):
            return True
    return False


def vetted_address(host: str, port: int, allow_list: list[str]) -> str:
    """Resolve `host` and return an address safe to connect to, or raise InvalidInput (before any
    connection) when any address it resolves to is not public and not allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(f"cannot resolve host {host!r} ({exc})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for text_address in addresses:
        address = ipaddress.ip_address(text_address.split("%", 1)[0])
        problem = address_problem(address)
        if problem and not _allowed(host, address, allow_list):
            raise InvalidInput(f"refused: {host} resolves to {address}, {problem} (add it to URL_ALLOW_LIST "
                               "to allow)")
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


class _AlreadyApplied(Exception):
    pass


def url_key(url: str) -> str:
    """A URL's cls_job_items key (URLs may be long; keys stay short)."""
    return hashlib.sha256(url.encode()).hexdigest()


def _store(url: str, download: Download, *, actor: User, storage, folder, tags, skip_duplicates: bool,
           dataset_id, job_id):
    """One downloaded image into the library (and dataset), with its job item row when in a chunk."""
    with session_scope() as session:
        result = ingest_bytes(session=session, actor=actor, storage=storage, data=download.data,
                              filename=download.filename, source="url_import", folder=folder, tags=tags,
                              skip_duplicates=skip_duplicates, meta={"url": url[:2000]})
        if dataset_id is not None and result.image_id is not None:
            add_images_to_dataset(session=session, actor=actor, dataset_id=dataset_id, image_ids=[result.image_id])
        if job_id is not None and result.status != "rejected" and not record_items(
                session, job_id, [{"item_key": url_key(url), "image_id": result.image_id,
                                   "outcome": result.status}]):
            raise _AlreadyApplied  # another run of this chunk stored it: this copy is rolled back
    return result


@requires("admin", "importing")
def import_urls(*, actor: User, urls: list[str], folder=None, tags=None, skip_duplicates=True,
                dataset_id: uuid.UUID | None = None, progress: Callable[[int, int], None] | None = None,
                allow_list: list[str] | None = None, timeout_s: float | None = None,
                max_bytes: int | None = None, threads: int = 4, job_id: uuid.UUID | None = None) -> dict:
    """Download and ingest each URL (downloads in a few threads, each image committed on its own);
    returns counts and one result per URL. With `job_id` (a chunk of a fanned-out import,
    core/imports/url_chunks.py) each stored URL's cls_job_items row is written in its image's
    transaction, and a URL that already has one (an earlier run of the chunk) is not fetched again."""
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
    if job_id is not None:
        with session_scope() as session:
            done = done_items(session, job_id, [url_key(url) for url in urls])
        urls = [url for url in urls if url_key(url) not in done]
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="url-import") as pool:
        for url, outcome in zip(urls, pool.map(fetch, urls), strict=True):
            if isinstance(outcome, InvalidInput):
                results.append({"url": url, "status": "rejected", "image_id": None, "duplicate_of": None,
                                "error": str(outcome)})
            else:
                try:
                    result = _store(url, outcome, actor=actor, storage=storage, folder=folder, tags=tags,
                                    skip_duplicates=skip_duplicates, dataset_id=dataset_id, job_id=job_id)
                except _AlreadyApplied:
                    continue
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
    urls, rejected = parse_url_list(text)
    if not urls:
        reasons = "; ".join(r["error"] for r in rejected[:3])
        raise InvalidInput("no valid http(s) URL given" + (f" ({reasons})" if reasons else ""))
    params = {"urls": urls, "folder": clean_folder(folder),
              "tags": clean_tags(tags), "skip_duplicates": skip_duplicates,
              "dataset_id": str(dataset_id) if dataset_id else None, "rejected": rejected}
    return enqueue(actor=actor, kind="url_import", params=params)
