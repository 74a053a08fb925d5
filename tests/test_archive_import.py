"""Labeled archive import: layout detection and preview (pure), then the import on both stacks."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from core.archive_import import ClassMapping, ImportLabeledDatasetRequest, preview_archive
from core.archive_layouts import class_name_problem, decode_csv, detect_layout
from core.errors import InvalidInput
from tests.factories import drawn_image_bytes


def build_zip(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def layout_of(files: dict[str, bytes | str]):
    data = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    return detect_layout(list(data), data.__getitem__)


def labels_of(layout) -> dict[str, tuple]:
    return {item.entry: item.labels for item in layout.items}


# ------------------------------------------------------------------ layout detection (pure)


def test_folder_per_class_with_wrapping_folders():
    layout = layout_of({"export/v1/cats/a.jpg": b"", "export/v1/cats/b.JPEG": b"", "export/v1/dogs/c.png": b""})
    assert layout.format == "folder_per_class"
    assert dict(layout.class_counts()) == {"cats": 2, "dogs": 1}
    assert layout.split_counts() == {}


def test_single_class_folder_is_not_peeled_off():
    layout = layout_of({"cats/a.jpg": b"", "cats/b.jpg": b""})
    assert dict(layout.class_counts()) == {"cats": 2}


def test_root_images_are_unlabeled_with_a_problem_and_other_files_reported():
    layout = layout_of({"cats/a.jpg": b"", "loose.png": b"", "README.txt": b""})
    assert labels_of(layout) == {"cats/a.jpg": ("cats",), "loose.png": ()}
    errors = {p["file"]: p["error"] for p in layout.problems}
    assert "class folder" in errors["loose.png"] and "not an image" in errors["README.txt"]


def test_roboflow_split_folders_keep_split():
    layout = layout_of({"ds/train/cats/a.jpg": b"", "ds/train/dogs/b.jpg": b"", "ds/valid/cats/c.jpg": b"",
                        "ds/test/dogs/d.jpg": b""})
    assert layout.format == "split_folders"
    assert layout.split_counts() == {"test": 1, "train": 2, "val": 1}
    assert {i.entry: i.split for i in layout.items}["ds/valid/cats/c.jpg"] == "val"


def test_multilabel_csv_roboflow_style_per_split():
    layout = layout_of({
        "train/_classes.csv": "filename, cat, dog\na.jpg, 1, 1\nb.jpg, 0, 1\n",
        "train/a.jpg": b"", "train/b.jpg": b"",
        "valid/_classes.csv": "filename, cat, dog\nc.jpg, 1, 0\n", "valid/c.jpg": b"",
    })
    assert layout.format == "multilabel_csv" and layout.multi_label
    assert labels_of(layout) == {"train/a.jpg": ("cat", "dog"), "train/b.jpg": ("dog",), "valid/c.jpg": ("cat",)}
    assert layout.split_counts() == {"train": 2, "val": 1}


def test_label_csv_with_bom_semicolons_and_paths():
    layout = layout_of({"labels.csv": "\ufefffilename;label\nimgs/a.jpg;cat\nb.jpg;dog\n",
                        "imgs/a.jpg": b"", "imgs/b.jpg": b""})
    assert layout.format == "label_csv"
    assert labels_of(layout) == {"imgs/a.jpg": ("cat",), "imgs/b.jpg": ("dog",)}
    assert layout.problems == []


def test_csv_bad_rows_each_reported_good_rows_kept():
    layout = layout_of({
        "labels.csv": "filename,label\na.jpg,cat\na.jpg,cat\nghost.jpg,dog\nb.jpg\n,cat\nc.jpg,dog\n",
        "a.jpg": b"", "b.jpg": b"", "c.jpg": b"",
    })
    errors = [p["error"] for p in layout.problems]
    assert any("duplicate row" in e for e in errors)
    assert any("'ghost.jpg' is not in the archive" in e for e in errors)
    assert any("1 fields, the header has 2" in e for e in errors)
    assert any("empty filename" in e for e in errors)
    assert any(p["file"] == "b.jpg" and "not listed in the CSV" in p["error"] for p in layout.problems)
    assert labels_of(layout) == {"a.jpg": ("cat",), "b.jpg": (), "c.jpg": ("dog",)}


def test_multilabel_csv_non_binary_value_is_reported():
    layout = layout_of({"_classes.csv": "filename,cat,dog\na.jpg,1,maybe\nb.jpg,0,1\n", "a.jpg": b"", "b.jpg": b""})
    assert any("'maybe', not 0 or 1" in p["error"] for p in layout.problems)
    assert labels_of(layout)["b.jpg"] == ("dog",)


def test_csv_without_filename_column_falls_back_to_folders():
    layout = layout_of({"meta.csv": "name,label\nx,y\n", "cats/a.jpg": b""})
    assert layout.format == "folder_per_class"
    assert any("no filename column" in p["error"] for p in layout.problems)


def test_decode_csv_tab_delimited():
    header, rows = decode_csv(b"file\tlabel\r\na.jpg\tcat\r\n")
    assert header == ["file", "label"] and rows == [["a.jpg", "cat"]]


@pytest.mark.parametrize("name, fragment", [("", "empty"), ("   ", "empty"), ("x" * 300, "300 characters"),
                                            ("<b>cat</b>", "HTML"), ("a\x07b", "control")])
def test_bad_class_names(name, fragment):
    assert fragment in class_name_problem(name)


def test_preview_lists_format_classes_problems_and_default_mapping():
    data = build_zip({"cats/a.jpg": drawn_image_bytes(1, fmt="JPEG"), "cats/b.jpg": drawn_image_bytes(2, fmt="JPEG"),
                      "<img src=x onerror=alert(1)>/c.png": drawn_image_bytes(3), "../evil.png": b"x", "__MACOSX/._a": b"x"})
    preview = preview_archive(io.BytesIO(data))
    assert preview["format"] == "folder_per_class" and preview["image_count"] == 3
    assert [(c["name"], c["image_count"]) for c in preview["classes"]] == [("<img src=x onerror=alert(1)>", 1), ("cats", 2)]
    assert "HTML" in preview["classes"][0]["problem"]
    assert [p["file"] for p in preview["problems"]] == ["../evil.png"]
    mapping = {m["source_name"]: m for m in preview["default_mapping"]}
    assert mapping["<img src=x onerror=alert(1)>"]["skip"] and mapping["cats"]["create_new"]
    json.dumps(preview)  # the CLI prints it


def test_class_mapping_needs_exactly_one_choice():
    with pytest.raises(ValueError, match="exactly one"):
        ClassMapping(source_name="cats")
    with pytest.raises(ValueError, match="exactly one"):
        ClassMapping(source_name="cats", skip=True, create_new=True)
    ImportLabeledDatasetRequest(dataset_id="x", class_mapping=[ClassMapping(source_name="c", skip=True)])


def test_preview_of_non_zip_is_refused():
    with pytest.raises(InvalidInput, match="not a ZIP"):
        preview_archive(io.BytesIO(b"hello"))
