"""Fuzz targets for the archive reader, the archive layout detector and the CSV parsers: each
`check_*` runs one input through the real code and records into a Tally whether it crashed (any
exception but a UserError) or lost an item (a file neither used nor reported). Shared by
tests/hostile/test_fuzz.py (bounded examples) and bench/bench_fuzz.py (a long run)."""

from __future__ import annotations

import io
import traceback
import zipfile

from hypothesis import strategies as st

from core.errors import UserError
from tests.hostile.tally import Tally

NAME_PARTS = st.sampled_from(["cats", "dogs", "train", "valid", "test", "..", ".", "", "a b", "ü🌸", "<b>",
                              "__MACOSX", ".DS_Store", "x" * 120, "C:", "\\", "labels.csv", "_classes.csv",
                              "a.jpg", "B.PNG", "c.jpeg", "d.zip", "e.txt", "f.webp"])
ENTRY_NAMES = st.lists(NAME_PARTS, min_size=1, max_size=5).map("/".join)
CSV_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(st.one_of(st.sampled_from(["filename", "label", "a.jpg", "cats/a.jpg", "1", "0", "2", "",
                                                 "cat", "dog", "<script>", "\ufeff", "ghost.png"]),
                                st.text(max_size=8)), max_size=5), max_size=8)
    .map(lambda rows: "\n".join(st_join(row) for row in rows)),
)


def st_join(row: list[str]) -> str:
    return ",".join(row)


@st.composite
def zip_bytes(draw) -> bytes:
    """A valid ZIP of random names and contents, optionally with some bytes then mutated."""
    names = draw(st.lists(ENTRY_NAMES, max_size=8))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as archive:
        for name in names:
            content = draw(st.one_of(st.binary(max_size=200), CSV_TEXT.map(str.encode)))
            archive.writestr(zipfile.ZipInfo(name), content)
    data = bytearray(buffer.getvalue())
    for position, value in draw(st.lists(st.tuples(st.integers(0, max(0, len(data) - 1)), st.integers(0, 255)),
                                         max_size=4)):
        if data:
            data[position] = value
    return bytes(data)


def _guard(tally: Tally, label: str, fn) -> None:
    tally.tried += 1
    try:
        fn()
    except UserError as exc:
        if not str(exc).strip():
            tally.crashes.append(f"{label}: a refusal without a message")
    except Exception:
        tally.crashes.append(f"{label}: {traceback.format_exc(limit=4)}")


def check_archive(data: bytes, tally: Tally) -> None:
    """SafeZip and then the layout detector on its entries, as the import reads them."""
    from core.imports.archive import read_layout
    from core.imports.safe_zip import SafeZip, is_junk, normalise_entry_name

    def run():
        with SafeZip(io.BytesIO(data)) as archive:
            for entry in archive.entries:
                try:
                    archive.read(entry)
                except UserError:
                    pass
            layout = read_layout(archive)
            accounted = {e.name for e in archive.entries} | {p.name for p in archive.problems}
            for info in archive._zip.infolist():  # every file entry is used, reported, or junk
                if not info.filename:
                    if "(no name)" not in accounted:
                        tally.lost.append("an entry without a name")
                    continue
                name = normalise_entry_name(info.filename)
                if info.is_dir() or (name and is_junk(name)):
                    continue
                if (name or info.filename) not in accounted and info.filename not in accounted:
                    tally.lost.append(f"archive entry {info.filename!r}")
            _check_layout_accounts(layout, [e.name for e in archive.entries], tally)

    _guard(tally, f"archive {data[:40]!r}", run)


def _check_layout_accounts(layout, names: list[str], tally: Tally) -> None:
    """Every image name is an item or a problem; every other name is a CSV or a problem."""
    items = {item.entry for item in layout.items}
    reported = {problem["file"] for problem in layout.problems}
    for name in names:
        if name not in items and name not in reported and name not in layout.csv_names \
                and not name.lower().endswith(".csv"):
            tally.lost.append(f"layout entry {name!r}")


def check_layout(names: list[str], csv_text: str, tally: Tally) -> None:
    from core.imports.layouts import detect_layout

    names = list(dict.fromkeys(names))
    contents = {name: csv_text.encode() for name in names if name.lower().endswith(".csv")}

    def run():
        layout = detect_layout(names, lambda name: contents.get(name, b""))
        _check_layout_accounts(layout, names, tally)

    _guard(tally, f"layout {names!r}", run)


def check_csv(data: bytes, tally: Tally) -> None:
    from core.imports.layouts import decode_csv, parse_label_csv
    from core.imports.urls import parse_url_list

    _guard(tally, f"decode_csv {data[:60]!r}", lambda: decode_csv(data))
    _guard(tally, f"parse_label_csv {data[:60]!r}", lambda: parse_label_csv("labels.csv", data))
    _guard(tally, f"parse_url_list {data[:60]!r}", lambda: parse_url_list(data.decode("utf-8", "replace")))
