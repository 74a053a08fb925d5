"""What the pages ask of the embedding index, read-only: which index serves them (and, when there is
none, why: never built, building, failed), and "more like this" for one image, with the thumbnails
and, inside a dataset, only that dataset's images. Search itself is core.similarity.search."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.datasets.grid import GridItem
from core.db import session_scope
from core.errors import InvalidInput
from core.labeling.labels import labels_for_images
from core.ml.data import decode_image
from core.models import ClsClass, ClsDatasetImage, ClsEmbeddingIndex, ClsImage, ClsLabel
from core.prediction.label_errors import stored_issues
from core.similarity import search
from core.similarity.embeddings import _embedder, describe, find_index
from core.similarity.projection import stored_map
from core.similarity.search import MAX_K, similar_images
from core.storage import get_storage
from core.training.registry import list_models

DEFAULT_BACKBONE = "convnext/atto"
"""The backbone a page offers when no index exists (the smallest family member; its weights from the
hub, or random where the hub cannot be reached: see core.similarity.embedder)."""

WIDEN = 4
"""Inside a dataset, the library search asks for k·WIDEN neighbours (at most MAX_K) and keeps the
dataset's: a dataset that holds a quarter of the library still gets k."""


def index_state(*, session: Session) -> dict[str, Any]:
    """The index the pages search (the newest with vectors), and the state of every index: `ready`
    True when searching works; `building` names a running job; `message` says what a user can do."""
    rows = list(session.scalars(select(ClsEmbeddingIndex).order_by(ClsEmbeddingIndex.updated_at.desc())))
    described = [describe(session=session, row=row) for row in rows]
    usable = [d for d in described if d["count"]]
    building = [d for d in described if d["status"] == "building"]
    state = {"index": usable[0] if usable else None, "indexes": described, "ready": bool(usable),
             "building": building[0] if building else None}
    if usable:
        state["message"] = None
    elif building:
        state["message"] = f"The embeddings job for {building[0]['source']} is running; similar images appear when it ends."
    elif any(d["status"] == "failed" for d in described):
        failed = next(d for d in described if d["status"] == "failed")
        state["message"] = f"The last embeddings job ({failed['source']}) failed: {failed['error']}. Start it again."
    else:
        state["message"] = ("No embedding index yet: similar images need one vector per image, computed once by the "
                            "embeddings job (new images are added by running it again).")
    return state


WARM_WAIT_S = 3.0
"""How long a page waits for its index to load before saying it is loading (small ones are done)."""

_warming: dict[tuple[int, uuid.UUID], threading.Thread] = {}
_warming_lock = threading.Lock()


def warm_index(session: Session, *, storage=None, wait_s: float = WARM_WAIT_S) -> bool:
    """Whether this process holds the searched index, caught up; if not, it is loaded in a thread
    (once per index and process) and this waits up to `wait_s`. The first load builds the ANN graph
    (100 s for 100,000 vectors on the shared 2-core machine): a page says so instead of freezing."""
    row = find_index(session=session)
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    held = search._loaded.get(engine, {}).get(row.id)
    if held is not None and sum(held.loaded) >= row.count:
        return True
    if storage is None:
        storage = get_storage()
    index_id = row.id

    def load() -> None:
        with session_scope() as own:
            search.loaded_index(own, storage, own.get(ClsEmbeddingIndex, index_id))

    with _warming_lock:
        thread = _warming.get((id(engine), index_id))
        if thread is None or not thread.is_alive():
            thread = _warming[(id(engine), index_id)] = threading.Thread(target=load, daemon=True,
                                                                         name=f"load-index-{index_id}")
            thread.start()
    thread.join(wait_s)
    return not thread.is_alive()


def embedding_choices(*, session: Session) -> list[dict[str, str | None]]:
    """What a page offers to embed the library with: each active registered model (its own network),
    then the default backbone with hub weights, then with random weights (no download: near copies
    only). Each {model, weights, label}, as start_embedding takes them."""
    models = [{"model": str(row.id), "weights": None, "label": f"{row.name} · {row.model_type}/{row.model_size}"}
              for row in list_models(session=session, active_only=True)]
    return [*models,
            {"model": DEFAULT_BACKBONE, "weights": "hub", "label": f"{DEFAULT_BACKBONE} · ImageNet weights (hub)"},
            {"model": DEFAULT_BACKBONE, "weights": "none",
             "label": f"{DEFAULT_BACKBONE} · random weights (no download; finds near copies only)"}]


def more_like_this(session: Session, *, image_id: uuid.UUID, k: int = 24, min_similarity: float = 0.0,
                   dataset_id: uuid.UUID | None = None, storage=None) -> list[dict[str, Any]]:
    """The images most similar to `image_id`, best first: {id, similarity, filename, thumbnail_path};
    with `dataset_id`, only that dataset's images. NotFound when no index exists; InvalidInput when
    the image is not embedded yet."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
    asked = min(MAX_K, k * WIDEN) if dataset_id is not None else k
    found = similar_images(session, image_id=image_id, k=asked, min_similarity=min_similarity, storage=storage)
    ids = [match["id"] for match in found]
    if dataset_id is not None and ids:
        members = set(session.scalars(select(ClsDatasetImage.image_id).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(ids))))
        found = [match for match in found if match["id"] in members]
    return _with_thumbnails(session, found[:k])


def similar_to_image(session: Session, *, data: bytes, k: int = 24, min_similarity: float = 0.0,
                     storage=None) -> list[dict[str, Any]]:
    """The library images most similar to an image that is not in it (an upload on the Predict page),
    embedded by the index's own model, loaded once per process; as more_like_this returns them."""
    if storage is None:
        storage = get_storage()
    row = find_index(session=session)
    embedder = _query_embedder(row.source, storage)
    image = decode_image(data, mode=embedder.mode, name="the image")  # a broken file: InvalidInput naming it
    found = similar_images(session, vector=embedder.embed([image])[0], k=k, min_similarity=min_similarity,
                           source=row.source, storage=storage)
    return _with_thumbnails(session, found)


_embedders: dict[str, Any] = {}
_embedders_lock = threading.Lock()


def _query_embedder(source: str, storage):
    with _embedders_lock:
        if source not in _embedders:
            _embedders[source] = _embedder(source, storage, threads=None)
        return _embedders[source]


def _with_thumbnails(session: Session, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    thumbs = dict(session.execute(select(ClsImage.id, ClsImage.thumbnail_path)
                                  .where(ClsImage.id.in_([m["id"] for m in found]))).all()) if found else {}
    return [{**match, "thumbnail_path": thumbs.get(match["id"])} for match in found]


# ---------------------------------------------------------------- the map of a dataset

COLOUR_BY = {"class": "Class", "split": "Split", "prediction": "Prediction (AI label)",
             "disagreement": "Label-error finder disagrees", "label_error": "Label-error score"}
MAX_MAP_POINTS = 50_000
"""Points drawn at once (a seeded sample beyond): Scattergl draws more, but each rerun ships them."""
HOVER_NAMES_MAX = 10_000
"""File names (shown on hover) are read for at most this many points: beyond, hovering shows the class."""


def dataset_map(session: Session, *, dataset_id: uuid.UUID, colour_by: str = "class",
                max_points: int = MAX_MAP_POINTS, storage=None) -> dict[str, Any]:
    """A dataset's images on the stored map of the index: columns `ids`, `x`, `y`, `colour` (text, or a
    score in 0..1 with None for unscored when `scored`), `names` (empty past HOVER_NAMES_MAX);
    `missing` counts the dataset's images the map lacks (embedded after it was computed, or not yet);
    `map` is None when no map exists."""
    import numpy as np

    if colour_by not in COLOUR_BY:
        raise InvalidInput(f"colour by {colour_by!r}: one of {', '.join(COLOUR_BY)}")
    if storage is None:
        storage = get_storage()
    stored = stored_map(session=session, storage=storage)
    if stored is None:
        return {"map": None}
    position = {value.tobytes().hex(): row for row, value in enumerate(stored["ids"])}
    # Ids read as 32-digit hex text: building 50,000 uuid.UUID objects was a second of the read; and
    # membership alone, with no join to the library (the join was most of the rest).
    members = session.execute(select(_hex(ClsDatasetImage.image_id), ClsDatasetImage.split)
                              .where(ClsDatasetImage.dataset_id == dataset_id)).all()
    placed = [(key, split, position[key]) for key, split in members if key in position]
    total = len(placed)
    if total > max_points:
        keep = np.sort(np.random.default_rng(0).choice(total, max_points, replace=False))
        placed = [placed[i] for i in keep]
    rows = np.array([p for _key, _split, p in placed], dtype=np.int64)
    xy = stored["xy"][rows].round(4) if len(rows) else np.zeros((0, 2), dtype=np.float32)  # shorter JSON
    names: dict[str, str] = {}
    if len(placed) <= HOVER_NAMES_MAX:
        names = dict(session.execute(select(_hex(ClsImage.id), ClsImage.original_filename)
                                     .join(ClsDatasetImage, ClsDatasetImage.image_id == ClsImage.id)
                                     .where(ClsDatasetImage.dataset_id == dataset_id)).all())
    ids = [_dashed(key) for key, _split, _p in placed]
    colours, scored = _colours(session, storage, dataset_id, placed, ids, colour_by)
    return {"map": {"method": stored["method"], "count": stored["count"], "index_count": stored["index_count"],
                    "source": stored["source"]},
            "ids": ids, "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(),
            "names": [names.get(key) or "" for key, _split, _p in placed], "colour": colours, "scored": scored,
            "total": total, "missing": len(members) - total}


def _hex(column):
    """A uuid column as 32 lower-case hex digits, the same on SQLite (stored so) and Postgres."""
    from sqlalchemy import String, cast, func

    return func.lower(func.replace(cast(column, String), "-", ""))


def _dashed(key: str) -> str:
    return f"{key[:8]}-{key[8:12]}-{key[12:16]}-{key[16:20]}-{key[20:]}"


def _colours(session: Session, storage, dataset_id: uuid.UUID, placed: list, ids: list[str],
             colour_by: str) -> tuple[list, bool]:
    """One colour value per placed member ((hex id, split, position)); `ids` are their dashed ids."""
    if colour_by == "split":
        return [split or "unassigned" for _key, split, _p in placed], False
    if colour_by in ("class", "prediction"):
        names = dict(session.execute(select(_hex(ClsClass.id), ClsClass.name)).all())
        query = select(_hex(ClsLabel.image_id), _hex(ClsLabel.class_id)).where(ClsLabel.dataset_id == dataset_id)
        if colour_by == "prediction":
            query = query.where(ClsLabel.is_ai_generated.is_(True))
        per_image: dict[str, list[str]] = {}
        for image_key, class_key in session.execute(query):
            per_image.setdefault(image_key, []).append(names.get(class_key, "?"))
        empty = "unlabeled" if colour_by == "class" else "no prediction"
        return [", ".join(sorted(per_image.get(key, []))) or empty for key, _split, _p in placed], False

    result = stored_issues(storage=storage, dataset_id=dataset_id)
    issues = {issue["image_id"]: issue for issue in (result or {}).get("issues", [])}
    if colour_by == "disagreement":
        other = "not flagged" if result else "not checked (run the label-error finder)"
        return [f"suggests {issues[i]['suggested']}" if i in issues else other for i in ids], False
    return [round(1.0 - issues[i]["label_quality"], 4) if i in issues else None for i in ids], True


def selected_items(session: Session, *, dataset_id: uuid.UUID, image_ids: list[uuid.UUID]) -> list:
    """The dataset grid's tiles (core.datasets.grid.GridItem, labels included) of chosen images of a
    dataset, in the order given: a map or similarity selection drawn as grid tiles."""
    rows = {image.id: (link, image) for link, image in session.execute(
        select(ClsDatasetImage, ClsImage).join(ClsImage, ClsImage.id == ClsDatasetImage.image_id)
        .where(ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(image_ids))).all()}
    labels = labels_for_images(session=session, dataset_id=dataset_id, image_ids=list(rows))
    return [GridItem(image_id=image.id, filename=image.original_filename or image.filename,
                     storage_path=image.storage_path, thumbnail_path=image.thumbnail_path, width=image.width,
                     height=image.height, split=link.split, status=link.status, label_revision=link.label_revision,
                     labels=labels[image.id]) for link, image in (rows[i] for i in image_ids if i in rows)]
