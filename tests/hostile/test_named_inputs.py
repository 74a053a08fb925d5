"""Every bad input named in the image-library and import issues (and the URL SSRF cases), run against
the real entry points in one place: ingest_many (uploads, folders), import_urls, run_archive_import /
start_archive_import. The inputs come from the per-module tests (imported, not copied); each must get
a clear per-item message while the good items import, with no row without its object and no object
without its row (or outside the storage prefix)."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest
from sqlalchemy import func, select

from core.errors import InvalidInput, UserError
from core.models import ClsImage, ClsJob
from tests.factories import ADMIN, drawn_image_bytes, make_dataset
from tests.hostile.tally import TALLY
from tests.test_archives import patch_headers
from tests.test_images import BAD_INPUTS, ODD_GOOD_INPUTS, assert_consistent
from tests.test_url_import import REFUSED, server, silent_port  # noqa: F401 (fixtures used by name)


def test_every_bad_image_beside_every_odd_good_one(stack):
    from core.library.ingest import ingest_many

    bad = [(f"{case}.jpg", data) for case, (data, _reason) in sorted(BAD_INPUTS.items())]
    good = [(f"{case}.img", make()) for case, (make, _size) in sorted(ODD_GOOD_INPUTS.items())]
    names = [("çiçek 🌸 фото.png", drawn_image_bytes(10)), ("ü" * 400 + ".png", drawn_image_bytes(11)),
             ("same.png", drawn_image_bytes(12)), ("same.png", drawn_image_bytes(13)),
             ("../../etc/passwd\x00.png", drawn_image_bytes(14)), ("<img src=x onerror=alert(1)>.png", drawn_image_bytes(15))]
    results = ingest_many(actor=ADMIN, items=bad + good + names, storage=stack.storage, workers=1)
    TALLY.tried += len(results)
    for (name, _data), result in zip(bad, results, strict=False):
        reason = BAD_INPUTS[name.removesuffix(".jpg")][1]
        assert result.status == "rejected" and reason in result.error, (name, result)
    imported = [r for r in results[len(bad):] if r.status == "imported"]
    lost = [r for r in results[len(bad):] if r.status != "imported"]
    TALLY.lost += [r.filename for r in lost]
    assert not lost, lost
    assert assert_consistent(stack) == len(imported) == len(good) + len(names)


def test_every_refused_url_in_one_job_with_the_good_one(stack, server, silent_port):  # noqa: F811
    from core.imports.urls import import_urls

    good = f"{server}/photo%20one.png"
    # The cases refused without an allow-list are refused with loopback allowed too, except the two
    # loopback ones, which need the empty list: run those apart.
    loopback = {case for case, (_t, allow, _r) in REFUSED.items() if not allow}
    for allow, cases in ((["127.0.0.1"], sorted(set(REFUSED) - loopback)), ([], sorted(loopback))):
        urls = [REFUSED[case][0].format(server=server, silent=silent_port) for case in cases]
        summary = import_urls(actor=ADMIN, urls=[*urls, good], allow_list=allow, timeout_s=1.5, max_bytes=300_000)
        TALLY.tried += len(urls) + 1
        for case, result in zip(cases, summary["results"], strict=False):
            assert result["status"] == "rejected" and REFUSED[case][2] in result["error"], (case, result)
    with stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsImage)) == 1  # the good one, once
    assert assert_consistent(stack) == 1


def symlink_entry(archive: zipfile.ZipFile, name: str) -> None:
    link = zipfile.ZipInfo(name)
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive.writestr(link, "/etc/passwd")


def hostile_archive() -> tuple[bytes, dict[str, str], set[str]]:
    """One archive holding every per-entry hostile case beside good entries; returns it, the
    message fragment expected per bad entry, and the good entries."""
    good = {"set/cats/a.JPG": drawn_image_bytes(1, fmt="JPEG"), "set/cats/b.Png": drawn_image_bytes(2),
            "set/dogs/c.jpeg": drawn_image_bytes(3, fmt="JPEG")}
    bad = {"../evil.png": "leaves the archive", "/etc/abs.png": "leaves the archive",
           "set/dogs/link.png": "symbolic link", "set/dogs/inner.zip": "nested archive",
           "set/dogs/corrupt.jpg": "not an image", "set/dogs/lies.png": "declared size",
           "set/dogs/locked.png": "encrypted", "set/dogs/bomb.png": "compression ratio"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in good.items():
            archive.writestr(name, data)
        archive.writestr(zipfile.ZipInfo("../evil.png"), drawn_image_bytes(4))
        archive.writestr(zipfile.ZipInfo("/etc/abs.png"), drawn_image_bytes(5))
        symlink_entry(archive, "set/dogs/link.png")
        archive.writestr("set/dogs/inner.zip", b"PK\x05\x06" + b"\0" * 18)
        archive.writestr("set/dogs/corrupt.jpg", b"\xff\xd8\xff not really a jpeg")
        archive.writestr("set/dogs/lies.png", drawn_image_bytes(6))
        archive.writestr("set/dogs/locked.png", drawn_image_bytes(7))
        archive.writestr("set/dogs/bomb.png", b"\0" * (3 * 1024 * 1024))
        archive.writestr("__MACOSX/set/cats/._a.JPG", b"junk")
        archive.writestr("set/cats/.DS_Store", b"junk")
    data = buffer.getvalue()
    data = patch_headers(data, "set/dogs/lies.png", size=len(drawn_image_bytes(6)) + 10)
    data = patch_headers(data, "set/dogs/locked.png", flag_bits=0x1)
    return data, bad, set(good)


def test_hostile_archive_entries_each_reported_and_good_ones_imported(stack, monkeypatch):
    from core.config import reset_settings_cache
    from core.imports.archive import run_archive_import

    monkeypatch.setenv("MAX_ARCHIVE_RATIO", "100")
    reset_settings_cache()
    data, bad, good = hostile_archive()
    with stack.session() as session:
        dataset_id = make_dataset(session, "hostile").id
    summary = run_archive_import(actor=ADMIN, source=io.BytesIO(data), dataset_id=dataset_id)
    TALLY.tried += len(bad) + len(good)
    errors = {e["file"]: e["error"] for e in summary["errors"]}
    for name, fragment in bad.items():
        assert name in errors and fragment in errors[name], (name, errors.get(name))
    assert summary["images_imported"] == len(good)
    assert assert_consistent(stack) == len(good)
    keys = list(stack.storage.list_keys(""))
    assert all(key.startswith(("images/", "thumbs/")) for key in keys), keys  # nothing outside the prefix


CSV_CASES = {
    "bom_semicolons": ("\ufefffilename;label\na.jpg;cat\nb.jpg;dog\n", {}),
    "missing_column": ("filename,label\na.jpg,cat\nb.jpg\n", {"labels.csv": "fields, the header has 2"}),
    "unknown_filename": ("filename,label\na.jpg,cat\nghost.jpg,dog\n", {"labels.csv": "'ghost.jpg' is not in the archive"}),
    "duplicate_rows": ("filename,label\na.jpg,cat\na.jpg,cat\n", {"labels.csv": "duplicate row"}),
    "empty_class": ("filename,label\na.jpg, \n", {}),
    "long_class": ("filename,label\na.jpg," + "x" * 300 + "\n", {}),
    "html_class": ("filename,label\na.jpg,<script>alert(1)</script>\n", {}),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_hostile_csv_archives_import_with_messages(embedded_stack, case):
    from core.imports.archive import preview_archive, run_archive_import
    from tests.test_archive_import import build_zip

    csv, expected = CSV_CASES[case]
    data = build_zip({"labels.csv": csv, "a.jpg": drawn_image_bytes(21, fmt="JPEG"),
                      "b.jpg": drawn_image_bytes(22, fmt="JPEG")})
    preview = preview_archive(io.BytesIO(data))
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, f"csv {case}").id
    summary = run_archive_import(actor=ADMIN, source=io.BytesIO(data), dataset_id=dataset_id,
                                 class_mapping=preview["default_mapping"])
    TALLY.tried += 1
    messages = " | ".join(f"{e['file']}: {e['error']}" for e in summary["errors"])
    for fragment in expected.values():
        assert fragment in messages, messages
    for cls in preview["classes"]:  # a refused class name is named with its reason and skipped
        if cls.get("problem"):
            assert any(m["source_name"] == cls["name"] and m["skip"] for m in preview["default_mapping"])
    # Every image is imported, or skipped because its class was (a refused name skips its images).
    skipped = summary.get("skipped_by_mapping", summary.get("extra", {}).get("skipped_by_mapping"))
    assert summary["images_imported"] + skipped == 2, summary
    assert assert_consistent(embedded_stack) == summary["images_imported"]


WHOLE_ARCHIVE = {
    "not_a_zip": (lambda: b"plain text", {}, "not a ZIP"),
    "empty_file": (lambda: b"", {}, "not a ZIP"),
    "image_as_zip": (lambda: drawn_image_bytes(5), {}, "not a ZIP"),
    "all_encrypted": (lambda: patch_headers(zipfile_bytes({"c/a.png": drawn_image_bytes(1)}), "c/a.png", flag_bits=1),
                      {}, "encrypted"),
    "too_many_entries": (lambda: zipfile_bytes({f"c/{i}.png": b"x" for i in range(11)}),
                         {"MAX_ARCHIVE_ENTRIES": "10"}, "at most 10"),
    "total_bomb": (lambda: zipfile_bytes({"a.bin": b"\0" * 5000, "b.bin": b"\0" * 5000}),
                   {"MAX_ARCHIVE_BYTES": "8000"}, "zip bomb"),
}


def zipfile_bytes(files: dict[str, bytes]) -> bytes:
    from tests.test_archives import build_zip

    return build_zip(files)


@pytest.mark.parametrize("case", sorted(WHOLE_ARCHIVE))
def test_whole_archive_refusals_before_any_job(embedded_stack, monkeypatch, case):
    from core.config import reset_settings_cache
    from core.imports.archive import ImportLabeledDatasetRequest, start_archive_import

    make, env, message = WHOLE_ARCHIVE[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "whole").id
    TALLY.tried += 1
    with pytest.raises(InvalidInput, match=message) as refused:
        start_archive_import(actor=ADMIN, source=io.BytesIO(make()), request=ImportLabeledDatasetRequest(dataset_id=str(dataset_id)))
    assert isinstance(refused.value, UserError) and "\n" not in str(refused.value)
    with embedded_stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsJob)) == 0
    assert list(embedded_stack.storage.list_keys("")) == []
