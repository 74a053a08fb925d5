"""Splits are the user's: an archive with its own train/valid/test folders keeps exactly those counts
through import, version and training, on a single-label and a multi-label archive whose images include
near duplicates across splits (reported, with the explicit join offered, never moved).

Images are real photos that ship with scikit-image (crops of the cat, coffee, astronaut, camera and
texture photos); the near duplicates are JPEG re-encodes with a brightness change, put in another
split than their original, as happens when a dataset was assembled by hand.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from tests.factories import ADMIN
from tests.model_factory import small_torch_settings

SOURCES = {  # class: (photo names, grayscale)
    "cat": (["chelsea"], False), "cup": (["coffee"], False),
    "person": (["astronaut", "camera"], None), "texture": (["brick", "grass", "gravel"], True),
}
PER_CLASS = {"train": 6, "valid": 2, "test": 2}
PLANTED = [("cat", "valid"), ("cup", "test"), ("texture", "valid")]  # a train image's near copy lands here
TINY = {"model_type": "convnext", "model_size": "atto", "image_size": 32, "pretrained": False, "epochs": 1,
        "batch_size": 4, "warmup_epochs": 0, "augmentation_preset": "light", "export_formats": []}


@pytest.fixture(autouse=True)
def small_torch(tmp_path, monkeypatch):
    yield from small_torch_settings(tmp_path, monkeypatch)


def _photo(name: str) -> Image.Image:
    import skimage.data

    pixels = getattr(skimage.data, name)()
    image = Image.fromarray(pixels)
    return image.convert("RGB")


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo_set() -> list[dict]:
    """40 distinct crops (10 per class) with their split, and 3 near copies of train crops in val/test."""
    rng = np.random.default_rng(7)
    items = []
    for cls, (names, _gray) in SOURCES.items():
        crops = []
        for index in range(sum(PER_CLASS.values())):
            name = names[index % len(names)]
            photo = _photo(name)
            side = min(photo.size) // 2
            x, y = (int(rng.integers(0, photo.size[0] - side)), int(rng.integers(0, photo.size[1] - side)))
            crops.append((name, photo.crop((x, y, x + side, y + side)).resize((96, 96))))
        splits = [s for s, n in PER_CLASS.items() for _ in range(n)]
        for index, ((name, crop), split) in enumerate(zip(crops, splits, strict=True)):
            items.append({"cls": cls, "split": split, "file": f"{cls}_{index}.jpg", "data": _jpeg(crop),
                          "gray": name in ("camera", "brick", "grass", "gravel")})
        for planted_cls, split in PLANTED:
            if planted_cls == cls:
                name, crop = crops[0]  # a train crop
                copy = ImageEnhance.Brightness(crop).enhance(1.06)
                items.append({"cls": cls, "split": split, "file": f"{cls}_copy.jpg", "data": _jpeg(copy, 75),
                              "gray": name in ("camera", "brick", "grass", "gravel"), "copy_of": f"{cls}_0.jpg"})
    return items


def folder_archive(items: list[dict]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for item in items:
            archive.writestr(f"photos/{item['split']}/{item['cls']}/{item['file']}", item["data"])
    return buffer.getvalue()


def multilabel_archive(items: list[dict]) -> bytes:
    """Roboflow's layout: <split>/_classes.csv (filename + one 0/1 column per class) beside the images;
    each photo carries its subject and whether it is grayscale."""
    columns = [*SOURCES, "grayscale"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for split in PER_CLASS:
            rows = [item for item in items if item["split"] == split]
            lines = ["filename," + ",".join(columns)]
            lines += [item["file"] + "," + ",".join(str(int(c == item["cls"] or (c == "grayscale" and item["gray"])))
                                                    for c in columns) for item in rows]
            archive.writestr(f"{split}/_classes.csv", "\n".join(lines) + "\n")
            for item in rows:
                archive.writestr(f"{split}/{item['file']}", item["data"])
    return buffer.getvalue()


def expected_counts(items: list[dict]) -> dict[str, int]:
    counts = Counter({"valid": "val"}.get(item["split"], item["split"]) for item in items)
    return {split: counts[split] for split in ("train", "val", "test")}


@pytest.mark.parametrize("task_type", ["single_label", "multi_label"])
def test_archive_splits_survive_import_version_and_training(db_stack, tmp_path, task_type):
    from core.datasets.dataset import create_dataset
    from core.datasets.split_checks import version_warnings
    from core.datasets.splits import split_stats
    from core.datasets.versions import create_version, read_manifest
    from core.imports.archive import run_archive_import
    from core.models import ClsDatasetImage, ClsImage
    from core.training.runs import create_run, get_run, start_run

    stack = db_stack
    items = photo_set()
    archive = tmp_path / "photos.zip"
    archive.write_bytes(folder_archive(items) if task_type == "single_label" else multilabel_archive(items))
    expected = expected_counts(items)
    assert expected == {"train": 24, "val": 10, "test": 9}
    with stack.session() as session:
        dataset_id = create_dataset(session=session, actor=ADMIN, name=f"photos-{task_type}", task_type=task_type).id
    summary = run_archive_import(actor=ADMIN, source=archive, dataset_id=dataset_id, skip_duplicates=False,
                                 storage=stack.storage)
    assert not summary["errors"], summary["errors"]

    def splits_by_file() -> dict[str, str]:
        from sqlalchemy import select

        with stack.session() as session:
            return dict(session.execute(select(ClsImage.original_filename, ClsDatasetImage.split).join(
                ClsDatasetImage, ClsDatasetImage.image_id == ClsImage.id)
                .where(ClsDatasetImage.dataset_id == dataset_id)).tuples().all())

    archive_splits = {item["file"].split("/")[-1]: {"valid": "val"}.get(item["split"], item["split"])
                      for item in items}
    after_import = splits_by_file()
    assert after_import == archive_splits  # import: exactly the archive's folders
    with stack.session() as session:
        assert split_stats(session=session, dataset_id=dataset_id)["labeled"] == {**expected, "unassigned": 0}
        warnings = version_warnings(session=session, dataset_id=dataset_id, storage=stack.storage)
    straddling = warnings["straddling_duplicates"]
    reported = [{member["filename"] for member in group} for group in straddling["examples"]]
    for cls, _split in PLANTED:  # every planted copy is reported with its original, by file name
        assert any({f"{cls}_0.jpg", f"{cls}_copy.jpg"} <= group for group in reported), reported
    assert straddling["count"] >= len(PLANTED)

    with stack.session() as session:
        version = create_version(session=session, actor=ADMIN, storage=stack.storage, dataset_id=dataset_id)
        version_id, class_names = version.id, list(version.class_names)
        assert version.split_counts == expected  # version: not one image moved
        manifest = read_manifest(storage=stack.storage, version=version)
    assert splits_by_file() == archive_splits
    archive_classes = [*SOURCES, *(["grayscale"] if task_type == "multi_label" else [])]
    assert class_names == sorted(archive_classes)  # the label space: the archive's classes in its (name) order

    with stack.session() as session:
        run_id = create_run(session=session, actor=ADMIN, version_id=version_id, config=TINY).id
    start_run(actor=ADMIN, run_id=run_id, inline=True)
    with stack.session() as session:
        run = get_run(session=session, run_id=run_id)
        assert run.status == "completed", run.error_message
        from core.models import ClsTrainedModel

        model = session.query(ClsTrainedModel).filter_by(training_run_id=run_id).one()
        predictions = json.loads(stack.storage.get(model.predictions_key))
    trained = Counter(line["split"] for line in manifest)
    assert dict(trained) == expected  # training read exactly these splits
    assert len(predictions["splits"]["val"]["probs"]) == expected["val"]
    assert len(predictions["splits"]["test"]["probs"]) == expected["test"]
