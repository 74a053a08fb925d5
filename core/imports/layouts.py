"""Which labeled-dataset layout a ZIP holds, and what each image's labels and split are.

Four layouts, detected from entry names (and the CSV, when there is one):
- `folder_per_class`: `cls/img.jpg` (wrapping folders such as `dataset/cls/img.jpg` are peeled off),
- `split_folders`: Roboflow's `train|valid|test/cls/img.jpg`; the split is kept,
- `multilabel_csv`: a CSV with a filename column and one 0/1 column per class (Roboflow `_classes.csv`),
- `label_csv`: a CSV of `filename,label` rows (a file listed under two labels gets both).
Pure functions over names and bytes: no database, no storage.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from core.safe_csv import unescape_cell

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif"}
SPLIT_FOLDERS = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}
FILENAME_COLUMNS = ("filename", "file_name", "file", "image", "image_name", "image_path", "img", "path")
LABEL_COLUMNS = ("label", "class", "class_name", "category", "labels")
TRUE_VALUES, FALSE_VALUES = {"1", "1.0", "true", "yes"}, {"0", "0.0", "false", "no"}
FORMAT_LABELS = {
    "folder_per_class": "Folder per class",
    "split_folders": "Split folders (train / valid / test)",
    "multilabel_csv": "Multi-label CSV",
    "label_csv": "CSV of filename, label",
}
MAX_CLASS_NAME = 100


@dataclass(frozen=True)
class SourceItem:
    entry: str  # archive entry name of the image
    labels: tuple[str, ...]  # source class names; empty = unlabeled
    split: str | None = None  # train / val / test when the archive says so


@dataclass
class ArchiveLayout:
    format: str
    items: list[SourceItem]
    problems: list[dict[str, str]] = field(default_factory=list)
    csv_names: list[str] = field(default_factory=list)

    def class_counts(self) -> Counter:
        return Counter(label for item in self.items for label in item.labels)

    def split_counts(self) -> dict[str, int]:
        counts = Counter(item.split for item in self.items if item.split)
        return dict(sorted(counts.items()))

    @property
    def multi_label(self) -> bool:
        return any(len(item.labels) > 1 for item in self.items)


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES  # .JPG and .Png count too


def class_name_problem(name: str) -> str | None:
    """Why a source class name cannot become a class as it is (None when it can)."""
    if not name.strip():
        return "class name is empty"
    if len(name) > MAX_CLASS_NAME:
        return f"class name is {len(name)} characters; at most {MAX_CLASS_NAME} are allowed"
    if "<" in name or ">" in name:
        return "class name contains '<' or '>' (looks like HTML); map it to another name"
    if any(ord(ch) < 32 for ch in name):
        return "class name contains control characters"
    return None


def _strip_wrappers(names: list[str]) -> int:
    """How many leading folders all images share and can be peeled off while each image still sits
    in a folder below them (so `cats/a.jpg` alone keeps `cats` as its class)."""
    paths = [PurePosixPath(n).parts for n in names]
    depth = 0
    while paths and all(len(p) > depth + 2 for p in paths) and len({p[depth] for p in paths}) == 1:
        if paths[0][depth].lower() in SPLIT_FOLDERS:
            break
        depth += 1
    return depth


def detect_layout(names: list[str], read: Callable[[str], bytes]) -> ArchiveLayout:
    """Pick the layout from the entry names; `read(name)` returns a CSV entry's bytes."""
    images = [n for n in names if is_image_name(n)]
    csvs = sorted(n for n in names if n.lower().endswith(".csv"))
    problems = [{"file": n, "error": "not an image or CSV; ignored"} for n in names
                if n not in images and n not in csvs]
    if csvs:
        layout = _csv_layout(images, csvs, read)
    else:
        layout = _folder_layout(images)
    layout.problems[:0] = problems
    return layout


def _folder_layout(images: list[str]) -> ArchiveLayout:
    depth = _strip_wrappers(images)
    stripped = {name: PurePosixPath(name).parts[depth:] for name in images}
    splits = {parts[0].lower() for parts in stripped.values() if len(parts) > 1}
    use_splits = bool(splits) and splits <= set(SPLIT_FOLDERS)
    items, problems = [], []
    for name, parts in stripped.items():
        split = SPLIT_FOLDERS[parts[0].lower()] if use_splits and len(parts) > 1 else None
        class_parts = parts[1:] if split else parts
        if len(class_parts) < 2:
            problems.append({"file": name, "error": "not inside a class folder; imported unlabeled"})
            items.append(SourceItem(name, (), split))
            continue
        items.append(SourceItem(name, (class_parts[0].strip(),), split))
    return ArchiveLayout("split_folders" if use_splits else "folder_per_class", items, problems)


def decode_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV: a UTF-8 BOM is dropped, the delimiter (, ; tab) is sniffed, and the
    `'` our own exports put before a formula-like cell is taken off (core.safe_csv)."""
    text = data.decode("utf-8-sig", errors="replace")
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    rows = [[unescape_cell(c.strip()) for c in row]
            for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if any(c.strip() for c in row)]
    if not rows:
        return [], []
    return rows[0], rows[1:]


def _resolve(filename: str, folder: PurePosixPath, by_path: set[str], by_base: dict[str, list[str]]) -> str | None:
    """The archive entry a CSV row names: relative to the CSV's folder, the archive root, or by basename."""
    cleaned = filename.replace("\\", "/").lstrip("./")
    for candidate in (str(folder / cleaned) if str(folder) != "." else cleaned, cleaned):
        if candidate in by_path:
            return candidate
    matches = by_base.get(PurePosixPath(cleaned).name, [])
    in_folder = [m for m in matches if str(folder) == "." or m.startswith(f"{folder}/")]
    return in_folder[0] if len(in_folder) == 1 else (matches[0] if len(matches) == 1 else None)


def _split_in_path(name: str) -> str | None:
    folders = PurePosixPath(name).parts[:-1]
    return next((SPLIT_FOLDERS[f.lower()] for f in folders if f.lower() in SPLIT_FOLDERS), None)


def _csv_layout(images: list[str], csvs: list[str], read: Callable[[str], bytes]) -> ArchiveLayout:
    by_path = set(images)
    by_base: dict[str, list[str]] = {}
    for name in images:
        by_base.setdefault(PurePosixPath(name).name, []).append(name)
    labels: dict[str, list[str]] = {}
    splits: dict[str, str | None] = {}
    problems: list[dict[str, str]] = []
    formats = set()
    for csv_name in csvs:
        folder = PurePosixPath(csv_name).parent
        split = SPLIT_FOLDERS.get(folder.name.lower())
        rows_by_file, kind, csv_problems = parse_label_csv(csv_name, read(csv_name))
        problems += csv_problems
        if kind:
            formats.add(kind)
        for row_number, filename, row_labels in rows_by_file:
            entry = _resolve(filename, folder, by_path, by_base)
            if entry is None:
                problems.append({"file": csv_name, "error": f"row {row_number}: {filename!r} is not in the archive"})
                continue
            known = labels.setdefault(entry, [])
            if kind == "label_csv" and row_labels and row_labels[0] in known:
                problems.append({"file": csv_name, "error": f"row {row_number}: duplicate row for {filename!r}; ignored"})
                continue
            if kind == "multilabel_csv" and entry in splits:
                problems.append({"file": csv_name, "error": f"row {row_number}: {filename!r} listed again; ignored"})
                continue
            known.extend(label for label in row_labels if label not in known)
            splits[entry] = split
    if not formats:  # no usable CSV (e.g. a metadata file): the folders carry the labels
        layout = _folder_layout(images)
        layout.problems[:0] = problems
        return layout
    items = []
    for name in images:
        if name not in labels:
            problems.append({"file": name, "error": "not listed in the CSV; imported unlabeled"})
        items.append(SourceItem(name, tuple(labels.get(name, ())), splits.get(name) or _split_in_path(name)))
    layout_format = "multilabel_csv" if "multilabel_csv" in formats else "label_csv"
    return ArchiveLayout(layout_format, items, problems, csvs)


def parse_label_csv(csv_name: str, data: bytes) -> tuple[list[tuple[int, str, list[str]]], str | None, list[dict]]:
    """Rows (row number, filename, labels), the CSV's kind, and per-row problems."""
    header, rows = decode_csv(data)
    lowered = [h.lower() for h in header]
    file_col = next((lowered.index(c) for c in FILENAME_COLUMNS if c in lowered), None)
    if file_col is None:
        return [], None, [{"file": csv_name, "error": "no filename column (expected one of: "
                           f"{', '.join(FILENAME_COLUMNS)}); the CSV was not used"}]
    label_col = next((lowered.index(c) for c in LABEL_COLUMNS if c in lowered), None)
    class_cols = [i for i in range(len(header)) if i != file_col]
    if label_col is None and not class_cols:
        return [], None, [{"file": csv_name, "error": "no label column and no class columns; the CSV was not used"}]
    kind = "label_csv" if label_col is not None else "multilabel_csv"
    parsed, problems = [], []
    for number, row in enumerate(rows, start=2):
        if len(row) < len(header):
            problems.append({"file": csv_name, "error": f"row {number} has {len(row)} fields, the header has "
                             f"{len(header)}; row ignored"})
            continue
        filename = row[file_col]
        if not filename:
            problems.append({"file": csv_name, "error": f"row {number}: empty filename; row ignored"})
            continue
        if kind == "label_csv":
            parsed.append((number, filename, [row[label_col]] if row[label_col] else []))
            continue
        values = {header[i]: row[i].lower() for i in class_cols}
        bad = [col for col, value in values.items() if value not in TRUE_VALUES | FALSE_VALUES]
        if bad:
            problems.append({"file": csv_name, "error": f"row {number}: column {bad[0]!r} is "
                             f"{values[bad[0]]!r}, not 0 or 1; row ignored"})
            continue
        parsed.append((number, filename, [col for col, value in values.items() if value in TRUE_VALUES]))
    return parsed, kind, problems
