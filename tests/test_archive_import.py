"""Labeled archive import: layout detection and preview (pure), then the import on both stacks."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from sqlalchemy import func, select

from core.errors import InvalidInput
from core.imports.archive import ClassMapping, ImportLabeledDatasetRequest, preview_archive, run_archive_import
from core.imports.layouts import class_name_problem, decode_csv, detect_layout
from tests.factories import ADMIN, drawn_image_bytes


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


# ------------------------------------------------------------------ imports into the database


def jpeg(seed: int) -> bytes:
    return drawn_image_bytes(seed, size=(48, 48), fmt="JPEG")


def dataset_state(session, dataset_id) -> dict:
    """{original filename: (split, sorted class names)} of the dataset's images."""
    from core.models import ClsClass, ClsDatasetImage, ClsImage, ClsLabel

    rows = session.execute(select(ClsImage.original_filename, ClsDatasetImage.split, ClsImage.id)
                           .join(ClsDatasetImage, ClsDatasetImage.image_id == ClsImage.id)
                           .where(ClsDatasetImage.dataset_id == dataset_id)).all()
    state = {}
    for filename, split, image_id in rows:
        names = session.scalars(select(ClsClass.name).join(ClsLabel, ClsLabel.class_id == ClsClass.id).where(
            ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == image_id)).all()
        state[filename] = (split, tuple(sorted(names)))
    return state


def stored_keys(stack) -> list[str]:
    return sorted(stack.storage.list_keys())


def test_folder_per_class_import_as_a_job_then_rerun_adds_nothing(stack):
    from core.imports.archive import start_archive_import
    from core.models import ClsClass, ClsDataset, ClsImage, ClsJob
    from tests.factories import make_dataset

    archive = build_zip({
        "pets/cats/a.jpg": jpeg(1), "pets/cats/b.JPG": jpeg(2), "pets/dogs/c.Jpeg": jpeg(3),
        "pets/dogs/broken.jpg": b"\xff\xd8\xff not really a jpeg", "pets/dogs/.DS_Store": b"junk",
        "__MACOSX/pets/cats/._a.jpg": b"junk", "../../escape.jpg": jpeg(4),
    })
    with stack.session() as session:
        dataset_id = make_dataset(session, "pets").id
    request = ImportLabeledDatasetRequest(dataset_id=str(dataset_id))
    results = []
    for _ in range(2):
        job_id = start_archive_import(actor=ADMIN, source=io.BytesIO(archive), request=request)
        stack.drain_jobs()
        with stack.session() as session:
            job = session.get(ClsJob, job_id)
            assert job.status == "succeeded", job.error
            results.append(job.result)
    first, second = results
    assert (first["images_imported"], first["labels_written"], first["images_added_to_dataset"]) == (3, 3, 3)
    assert sorted(first["classes_created"]) == ["cats", "dogs"]
    errors = {e["file"]: e["error"] for e in first["errors"]}
    assert set(errors) == {"../../escape.jpg", "pets/dogs/broken.jpg"}
    assert (second["images_imported"], second["duplicates_skipped"], second["labels_written"],
            second["images_added_to_dataset"], second["classes_created"]) == (0, 3, 0, 0, [])
    with stack.session() as session:
        assert dataset_state(session, dataset_id) == {
            "a.jpg": ("unassigned", ("cats",)), "b.JPG": ("unassigned", ("cats",)),
            "c.Jpeg": ("unassigned", ("dogs",))}
        assert session.scalar(select(func.count()).select_from(ClsImage)) == 3
        assert session.scalar(select(ClsImage.source).limit(1)) == "dataset_import"
        dataset = session.get(ClsDataset, dataset_id)
        assert (dataset.image_count, dataset.labeled_image_count) == (3, 3)
        assert {c.name: c.image_count for c in session.scalars(select(ClsClass))} == {"cats": 2, "dogs": 1}
    keys = stored_keys(stack)
    assert len(keys) == 6 and all(k.startswith(("images/", "thumbs/")) for k in keys)  # archive removed too


def test_split_folders_keep_their_split(embedded_stack):
    from tests.factories import make_dataset

    archive = build_zip({"train/cats/a.jpg": jpeg(1), "train/dogs/b.jpg": jpeg(2), "valid/cats/c.jpg": jpeg(3),
                         "test/dogs/d.jpg": jpeg(4)})
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "split").id
    summary = run_archive_import(actor=ADMIN, source=io.BytesIO(archive), dataset_id=dataset_id)
    assert summary["format"] == "split_folders" and summary["images_imported"] == 4
    with embedded_stack.session() as session:
        assert dataset_state(session, dataset_id) == {
            "a.jpg": ("train", ("cats",)), "b.jpg": ("train", ("dogs",)), "c.jpg": ("val", ("cats",)),
            "d.jpg": ("test", ("dogs",))}


def test_multilabel_csv_into_multi_label_dataset(stack):
    from tests.factories import make_dataset

    archive = build_zip({
        "train/_classes.csv": "\ufefffilename;cat;dog\na.jpg;1;1\nb.jpg;0;1\nghost.jpg;1;0\nb.jpg;1;1\n",
        "train/a.jpg": jpeg(1), "train/b.jpg": jpeg(2), "train/c.jpg": jpeg(3),
    })
    with stack.session() as session:
        dataset_id = make_dataset(session, "multi", task_type="multi_label").id
    summary = run_archive_import(actor=ADMIN, source=io.BytesIO(archive), dataset_id=dataset_id)
    assert summary["format"] == "multilabel_csv"
    assert (summary["images_imported"], summary["labels_written"]) == (3, 3)
    assert sorted(e["error"].split(":")[0] for e in summary["errors"]) == ["not listed in the CSV; imported unlabeled",
                                                                          "row 4", "row 5"]
    with stack.session() as session:
        assert dataset_state(session, dataset_id) == {
            "a.jpg": ("train", ("cat", "dog")), "b.jpg": ("train", ("dog",)), "c.jpg": ("train", ())}


def test_label_csv_multi_labels_refused_in_single_label_dataset(embedded_stack):
    from tests.factories import make_dataset

    archive = build_zip({"labels.csv": "filename,label\na.jpg,cat\na.jpg,dog\nb.jpg,dog\n",
                         "a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "single").id
    summary = run_archive_import(actor=ADMIN, source=io.BytesIO(archive), dataset_id=dataset_id)
    assert summary["format"] == "label_csv" and summary["images_imported"] == 2
    assert [e["file"] for e in summary["errors"]] == ["a.jpg"]
    assert "single-label" in summary["errors"][0]["error"]
    with embedded_stack.session() as session:
        assert dataset_state(session, dataset_id) == {"a.jpg": ("unassigned", ()), "b.jpg": ("unassigned", ("dog",))}


def test_mapping_to_existing_new_and_skip_and_bad_class_names(stack):
    from core.models import ClsClass
    from tests.factories import make_class, make_dataset

    long_name = "x" * 300
    archive = build_zip({"cats/a.jpg": jpeg(1), "Dogs/b.jpg": jpeg(2), "birds/c.jpg": jpeg(3),
                         "<b onclick=x>/d.jpg": jpeg(4), f"{long_name}/e.jpg": jpeg(5), "  /f.jpg": jpeg(6),
                         "fish/g.jpg": jpeg(7)})
    with stack.session() as session:
        felines = make_class(session, "felines")
        make_class(session, "dogs")  # same name in another case: matched by default
        dataset_id, felines_id = make_dataset(session, "mapped").id, felines.id
    preview = preview_archive(io.BytesIO(archive))
    assert {c["name"]: c["problem"] is not None for c in preview["classes"]}[long_name]
    mapping = [ClassMapping(source_name="cats", target_class_id=str(felines_id)),
               ClassMapping(source_name="birds", create_new=True, color="#112233", new_name="Aves"),
               ClassMapping(source_name="fish", skip=True),
               ClassMapping(source_name="<b onclick=x>", create_new=True, new_name="bold")]
    summary = run_archive_import(actor=ADMIN, source=io.BytesIO(archive), dataset_id=dataset_id, class_mapping=mapping)
    assert summary["images_imported"] == 4 and summary["skipped_by_mapping"] == 3
    assert sorted(summary["classes_created"]) == ["Aves", "bold"]
    refused = {e["file"]: e["error"] for e in summary["errors"]}
    assert "300 characters" in refused[long_name] and "empty" in refused[""]
    with stack.session() as session:
        assert dataset_state(session, dataset_id) == {"a.jpg": ("unassigned", ("felines",)),
                                                      "b.jpg": ("unassigned", ("dogs",)),
                                                      "c.jpg": ("unassigned", ("Aves",)),
                                                      "d.jpg": ("unassigned", ("bold",))}
        assert session.scalar(select(ClsClass.color).where(ClsClass.name == "Aves")) == "#112233"
        assert session.scalar(select(func.count()).select_from(ClsClass)) == 4

    html = [ClassMapping(source_name="birds", create_new=True, new_name="<script>x</script>")]
    with pytest.raises(InvalidInput, match="HTML"):
        run_archive_import(actor=ADMIN, source=io.BytesIO(archive), dataset_id=dataset_id, class_mapping=html)


@pytest.mark.parametrize("payload, message", [(b"plain text", "not a ZIP"), (None, "encrypted")])
def test_bad_archive_is_refused_before_any_job(embedded_stack, payload, message):
    from core.imports.archive import start_archive_import
    from core.models import ClsJob
    from tests.factories import make_dataset
    from tests.test_archives import patch_headers

    if payload is None:
        payload = patch_headers(build_zip({"cats/a.jpg": jpeg(1)}), "cats/a.jpg", flag_bits=0x1)
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "refused").id
    with pytest.raises(InvalidInput, match=message):
        start_archive_import(actor=ADMIN, source=io.BytesIO(payload), request=ImportLabeledDatasetRequest(dataset_id=str(dataset_id)))
    with embedded_stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsJob)) == 0
    assert stored_keys(embedded_stack) == []


# ------------------------------------------------------------------ CLI


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    from core.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def test_cli_preview_and_zip_import_with_map_and_skip(embedded_stack, tmp_path, capsys):
    from tests.factories import make_dataset

    path = tmp_path / "pets.zip"
    path.write_bytes(build_zip({"cats/a.jpg": jpeg(1), "dogs/b.jpg": jpeg(2), "birds/c.jpg": jpeg(3)}))
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "cli pets").id
    code, preview, _ = run_cli(capsys, "import", "preview", str(path))
    assert code == 0 and preview["format"] == "folder_per_class"
    assert [c["name"] for c in preview["classes"]] == ["birds", "cats", "dogs"]
    code, summary, err = run_cli(capsys, "import", "zip", str(path), "--dataset", "cli pets",
                                 "--map", "cats=felines", "--skip", "dogs")
    assert code == 0, err
    assert (summary["images_imported"], summary["labels_written"], summary["skipped_by_mapping"]) == (2, 2, 1)
    assert sorted(summary["classes_created"]) == ["birds", "felines"]
    with embedded_stack.session() as session:
        assert dataset_state(session, dataset_id) == {"a.jpg": ("unassigned", ("felines",)),
                                                      "c.jpg": ("unassigned", ("birds",))}


@pytest.mark.parametrize("argv, message", [
    (["import", "zip", "{text}", "--dataset", "cli"], "not a ZIP"),
    (["import", "zip", "{missing}", "--dataset", "cli"], "no such file"),
    (["import", "zip", "{zip}", "--dataset", "nobody"], "no dataset named 'nobody'; add --create"),
    (["import", "zip", "{zip}", "--dataset", "cli", "--map", "cats"], "write SRC=DST"),
    (["import", "zip", "{zip}"], "--dataset"),
])
def test_cli_bad_input_is_one_line(embedded_stack, tmp_path, capsys, argv, message):
    from tests.factories import make_dataset

    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "ok.zip").write_bytes(build_zip({"cats/a.jpg": jpeg(1)}))
    with embedded_stack.session() as session:
        make_dataset(session, "cli")
    paths = {"text": tmp_path / "notes.txt", "missing": tmp_path / "nope.zip", "zip": tmp_path / "ok.zip"}
    code, out, err = run_cli(capsys, *[a.format(**paths) for a in argv])
    assert code == 2 and out is None
    assert message in err and err.count("\n") == 1


def test_cli_zip_creates_multi_label_dataset(embedded_stack, tmp_path, capsys):
    from core.models import ClsDataset

    path = tmp_path / "multi.zip"
    path.write_bytes(build_zip({"_classes.csv": "filename,red,round\na.jpg,1,1\n", "a.jpg": jpeg(1)}))
    code, summary, err = run_cli(capsys, "import", "zip", str(path), "--dataset", "new multi", "--create",
                                 "--task", "multi_label")
    assert code == 0, err
    assert (summary["format"], summary["images_imported"], summary["labels_written"]) == ("multilabel_csv", 1, 2)
    with embedded_stack.session() as session:
        dataset = session.scalars(select(ClsDataset)).one()
        assert (dataset.name, dataset.task_type, dataset.labeled_image_count) == ("new multi", "multi_label", 1)


def test_archive_of_a_job_cancelled_before_it_ran_is_removed_later(embedded_stack):
    from core.imports.archive import start_archive_import
    from core.jobs.rows import create_job, request_cancel
    from tests.factories import make_dataset

    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "orphans").id
        never_ran = create_job(session=session, kind="dataset_import", params={}, actor=ADMIN)
        request_cancel(actor=ADMIN, session=session, job_id=never_ran.id)
    embedded_stack.storage.put(f"imports/{never_ran.id}.zip", b"left behind")
    start_archive_import(actor=ADMIN, source=io.BytesIO(build_zip({"cats/a.jpg": jpeg(1)})),
                         request=ImportLabeledDatasetRequest(dataset_id=str(dataset_id)))
    embedded_stack.drain_jobs()
    assert [k for k in stored_keys(embedded_stack) if k.startswith("imports/")] == []


def test_failed_job_hook_removes_its_archive(embedded_stack):
    from jobs.dataset_imports import on_job_failed

    embedded_stack.storage.put("imports/abc.zip", b"zip")
    on_job_failed("abc", {"archive_key": "imports/abc.zip"}, "worker died")
    on_job_failed("def", {"kind": "products"}, "worker died")  # source imports have no archive
    assert stored_keys(embedded_stack) == []


def test_start_refuses_a_mapping_that_creates_a_bad_class(embedded_stack):
    from core.imports.archive import start_archive_import
    from tests.factories import make_dataset

    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "bad mapping").id
    request = ImportLabeledDatasetRequest(dataset_id=str(dataset_id), class_mapping=[
        ClassMapping(source_name="cats", create_new=True, new_name="   ")])
    with pytest.raises(InvalidInput, match="new class for 'cats': class name is empty"):
        start_archive_import(actor=ADMIN, source=io.BytesIO(build_zip({"cats/a.jpg": jpeg(1)})), request=request)
    assert stored_keys(embedded_stack) == []
