"""Storage files are served only through links the app signed, and every response says nosniff.

The server is the real one (`streamlit run serve.py`, tests.plugins.browser.start_app) with the demo
loaded; the Images page is opened in Chromium and the links it was handed are fetched again by hand.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlparse

import pytest

from core import file_links
from core.config import reset_settings_cache
from tests.hostile.tally import TALLY
from tests.plugins.browser import ROOT, start_app, stop_app, wait_for_app

SECRET = "test-file-link-secret"


@pytest.fixture
def link_secret(monkeypatch):
    monkeypatch.setenv("FILE_LINK_SECRET", SECRET)
    reset_settings_cache()
    yield
    reset_settings_cache()


def test_links_are_stable_within_a_window_and_refused_when_changed(link_secret):
    key = "thumbs/ab/abcdef.webp"
    now = 1_800_000_000
    link = file_links.signed_path(key, now=now)
    assert link == file_links.signed_path(key, now=now + 60)  # the browser cache keeps working
    query = parse_qs(urlparse(link).query)
    exp, sig = query["exp"][0], query["sig"][0]
    assert file_links.WINDOW_S <= int(exp) - now <= 2 * file_links.WINDOW_S
    assert file_links.check(key, exp, sig, now=now) is None
    refusals = {
        "another key": file_links.check("thumbs/ab/other.webp", exp, sig, now=now),
        "changed signature": file_links.check(key, exp, sig[:-1] + ("0" if sig[-1] != "0" else "1"), now=now),
        "later expiry": file_links.check(key, str(int(exp) + 1), sig, now=now),
        "expired": file_links.check(key, exp, sig, now=int(exp) + 1),
        "no signature": file_links.check(key, exp, None, now=now),
        "no expiry": file_links.check(key, None, sig, now=now),
        "not a number": file_links.check(key, "1e12", sig, now=now),
        "far future": file_links.check(key, str(now + 10 * file_links.WINDOW_S), sig, now=now),
        "database file": file_links.check("app.db", exp, sig, now=now),
    }
    TALLY.tried += len(refusals)
    assert all(refusals.values()), refusals
    with pytest.raises(ValueError):
        file_links.signed_path("exports/x.zip")  # only images and thumbnails ever get a link


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def test_server_serves_only_signed_links_with_nosniff(chromium_browser, tmp_path, monkeypatch):
    server = start_app(tmp_path, extra_env={"FILE_LINK_SECRET": SECRET})
    try:
        subprocess.run([sys.executable, "-m", "core", "demo", "--products", "4"], cwd=ROOT, env=server.env,
                       check=True, capture_output=True, timeout=300)
        page = chromium_browser.new_page()
        page.goto(f"{server.url}/images")
        wait_for_app(page)
        page.wait_for_selector("img[src*='/files/']", timeout=30000)
        sources = page.eval_on_selector_all("img[src*='/files/']", "els => els.map(e => e.src)")
        page.close()
        assert sources
        status, headers, body = _get(sources[0])
        assert status == 200 and headers["x-content-type-options"] == "nosniff"
        assert headers["content-type"].startswith("image/") and body

        link = urlparse(sources[0])
        key = link.path.split("/files/", 1)[1]
        exp = parse_qs(link.query)["exp"][0]
        monkeypatch.setenv("FILE_LINK_SECRET", SECRET)
        reset_settings_cache()
        expired = file_links.signed_path(key, now=0)  # signed with the real secret, long expired
        traversal_exp = int(exp)
        traversal_sig = file_links._signature("images/../app.db", traversal_exp)
        hostile = {
            "unsigned": f"{server.url}/files/{key}",
            "tampered": f"{server.url}/files/{key}?exp={exp}&sig={'0' * 64}",
            "expired": f"{server.url}/{expired}",
            "signed climb out": f"{server.url}/files/images/../app.db?exp={traversal_exp}&sig={traversal_sig}",
            "encoded climb out": f"{server.url}/files/images/%2e%2e/app.db?exp={traversal_exp}&sig={traversal_sig}",
            "old component route": f"{server.url}/component/storage_thumbs/{key.split('/', 1)[1]}",
        }
        TALLY.tried += len(hostile)
        for name, url in hostile.items():
            status, headers, body = _get(url)
            assert status in (400, 403, 404), (name, status)
            assert b"SQLite" not in body, name
        status, headers, _ = _get(f"{server.url}/_stcore/health")
        assert status == 200 and headers["x-content-type-options"] == "nosniff"
    finally:
        reset_settings_cache()
        stop_app(server)
