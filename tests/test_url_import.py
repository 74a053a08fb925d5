"""URL import (core/imports/urls.py, jobs/imports.py): SSRF rules, size and time caps, per-URL results."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from core.errors import InvalidInput
from core.imports.urls import fetch_url, import_urls, parse_url_list, start_url_import, vetted_address
from core.jobs.rows import get_job
from core.models import ClsImage
from tests.factories import ADMIN, drawn_image_bytes

IMAGE = drawn_image_bytes(7, (64, 48), "PNG")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's name)
        routes = {
            "/photo%20one.png": lambda: self._send(200, IMAGE, {"Content-Type": "image/png"}),
            "/page.html": lambda: self._send(200, b"<html><body>hi</body></html>", {"Content-Type": "text/html"}),
            "/huge": lambda: self._send(200, b"", {"Content-Type": "image/jpeg", "Content-Length": str(2 * 1024**3)}),
            "/endless": self._endless,
            "/to-metadata": lambda: self._send(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"}),
            "/to-private": lambda: self._send(307, b"", {"Location": "http://10.0.0.7/x.png"}),
            "/to-image": lambda: self._send(301, b"", {"Location": "/photo%20one.png"}),
            "/loop": lambda: self._send(302, b"", {"Location": "/loop"}),
            "/text.jpg": lambda: self._send(200, b"just text", {"Content-Type": "image/jpeg"}),
        }
        routes.get(self.path, lambda: self._send(404, b"missing"))()

    def _endless(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0" * 65536)
        except OSError:
            pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def silent_port():
    """Accepts connections (kernel backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


ALLOW_LOCAL = ["127.0.0.1"]
REFUSED = {
    "loopback": ("http://127.0.0.1:9/x.png", [], "loopback"),
    "localhost_name": ("http://localhost:9/x.png", [], "resolves to 127.0.0.1"),
    "ipv6_loopback": ("http://[::1]:9/x.png", [], "a loopback address"),
    "private_10": ("http://10.1.2.3/x.png", [], "10.1.2.3"),
    "metadata": ("http://169.254.169.254/latest/meta-data/", [], "metadata"),
    "mapped_v6": ("http://[::ffff:192.168.0.1]/x.png", [], "192.168.0.1"),
    "redirect_to_metadata": ("{server}/to-metadata", ALLOW_LOCAL, "169.254.169.254"),
    "redirect_to_private": ("{server}/to-private", ALLOW_LOCAL, "10.0.0.7"),
    "redirect_loop": ("{server}/loop", ALLOW_LOCAL, "redirects"),
    "html": ("{server}/page.html", ALLOW_LOCAL, "text/html"),
    "two_gigabytes": ("{server}/huge", ALLOW_LOCAL, "2,147,483,648 bytes"),
    "endless_body": ("{server}/endless", ALLOW_LOCAL, "limit of 300,000"),
    "not_found": ("{server}/nothing", ALLOW_LOCAL, "HTTP 404"),
    "text_as_jpeg": ("{server}/text.jpg", ALLOW_LOCAL, "not an image"),
    "never_answers": ("http://127.0.0.1:{silent}/x.png", ALLOW_LOCAL, "timed out"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_url_is_refused_and_the_rest_imported(stack, server, silent_port, case):
    template, allow, reason = REFUSED[case]
    bad = template.format(server=server, silent=silent_port)
    summary = import_urls(actor=ADMIN, urls=[bad, f"{server}/photo%20one.png"], allow_list=allow, timeout_s=1.5,
                          max_bytes=300_000)
    bad_result, good_result = summary["results"]
    assert bad_result["status"] == "rejected" and reason in bad_result["error"], bad_result
    if allow:
        assert good_result["status"] == "imported", good_result
        expected_rows = 1
    else:  # the good URL is on loopback too, refused without an allow-list
        assert good_result["status"] == "rejected"
        expected_rows = 0
    with stack.session() as session:
        rows = session.execute(select(ClsImage.storage_path, ClsImage.thumbnail_path)).all()
    assert len(rows) == expected_rows
    assert set(stack.storage.list_keys("images/")) | set(stack.storage.list_keys("thumbs/")) == {
        key for row in rows for key in row}


def test_good_url_with_redirect_imports_with_its_name(stack, server):
    summary = import_urls(actor=ADMIN, urls=[f"{server}/to-image"], allow_list=ALLOW_LOCAL, folder="web", tags=["u"])
    assert (summary["imported"], summary["results"][0]["filename"]) == (1, "photo one.png")
    again = import_urls(actor=ADMIN, urls=[f"{server}/photo%20one.png"], allow_list=ALLOW_LOCAL)
    assert again["duplicate"] == 1
    with stack.session() as session:
        row = session.scalars(select(ClsImage)).one()
        assert (row.source, row.folder, row.tags, row.meta["url"]) == ("url_import", "web", ["u"], f"{server}/to-image")


def test_allow_list_by_range():
    assert vetted_address("127.0.0.1", 80, ["127.0.0.0/8"]) == "127.0.0.1"
    with pytest.raises(InvalidInput):
        vetted_address("127.0.0.1", 80, ["10.0.0.0/8", "example.com"])


def test_fetch_refuses_credentials_and_odd_schemes():
    for url in ("ftp://example.com/x.png", "file:///etc/passwd", "http://user:pw@example.com/x.png", "http:///x"):
        with pytest.raises(InvalidInput):
            fetch_url(url, timeout_s=1, max_bytes=10, allow_list=[])


def test_parse_lines_and_csv():
    urls, errors = parse_url_list("http://a.example/1.jpg\n\nftp://b/2.jpg\nhttp://a.example/1.jpg\nnot a url\n")
    assert urls == ["http://a.example/1.jpg"] and len(errors) == 2
    urls, errors = parse_url_list("name,url\ncat,https://c.example/cat.png\ndog,\n")
    assert urls == ["https://c.example/cat.png"] and len(errors) == 1


def test_url_import_job_on_the_queue(stack, server, monkeypatch):
    from core.config import reset_settings_cache

    monkeypatch.setenv("URL_ALLOW_LIST", "127.0.0.1")
    reset_settings_cache()
    text = f"{server}/photo%20one.png\nhttp://169.254.169.254/latest/\nftp://nope/x.png\n"
    job_id = start_url_import(actor=ADMIN, text=text, folder="jobbed")
    stack.drain_jobs()
    with stack.session() as session:
        job = get_job(session=session, job_id=job_id)
        assert job.status == "succeeded", job.error
        assert (job.result["imported"], job.result["rejected"], job.result["total"]) == (1, 2, 3)
        assert job.progress_done == job.progress_total == 2
    with pytest.raises(InvalidInput, match="no valid"):
        start_url_import(actor=ADMIN, text="gopher://x\n")


def test_url_import_in_chunks_counts_each_url_once_even_when_a_chunk_runs_again(embedded_stack, server, monkeypatch):
    from sqlalchemy import func, select

    from core.config import reset_settings_cache
    from core.imports.url_chunks import import_url_chunk
    from core.models import ClsJob, ClsJobItem

    monkeypatch.setenv("URL_ALLOW_LIST", "127.0.0.1")
    monkeypatch.setenv("IMPORT_CHUNK_MEMBERS", "1")
    reset_settings_cache()
    urls = [f"{server}/photo%20one.png", f"{server}/to-image", f"{server}/page.html"]
    job_id = start_url_import(actor=ADMIN, text="\n".join(urls))
    embedded_stack.drain_jobs()
    with embedded_stack.session() as session:
        job = get_job(session=session, job_id=job_id)
        assert job.status == "succeeded", job.error
        assert (job.result["imported"], job.result["duplicate"], job.result["rejected"], job.result["parts"]) == (1, 1, 1, 3)
        assert [r["url"] for r in job.result["results"]] == urls
        assert session.scalar(select(func.count()).where(ClsJob.parent_id == job_id)) == 3
    again = import_url_chunk(actor=ADMIN, job_id=job_id, urls=urls[:2])  # a chunk whose worker died, run again
    assert again["rejected"] == []
    with embedded_stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsImage)) == 1
        assert session.scalar(select(func.count()).where(ClsJobItem.job_id == job_id)) == 2
