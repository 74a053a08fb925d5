"""core/imports/safe_zip.py: every hostile archive named in the imports issue, built byte by byte here."""

from __future__ import annotations

import io
import stat
import struct
import zipfile

import pytest

from core.config import load_settings
from core.errors import InvalidInput
from core.imports.safe_zip import SafeZip, is_junk, normalise_entry_name
from tests.factories import drawn_image_bytes


def build_zip(files: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def patch_headers(data: bytes, name: str, *, flag_bits: int | None = None, size: int | None = None) -> bytes:
    """Rewrite one entry's local and central headers (zipfile cannot write encrypted or lying entries)."""
    raw = bytearray(data)
    encoded = name.encode()
    for signature, flag_at, size_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 22, 26, 30),
                                                               (b"PK\x01\x02", 8, 24, 28, 46)):
        start = 0
        while (start := raw.find(signature, start)) != -1:
            name_len = struct.unpack_from("<H", raw, start + name_len_at)[0]
            if bytes(raw[start + name_at:start + name_at + name_len]) == encoded:
                if flag_bits is not None:
                    struct.pack_into("<H", raw, start + flag_at, flag_bits)
                if size is not None:
                    struct.pack_into("<I", raw, start + size_at, size)
            start += 4
    return bytes(raw)


def open_zip(data: bytes, **limits) -> SafeZip:
    return SafeZip(io.BytesIO(data), settings=load_settings(**limits))


def problem_for(archive: SafeZip, fragment: str) -> str:
    matches = [p.message for p in archive.problems if fragment in p.name]
    assert matches, f"no problem for {fragment!r}: {archive.problems}"
    return matches[0]


def test_good_entries_read_back_and_mixed_case_extensions_kept():
    image = drawn_image_bytes(1)
    with open_zip(build_zip({"cats/a.JPG": image, "cats/b.Png": image})) as archive:
        assert [e.name for e in archive.entries] == ["cats/a.JPG", "cats/b.Png"]
        assert archive.read(archive.entries[0]) == image
        assert archive.problems == []


def test_traversal_and_absolute_paths_are_refused_and_others_kept():
    data = build_zip({"../evil.png": b"x", "/etc/passwd": b"x", "cats/../../up.png": b"x",
                      "C:\\win.png": b"x", "cats\\ok.png": b"y", "dogs/a.png": b"z"})
    with open_zip(data) as archive:
        assert sorted(e.name for e in archive.entries) == ["cats/ok.png", "dogs/a.png"]
        assert len(archive.problems) == 4
        assert all("leaves the archive" in p.message for p in archive.problems)


def test_normalise_entry_name():
    assert normalise_entry_name("./a//b.png") == "a/b.png"
    assert normalise_entry_name("a/../b.png") is None
    assert normalise_entry_name("/a.png") is None
    assert normalise_entry_name("D:/a.png") is None


def test_symlink_entry_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("cats/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("cats/real.png", drawn_image_bytes(2))
    with open_zip(buffer.getvalue()) as archive:
        assert [e.name for e in archive.entries] == ["cats/real.png"]
        assert "symbolic link" in problem_for(archive, "link.png")


@pytest.mark.parametrize("lie", [-10, +10])
def test_declared_size_that_lies_is_caught_on_read(lie):
    image = drawn_image_bytes(3)
    data = patch_headers(build_zip({"cats/a.png": image, "cats/b.png": image}), "cats/a.png",
                         size=len(image) + lie)
    with open_zip(data) as archive:
        lying, honest = archive.entries
        with pytest.raises(InvalidInput, match="cats/a.png: .*(declared size|checksum)"):
            archive.read(lying)
        assert archive.read(honest) == image


def test_bomb_by_total_size_refuses_archive():
    data = build_zip({"a.bin": b"\0" * 5000, "b.bin": b"\0" * 5000})
    with pytest.raises(InvalidInput, match="unpacks to 10,000 bytes.*zip bomb"):
        open_zip(data, max_archive_bytes=8000)


def test_bomb_by_ratio_refuses_entry():
    bomb = b"\0" * (3 * 1024 * 1024)
    data = build_zip({"cats/bomb.png": bomb, "cats/ok.png": drawn_image_bytes(4)})
    with open_zip(data, max_archive_ratio=100) as archive:
        assert [e.name for e in archive.entries] == ["cats/ok.png"]
        assert "compression ratio" in problem_for(archive, "bomb.png")


def test_entry_over_upload_limit_is_refused():
    data = build_zip({"big.png": b"x" * 2000, "small.png": b"x"}, compression=zipfile.ZIP_STORED)
    with open_zip(data, max_upload_bytes=1000) as archive:
        assert [e.name for e in archive.entries] == ["small.png"]
        assert "are refused" in problem_for(archive, "big.png")


def test_too_many_entries_refuses_archive():
    data = build_zip({f"c/{i}.png": b"x" for i in range(11)})
    with pytest.raises(InvalidInput, match="11 entries; at most 10"):
        open_zip(data, max_archive_entries=10)


@pytest.mark.parametrize("payload", [b"", b"not a zip at all", drawn_image_bytes(5), b"PK\x03\x04garbage"])
def test_non_zip_is_refused(payload):
    with pytest.raises(InvalidInput, match="not a ZIP archive"):
        open_zip(payload)


def test_encrypted_archive_and_encrypted_entry():
    image = drawn_image_bytes(6)
    only = patch_headers(build_zip({"cats/a.png": image}), "cats/a.png", flag_bits=0x1)
    with pytest.raises(InvalidInput, match="encrypted"):
        open_zip(only)
    mixed = patch_headers(build_zip({"cats/a.png": image, "cats/b.png": image}), "cats/a.png", flag_bits=0x1)
    with open_zip(mixed) as archive:
        assert [e.name for e in archive.entries] == ["cats/b.png"]
        assert "encrypted" in problem_for(archive, "a.png")


def test_nested_zip_is_reported_not_opened():
    inner = build_zip({"x/y.png": drawn_image_bytes(7)})
    with open_zip(build_zip({"more.ZIP": inner, "cats/a.png": drawn_image_bytes(7)})) as archive:
        assert [e.name for e in archive.entries] == ["cats/a.png"]
        assert "nested archive" in problem_for(archive, "more.ZIP")


def test_junk_entries_are_ignored_silently():
    data = build_zip({"__MACOSX/cats/._a.png": b"x", "cats/.DS_Store": b"x", "cats/Thumbs.db": b"x",
                      ".hidden/a.png": b"x", "cats/.b.png": b"x", "cats/a.png": drawn_image_bytes(8)})
    with open_zip(data) as archive:
        assert [e.name for e in archive.entries] == ["cats/a.png"]
        assert archive.problems == []
    assert is_junk("__MACOSX/x") and is_junk("a/Thumbs.db") and not is_junk("a/b.png")
