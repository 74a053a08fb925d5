"""Issue 14, archive conflicts: the same bytes under two class folders used to end with the last
folder's label and no word. Now the preview (service, CLI, Import page) lists them, the summary's
`label_conflicts` names files and classes, and the choice is explicit: `first` (the first copy in
archive order labels every copy) or `skip` (no copy labeled). A CRC-32 collision of different bytes is
not a conflict (SHA-256 confirms); multi-label datasets merge instead (not conflicts)."""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib

import pytest
from sqlalchemy import select

from core.errors import InvalidInput
from core.imports.archive import ImportLabeledDatasetRequest, preview_archive, run_archive_import
from tests.factories import ADMIN, drawn_image_bytes, make_dataset
from tests.hostile.tally import TALLY
from tests.test_archive_import import build_zip, run_cli


def jpeg(seed: int) -> bytes:
    return drawn_image_bytes(seed, size=(48, 48), fmt="JPEG")


def crc_twin(original: bytes, other: bytes) -> tuple[bytes, bytes]:
    """`original` and `other`, each with 4 bytes after the JPEG's end (ignored by decoders), of equal
    size and equal CRC-32 though different: what the ZIP directory alone cannot tell apart."""
    size = max(len(original), len(other))
    first = original + b"\0" * (size - len(original)) + b"\0\0\0\0"
    body = other + b"\0" * (size - len(other))
    # CRC-32 of equal-length inputs is affine in their bits: solve for the 4 bytes over GF(2).
    base = zlib.crc32(body + b"\0\0\0\0")
    columns = [zlib.crc32(body + (1 << bit).to_bytes(4, "little")) ^ base for bit in range(32)]
    rows = [(columns[bit], 1 << bit) for bit in range(32)]
    want, patch = zlib.crc32(first) ^ base, 0
    for pivot in range(32):
        index = next(i for i in range(pivot, 32) if rows[i][0] >> pivot & 1)
        rows[pivot], rows[index] = rows[index], rows[pivot]
        rows = [(v ^ rows[pivot][0], p ^ rows[pivot][1]) if i != pivot and v >> pivot & 1 else (v, p)
                for i, (v, p) in enumerate(rows)]
    for pivot in range(32):
        if want >> pivot & 1:
            patch ^= rows[pivot][1]
    second = body + patch.to_bytes(4, "little")
    assert zlib.crc32(first) == zlib.crc32(second) and len(first) == len(second) and first != second
    return first, second


X, Y, Z, W = jpeg(1), jpeg(2), jpeg(3), jpeg(4)
TWIN_A, TWIN_B = crc_twin(jpeg(5), jpeg(6))
ARCHIVE = {
    "pets/cats/a.jpg": X, "pets/dogs/a_copy.jpg": X,  # conflict 1: cats first
    "pets/dogs/b.jpg": Y, "pets/cats/b.jpg": Y, "pets/birds/b2.jpg": Y,  # conflict 2: dogs first, three copies
    "pets/cats/c.jpg": Z, "pets/cats/c_again.jpg": Z,  # same bytes, same class: a duplicate, no conflict
    "pets/dogs/d.jpg": W,
    "pets/cats/twin_a.jpg": TWIN_A, "pets/dogs/twin_b.jpg": TWIN_B,  # same CRC and size, different bytes
}
CONFLICTS = [{"files": ["pets/cats/a.jpg", "pets/dogs/a_copy.jpg"], "classes": ["cats", "dogs"]},
             {"files": ["pets/dogs/b.jpg", "pets/cats/b.jpg", "pets/birds/b2.jpg"], "classes": ["dogs", "cats", "birds"]}]


def labels_by_content(session, dataset_id) -> dict[str, tuple[str, ...]]:
    """{sha256 of the image's bytes: its sorted class names} in the dataset."""
    from core.models import ClsClass, ClsDatasetImage, ClsImage, ClsLabel

    state = {}
    for file_hash, image_id in session.execute(select(ClsImage.file_hash, ClsImage.id).join(
            ClsDatasetImage, ClsDatasetImage.image_id == ClsImage.id).where(ClsDatasetImage.dataset_id == dataset_id)):
        names = session.scalars(select(ClsClass.name).join(ClsLabel, ClsLabel.class_id == ClsClass.id).where(
            ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == image_id)).all()
        state[file_hash] = tuple(sorted(names))
    return state


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tally(files: dict[str, bytes], summary: dict, state: dict) -> None:
    """Every image entry is either in the dataset (by content) or named in the errors; the rest are lost."""
    images = {name: data for name, data in files.items() if isinstance(data, bytes)}
    TALLY.tried += len(images)
    reported = {e["file"] for e in summary["errors"]}
    lost = [name for name, data in images.items() if sha(data) not in state and name not in reported]
    TALLY.lost += lost
    assert not lost, lost


def test_the_zip_directory_cannot_tell_the_twins_apart():
    with zipfile.ZipFile(io.BytesIO(build_zip(ARCHIVE))) as archive:
        a, b = archive.getinfo("pets/cats/twin_a.jpg"), archive.getinfo("pets/dogs/twin_b.jpg")
        assert (a.CRC, a.file_size) == (b.CRC, b.file_size)


def test_preview_lists_each_conflict_with_files_and_classes():
    preview = preview_archive(io.BytesIO(build_zip(ARCHIVE)))
    TALLY.tried += len(ARCHIVE)
    assert preview["label_conflict_count"] == 2
    assert preview["label_conflicts"] == CONFLICTS  # archive order; the CRC twins are not among them
    assert {c["name"]: c["image_count"] for c in preview["classes"]} == {"birds": 1, "cats": 5, "dogs": 4}


@pytest.mark.parametrize("choice", ["first", "skip"])
def test_import_resolves_by_the_explicit_choice_and_reports_it(stack, choice):
    with stack.session() as session:
        dataset_id = make_dataset(session, f"pets {choice}").id
    summary = run_archive_import(actor=ADMIN, source=io.BytesIO(build_zip(ARCHIVE)), dataset_id=dataset_id,
                                 conflicts=choice)
    labeled_as = {"first": ["cats", "dogs"], "skip": ["", ""]}[choice]
    assert summary["conflicts"] == choice and summary["label_conflict_count"] == 2
    assert summary["label_conflicts"] == [{**c, "labeled_as": kept} for c, kept in zip(CONFLICTS, labeled_as, strict=True)]
    # X, Y, Z, W and the two twins are stored once each; the other four entries are exact duplicates.
    assert (summary["images_imported"], summary["duplicates_skipped"], summary["errors"]) == (6, 4, [])
    assert summary["labels_written"] == {"first": 6, "skip": 4}[choice]
    with stack.session() as session:
        state = labels_by_content(session, dataset_id)
    resolved = {"first": {sha(X): ("cats",), sha(Y): ("dogs",)}, "skip": {sha(X): (), sha(Y): ()}}[choice]
    assert state == {**resolved, sha(Z): ("cats",), sha(W): ("dogs",), sha(TWIN_A): ("cats",), sha(TWIN_B): ("dogs",)}
    tally(ARCHIVE, summary, state)


def test_first_labels_every_copy_when_duplicates_are_kept(embedded_stack):
    files = {"cats/a.jpg": X, "dogs/a.jpg": X, "dogs/d.jpg": W}
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "kept copies").id
    summary = run_archive_import(actor=ADMIN, source=io.BytesIO(build_zip(files)), dataset_id=dataset_id,
                                 skip_duplicates=False, conflicts="first")
    assert (summary["images_imported"], summary["label_conflict_count"]) == (3, 1)
    from core.models import ClsClass, ClsImage, ClsLabel

    with embedded_stack.session() as session:
        rows = session.execute(select(ClsImage.file_hash, ClsClass.name).join(ClsLabel, ClsLabel.image_id == ClsImage.id)
                               .join(ClsClass, ClsClass.id == ClsLabel.class_id)).all()
    assert sorted(rows) == sorted([(sha(X), "cats"), (sha(X), "cats"), (sha(W), "dogs")])
    TALLY.tried += len(files)


def test_classes_mapped_to_one_class_are_not_a_conflict(embedded_stack):
    files = {"cats/a.jpg": X, "Kitties/a.jpg": X}
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "mapped").id
    mapping = [{"source_name": "cats", "create_new": True, "new_name": "cat"},
               {"source_name": "Kitties", "create_new": True, "new_name": "cat"}]
    preview = preview_archive(io.BytesIO(build_zip(files)))
    summary = run_archive_import(actor=ADMIN, source=io.BytesIO(build_zip(files)), dataset_id=dataset_id,
                                 class_mapping=mapping, conflicts="skip")
    assert preview["label_conflict_count"] == 1  # by folder name, before the mapping is known
    assert summary["label_conflict_count"] == 0 and summary["label_conflicts"] == []
    with embedded_stack.session() as session:
        assert labels_by_content(session, dataset_id) == {sha(X): ("cat",)}
    TALLY.tried += len(files)


def test_multi_label_dataset_merges_instead_of_conflicting(stack):
    folders = {"cats/a.jpg": X, "indoor/a.jpg": X, "cats/c.jpg": Z}
    csv = {"_classes.csv": "filename,red,round\nr.jpg,1,0\nr_copy.jpg,0,1\nboth.jpg,1,1\n",
           "r.jpg": Y, "r_copy.jpg": Y, "both.jpg": W}
    for files, expected in ((folders, {sha(X): ("cats", "indoor"), sha(Z): ("cats",)}),
                            (csv, {sha(Y): ("red", "round"), sha(W): ("red", "round")})):
        with stack.session() as session:
            dataset_id = make_dataset(session, f"multi {len(expected)} {next(iter(files))}", task_type="multi_label").id
        summary = run_archive_import(actor=ADMIN, source=io.BytesIO(build_zip(files)), dataset_id=dataset_id,
                                     conflicts="skip")  # not used: merging is not a conflict
        assert (summary["label_conflict_count"], summary["label_conflicts"], summary["labels_merged"]) == (0, [], 1)
        with stack.session() as session:
            state = labels_by_content(session, dataset_id)
        assert state == expected
        tally(files, summary, state)


def test_an_unknown_choice_is_refused_before_anything_is_written(embedded_stack):
    from core.models import ClsImage

    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "refused").id
    TALLY.tried += 1
    with pytest.raises(InvalidInput, match="conflicts must be one of first, skip, not 'last'"):
        run_archive_import(actor=ADMIN, source=io.BytesIO(build_zip(ARCHIVE)), dataset_id=dataset_id, conflicts="last")
    with pytest.raises(ValueError, match="conflicts"):
        ImportLabeledDatasetRequest(dataset_id=str(dataset_id), conflicts="last")
    with embedded_stack.session() as session:
        assert session.scalars(select(ClsImage)).all() == []


def test_the_job_carries_the_choice(embedded_stack):
    from core.imports.archive import start_archive_import
    from core.models import ClsJob

    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "job").id
    request = ImportLabeledDatasetRequest(dataset_id=str(dataset_id), conflicts="skip")
    job_id = start_archive_import(actor=ADMIN, source=io.BytesIO(build_zip(ARCHIVE)), request=request)
    embedded_stack.drain_jobs()
    with embedded_stack.session() as session:
        job = session.get(ClsJob, job_id)
        assert job.status == "succeeded", job.error
        assert job.result["conflicts"] == "skip" and job.result["label_conflict_count"] == 2
        state = labels_by_content(session, dataset_id)
    assert state[sha(X)] == () and state[sha(Y)] == ()
    tally(ARCHIVE, job.result, state)


def test_cli_preview_lists_conflicts_and_zip_takes_the_choice(embedded_stack, tmp_path, capsys):
    path = tmp_path / "pets.zip"
    path.write_bytes(build_zip(ARCHIVE))
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "cli pets").id
    code, preview, _ = run_cli(capsys, "import", "preview", str(path))
    assert code == 0 and preview["label_conflicts"] == CONFLICTS
    code, summary, err = run_cli(capsys, "import", "zip", str(path), "--dataset", "cli pets", "--conflicts", "skip")
    assert code == 0, err
    assert summary["conflicts"] == "skip" and [c["files"] for c in summary["label_conflicts"]] == [c["files"] for c in CONFLICTS]
    with embedded_stack.session() as session:
        state = labels_by_content(session, dataset_id)
    assert state[sha(X)] == () and state[sha(W)] == ("dogs",)
    tally(ARCHIVE, summary, state)
    code, out, err = run_cli(capsys, "import", "zip", str(path), "--dataset", "cli pets", "--conflicts", "last")
    assert code == 2 and out is None and "--conflicts" in err and err.count("\n") == 1
    TALLY.tried += 1


def _tab_app():
    def app():
        from ui.import_tabs import labeled_dataset_tab

        labeled_dataset_tab()

    from streamlit.testing.v1 import AppTest

    return AppTest.from_function(app, default_timeout=60)


def test_import_page_lists_conflicts_and_offers_the_choice(embedded_stack):
    from core.models import ClsJob

    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "page pets").id
    app = _tab_app().run()
    app.file_uploader[0].set_value(("pets.zip", build_zip(ARCHIVE), "application/zip")).run()
    assert not app.exception
    assert "2 image(s) appear under different classes" in app.warning[0].value
    shown = app.dataframe[-1].value
    assert list(shown["files"]) == [" | ".join(c["files"]) for c in CONFLICTS]
    assert list(shown["classes"]) == [" | ".join(c["classes"]) for c in CONFLICTS]
    choice = next(r for r in app.radio if r.label == "Same image under different classes")
    assert choice.options == ["Label every copy with the first copy's class (archive order)",
                              "Leave these images unlabeled"]
    assert choice.value == "first"
    choice.set_value("skip").run()
    next(b for b in app.button if b.label.startswith("Import ")).click().run()
    assert not app.exception
    embedded_stack.drain_jobs()
    with embedded_stack.session() as session:
        job = session.scalars(select(ClsJob).where(ClsJob.parent_id.is_(None))).one()  # not its chunks' rows
        assert job.params["conflicts"] == "skip" and job.result["label_conflict_count"] == 2
        assert labels_by_content(session, dataset_id)[sha(X)] == ()
    TALLY.tried += len(ARCHIVE)


def test_import_page_without_conflicts_shows_no_choice(embedded_stack):
    with embedded_stack.session() as session:
        make_dataset(session, "plain")
    app = _tab_app().run()
    app.file_uploader[0].set_value(("plain.zip", build_zip({"cats/a.jpg": X, "dogs/d.jpg": W}), "application/zip")).run()
    assert not app.exception and not app.warning
    assert all(r.label != "Same image under different classes" for r in app.radio)
