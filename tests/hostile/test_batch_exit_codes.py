"""Batch CLI exit codes (issue 14), run as a user runs them (subprocesses on a temporary SQLite
database and storage folder): 1 when every item of the batch failed (the JSON report still on
stdout, one line on stderr), 0 with the report when some item succeeded, 2 for bad usage or input.
Commands: `images add`, `images import-urls`, `import zip|products|cutouts|od`, `predict`,
`predict-batch`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.factories import drawn_image_bytes
from tests.hostile.tally import TALLY

ROOT = Path(__file__).resolve().parents[2]
GOOD = drawn_image_bytes(41, (48, 40))
CORRUPT = {"truncated.png": GOOD[:60], "text.jpg": b"not an image at all", "empty.png": b""}


def run(*args: str, expect: int, items: int, env: dict | None = None) -> dict | None:
    """Run the CLI (the embedded stack's DATABASE_URL/STORAGE_URL are in the environment), check
    its exit code and output shape, tally the batch; returns the JSON report (None for exit 2)."""
    result = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            capture_output=True, text=True, timeout=300)
    TALLY.tried += items
    if "Traceback" in result.stderr:
        TALLY.crashes.append(f"{args}: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == expect, (args, result.returncode, result.stderr[-2000:])
    if expect == 2:
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
        return None
    report = json.loads(result.stdout)
    if expect == 1:
        assert result.stderr.strip().splitlines()[-1].startswith("error: none of the"), result.stderr
    return report


def write_files(folder: Path, files: dict[str, bytes]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [str(folder / name) for name in files]


def test_images_add(embedded_stack, tmp_path):
    bad = write_files(tmp_path / "bad", CORRUPT)
    report = run("images", "add", *bad, str(tmp_path / "no-such-file.png"), expect=1, items=4)
    assert report["rejected"] == 4 and report["imported"] == 0
    report = run("images", "add", str(tmp_path / "bad"), *write_files(tmp_path / "good", {"ok.png": GOOD}),
                 expect=0, items=4)
    if report["imported"] != 1:
        TALLY.lost.append("ok.png")
    assert report["imported"] == 1 and report["rejected"] == 3
    report = run("images", "add", str(tmp_path / "good" / "ok.png"), expect=0, items=1)  # a duplicate is in
    assert report["duplicate"] == 1
    run("images", "add", expect=2, items=1)  # no paths: argparse
    run("images", "add", str(tmp_path / "good"), "--bogus", expect=2, items=1)


class ImageHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        body, kind = (GOOD, "image/png") if self.path == "/ok.png" else (b"<html></html>", "text/html")
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def image_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_images_import_urls(embedded_stack, tmp_path, image_server):
    refused = [f"{image_server}/ok.png", "ftp://example.invalid/x.png", "http://10.0.0.7/x.png"]
    # Without the allow-list even the local server is refused (loopback): every URL fails, no traffic.
    report = run("images", "import-urls", *refused, expect=1, items=3, env={"URL_ALLOW_LIST": ""})
    assert report["rejected"] == 3 and report["imported"] == 0
    listed = tmp_path / "urls.txt"
    listed.write_text(f"{image_server}/ok.png\n{image_server}/page.html\nhttp://10.0.0.7/x.png\n")
    report = run("images", "import-urls", "--file", str(listed), expect=0, items=3,
                 env={"URL_ALLOW_LIST": "127.0.0.1"})
    if report["imported"] != 1:
        TALLY.lost.append(f"{image_server}/ok.png")
    assert report["imported"] == 1 and report["rejected"] == 2
    run("images", "import-urls", expect=2, items=1)  # no URLs given
    run("images", "import-urls", "--file", str(tmp_path / "missing.txt"), expect=2, items=1)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_import_zip(embedded_stack, tmp_path):
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(zip_bytes({f"cats/{name}": data for name, data in CORRUPT.items()}))
    report = run("import", "zip", str(corrupt), "--dataset", "zips", "--create", expect=1, items=3)
    assert report["images_imported"] == 0 and report["error_count"] >= 3
    mixed = tmp_path / "mixed.zip"
    mixed.write_bytes(zip_bytes({"cats/ok.png": GOOD, **{f"dogs/{name}": data for name, data in CORRUPT.items()}}))
    report = run("import", "zip", str(mixed), "--dataset", "zips", expect=0, items=4)
    if report["images_imported"] != 1:
        TALLY.lost.append("cats/ok.png")
    assert report["images_imported"] == 1
    report = run("import", "zip", str(mixed), "--dataset", "zips", expect=0, items=4)  # again: duplicates are in
    assert report["images_imported"] == 0 and report["duplicates_skipped"] == 1
    not_zip = tmp_path / "plain.zip"
    not_zip.write_bytes(b"plain text")
    run("import", "zip", str(not_zip), "--dataset", "zips", expect=2, items=1)
    run("import", "zip", str(tmp_path / "missing.zip"), "--dataset", "zips", expect=2, items=1)
    run("import", "zip", str(mixed), expect=2, items=1)  # --dataset is required


def test_import_products_cutouts_od(embedded_stack):
    from tests.test_source_imports import add_platform_rows

    add_platform_rows(embedded_stack)
    storage_root = Path(embedded_stack.storage_url.removeprefix("file://"))
    od_files = sorted((storage_root / "platform" / "od").glob("*.png"))
    od_files[0].unlink()  # one of the two OD images has lost its object
    report = run("import", "od", "--folder", "shelves", expect=1, items=1)
    assert report["images_imported"] == 0 and report["error_count"] == 1
    report = run("import", "od", expect=0, items=2)
    assert report["images_imported"] == 1 and report["error_count"] == 1
    report = run("import", "od", "--folder", "no such folder", expect=0, items=0)  # nothing matched: no failure
    assert report["images_imported"] == 0 and report["error_count"] == 0
    for path in (storage_root / "platform" / "cutouts").glob("*.png"):
        path.unlink()
    report = run("import", "cutouts", "--include-unmatched", expect=1, items=6)
    assert report["images_imported"] == 0 and report["error_count"] == 6
    report = run("import", "products", "--types", "real", expect=0, items=3)
    assert report["images_imported"] == 3
    run("import", "products", "--types", "holographic", expect=2, items=1)
    run("import", "products", "--max-frames", "many", expect=2, items=1)


@pytest.fixture
def model(embedded_stack, tmp_path_factory, monkeypatch):
    """A tiny trained model in the stack's database, and two library images (their ids)."""
    from tests.factories import make_class
    from tests.model_factory import digit_images, register_model, shared_checkpoint
    from tests.training_data import store_image

    monkeypatch.setenv("CLS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))  # the CLI's model cache
    checkpoint = shared_checkpoint(tmp_path_factory)
    with embedded_stack.session() as session:
        class_ids = [make_class(session, f"digit-{n}").id for n in range(3)]
        model_id = register_model(session, embedded_stack.storage, checkpoint, class_ids=class_ids)
        images, _ = digit_images(1, 2)
        image_ids = [store_image(session, embedded_stack.storage, data, f"d{n}.png") for n, data in enumerate(images)]
    return str(model_id), [str(i) for i in image_ids], images


def test_predict_and_predict_batch(embedded_stack, tmp_path, model):
    model_id, image_ids, images = model
    bad = write_files(tmp_path / "bad", CORRUPT)
    report = run("predict", "--model", model_id, *bad, str(tmp_path / "missing.png"), expect=1, items=4)
    assert all("error" in r for r in report["results"])
    good = write_files(tmp_path / "good", {"d0.png": images[0]})
    report = run("predict", "--model", model_id, *good, *bad, expect=0, items=4)
    assert sum("error" not in r for r in report["results"]) == 1
    run("predict", "--model", model_id, expect=2, items=1)  # no images: argparse
    run("predict", "--model", "no-such-model", *good, expect=2, items=1)

    csv_out = str(tmp_path / "predictions.csv")
    report = run("predict-batch", "--model", model_id, "--library", "--csv", csv_out, expect=0, items=2)
    assert report["predicted"] == 2 and report["failed"] == 0
    storage_root = Path(embedded_stack.storage_url.removeprefix("file://"))
    (storage_root / "images" / f"{image_ids[0]}.png").unlink()
    report = run("predict-batch", "--model", model_id, "--library", "--csv", csv_out, expect=0, items=2)
    assert report["failed"] == 1
    (storage_root / "images" / f"{image_ids[1]}.png").unlink()
    report = run("predict-batch", "--model", model_id, "--library", "--csv", csv_out, expect=1, items=2)
    assert report["failed"] == 2 and report["total"] == 2
    run("predict-batch", "--model", model_id, "--csv", csv_out, expect=2, items=1)  # no scope
    run("predict-batch", "--model", model_id, "--image-id", "not-a-uuid", "--csv", csv_out, expect=2, items=1)
    run("predict-batch", "--model", model_id, "--library", expect=2, items=1)  # neither labels nor a CSV
