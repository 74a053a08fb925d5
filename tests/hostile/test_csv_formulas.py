"""CSV injection (issue 14): class and file names a spreadsheet would run as formulas, written into
every CSV the platform produces (export `csv` and `multilabel-csv` inside the ZIP, the CLI's
`--out FILE.csv`, the batch prediction CSV) and read back by our own importers unchanged."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from core.safe_csv import FORMULA_STARTS, escape_cell, unescape_cell
from tests.factories import ADMIN, make_class, make_dataset, make_dataset_image
from tests.hostile.tally import TALLY
from tests.training_data import store_image

ROOT = Path(__file__).resolve().parents[2]
# Names a class may have (a class name holds no control characters, so `\tx` is a file name only).
CLASS_NAMES = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "'=quoted", "''twice", "'plain", "cat"]
FILE_NAMES = ['=HYPERLINK("http://x","y").png', "+1.png", "-2.png", "@SUM(A1).png", "\tx.png", "'=quoted.png",
              "\r=cr.png", "plain.png"]
SPLITS = ["train", "val", "test", "unassigned"]


def formula_cells(text: str) -> list[str]:
    """Every cell of a CSV that a spreadsheet would run as a formula."""
    return [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row
            if cell.startswith(FORMULA_STARTS)]


@pytest.mark.parametrize("name", [*CLASS_NAMES, *FILE_NAMES, "", "'", "''", "'a", "a=b", "-", "=", 3, -1.5])
def test_escape_then_unescape_is_exact(name):
    escaped = escape_cell(name)
    TALLY.tried += 1
    if isinstance(name, str):
        assert not escaped.startswith(FORMULA_STARTS)
        assert unescape_cell(escaped) == name
    else:  # numbers we generate are written as numbers
        assert escaped == name


def test_a_quote_not_written_by_us_is_kept():
    # A third-party CSV's own leading quote before ordinary text is the author's: it stays.
    assert unescape_cell("'plain") == "'plain" and unescape_cell("'") == "'"
    assert unescape_cell("''plain") == "'plain" and unescape_cell("'-2") == "-2"


def _hostile_dataset(stack, *, task_type: str):
    """One image per hostile class, spread over the splits and named with a hostile file name; in the
    multi-label dataset every other image also carries the next class. Returns the dataset id and
    {file hash: (class names, split)}."""
    from core.models import ClsClass

    with stack.session() as session:
        dataset = make_dataset(session, f"formulas {task_type}", task_type=task_type)
        classes = [session.scalar(select(ClsClass).where(ClsClass.name == n)) or make_class(session, n)
                   for n in CLASS_NAMES]
        expected = {}
        for n, cls in enumerate(classes):
            chosen = [cls] + ([classes[(n + 1) % len(classes)]] if task_type == "multi_label" and n % 2 else [])
            image = make_dataset_image(session, stack.storage, dataset, seed=700 + n + 50 * (task_type == "multi_label"),
                                       classes=chosen, split=SPLITS[n % len(SPLITS)])
            image.original_filename = FILE_NAMES[n % len(FILE_NAMES)]
            expected[image.file_hash] = ({c.name for c in chosen}, SPLITS[n % len(SPLITS)])
        return dataset.id, expected


def _export(stack, tmp_path, dataset_id, fmt):
    from core.datasets.export import collect_export, combined_csv, write_zip

    with stack.session() as session:
        plan = collect_export(session=session, storage=stack.storage, dataset_id=dataset_id, fmt=fmt)
    target = tmp_path / f"{fmt}.zip"
    write_zip(plan, storage=stack.storage, target=target)
    return target, combined_csv(plan)


def _labels_by_hash(stack, dataset_id) -> dict[str, tuple[set[str], str]]:
    from core.models import ClsClass, ClsDatasetImage, ClsImage, ClsLabel

    with stack.session() as session:
        rows = session.execute(select(ClsImage.file_hash, ClsDatasetImage.split, ClsClass.name)
                               .join(ClsDatasetImage, ClsDatasetImage.image_id == ClsImage.id)
                               .join(ClsLabel, (ClsLabel.image_id == ClsImage.id)
                                     & (ClsLabel.dataset_id == ClsDatasetImage.dataset_id))
                               .join(ClsClass, ClsClass.id == ClsLabel.class_id)
                               .where(ClsDatasetImage.dataset_id == dataset_id)).all()
    found: dict[str, tuple[set[str], str]] = {}
    for file_hash, split, name in rows:
        found.setdefault(file_hash, (set(), split))[0].add(name)
    return found


@pytest.mark.parametrize(("fmt", "task_type"), [("csv", "single_label"), ("multilabel-csv", "multi_label")])
def test_export_is_formula_safe_and_imports_back_unchanged(embedded_stack, tmp_path, fmt, task_type):
    from core.imports.archive import run_archive_import
    from core.imports.layouts import decode_csv
    from core.models import ClsDatasetImage, ClsImage, ClsLabel

    stack = embedded_stack
    dataset_id, expected = _hostile_dataset(stack, task_type=task_type)
    target, combined = _export(stack, tmp_path, dataset_id, fmt)
    archive = zipfile.ZipFile(target)
    csvs = {name: archive.read(name).decode() for name in archive.namelist() if name.endswith(".csv")}
    assert csvs and all(not formula_cells(text) for text in [*csvs.values(), combined]), csvs
    header_names = set(decode_csv(next(iter(csvs.values())).encode())[0])
    if fmt == "multilabel-csv":  # every class name is a column header, read back as it was
        assert set(CLASS_NAMES) <= header_names
    # The combined CSV (`datasets export --out FILE.csv`) names each entry of the ZIP and each class.
    header, rows = decode_csv(combined.encode())
    assert {row[0] for row in rows} == {n for n in archive.namelist() if not n.endswith(".csv")}
    if fmt == "csv":
        assert {row[1] for row in rows} == set(CLASS_NAMES)
    else:
        assert header[1:-1] == [n for n in header[1:-1] if n in CLASS_NAMES] and set(header[1:-1]) == set(CLASS_NAMES)

    with stack.session() as session:  # forget the images: the import brings them back from the ZIP alone
        image_ids = session.scalars(select(ClsDatasetImage.image_id).where(ClsDatasetImage.dataset_id == dataset_id)).all()
        for table in (ClsLabel, ClsDatasetImage, ClsImage):
            column = table.id if table is ClsImage else table.image_id
            session.execute(table.__table__.delete().where(column.in_(image_ids)))
        again = make_dataset(session, f"back {fmt}", task_type=task_type).id
    summary = run_archive_import(actor=ADMIN, source=target, dataset_id=again)
    TALLY.tried += len(expected)
    back = _labels_by_hash(stack, again)
    lost = [names for file_hash, names in expected.items() if back.get(file_hash, (None,))[0] != names[0]]
    TALLY.lost += [str(names) for names in lost]
    assert summary["error_count"] == 0, summary["errors"]  # every CSV row named its file: none lost a `'`
    assert summary["classes_created"] == []  # every name mapped onto its own class, unchanged
    assert not lost and {h: labels for h, (labels, _split) in back.items()} == {
        h: labels for h, (labels, _split) in expected.items()}


def test_cli_csv_output_is_formula_safe(embedded_stack, tmp_path):
    from core.imports.layouts import decode_csv

    _hostile_dataset(embedded_stack, task_type="single_label")
    out = tmp_path / "labels.csv"
    result = subprocess.run([sys.executable, "-m", "core", "datasets", "export", "formulas single_label",
                             "--format", "csv", "--out", str(out)], cwd=ROOT, env=dict(os.environ),
                            capture_output=True, text=True, timeout=120)
    TALLY.tried += 1
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert not formula_cells(text), text
    assert {row[1] for row in decode_csv(text.encode())[1]} == set(CLASS_NAMES)


@pytest.fixture
def small_torch(tmp_path, monkeypatch):
    from tests.model_factory import small_torch_settings

    yield from small_torch_settings(tmp_path, monkeypatch)


def test_prediction_csv_is_formula_safe_and_reads_back(embedded_stack, tmp_path_factory, small_torch):
    from core.prediction.auto_label import read_csv, run_batch_prediction
    from tests.model_factory import digit_images, register_model, shared_checkpoint

    checkpoint = shared_checkpoint(tmp_path_factory)
    names = CLASS_NAMES[:3]
    with embedded_stack.session() as session:
        class_ids = [make_class(session, n).id for n in names]
        model_id = register_model(session, embedded_stack.storage, checkpoint, class_ids=class_ids, class_names=names)
        images, _ = digit_images(3, 2)
        for data, filename in zip(images, FILE_NAMES, strict=False):
            store_image(session, embedded_stack.storage, data, filename)
    result = run_batch_prediction(actor=ADMIN, model=model_id, scope="library", export_csv=True)
    text = embedded_stack.storage.get(result["csv_key"]).decode()
    TALLY.tried += len(images)
    assert not formula_cells(text), text
    rows = read_csv(embedded_stack.storage, result["csv_key"])
    assert {row["filename"] for row in rows} == set(FILE_NAMES[:len(images)])
    assert set(rows[0]) >= set(names) and all(row["predicted"] in names for row in rows)
