"""Embedding indexes as jobs: which model makes the vectors (a registered model, or a families-table
backbone with its weights), the index row of each, and the job that embeds every library image the
index lacks, appending float16 shards (core.similarity.shards) and recording them shard by shard.

A second run embeds only the images added since (the ids already in the shards are skipped), so a
run cut short keeps every shard it recorded. One run per index at a time: the row names its job."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import session_scope
from core.errors import Conflict, InvalidInput, JobCancelled, NotFound
from core.ids import as_uuid
from core.jobs.queue import enqueue
from core.ml.data import cache_dir, decode_image
from core.ml.families import get_spec
from core.ml.inference import load_checkpoint_model, local_copy
from core.models import ClsEmbeddingIndex, ClsImage, ClsJob
from core.permissions import requires
from core.similarity import shards
from core.similarity.embedder import Embedder, backbone
from core.storage import get_storage
from core.training.registry import get_model
from core.users import User

log = logging.getLogger(__name__)

EMBEDDING_JOB_KIND = "embeddings"
BATCH_IMAGES = 32
"""Images per forward pass."""

WEIGHT_SOURCES = ("none", "hub", "file:…", "storage:…")


def parse_source(model: str, weights: str | None = None) -> str:
    """The canonical source of a --model/--weights pair: "model:<id>" for a registered model (its own
    weights), "timm:<family>/<size>@<weights>" for a families-table backbone."""
    text = (model or "").strip()
    if text.startswith("model:") or _looks_like_uuid(text):
        if weights:
            raise InvalidInput("--weights applies to a family/size backbone, not to a registered model")
        return f"model:{as_uuid(text.removeprefix('model:'), 'model id')}"
    family, slash, size = text.removeprefix("timm:").partition("/")
    if not slash:
        raise InvalidInput(f"--model {model!r}: a registered model id, or family/size (e.g. convnext/atto)")
    get_spec(family, size)
    weights = (weights or "hub").strip()
    if weights not in ("none", "hub") and not weights.startswith(("file:", "storage:")):
        raise InvalidInput(f"--weights {weights!r}: one of {', '.join(WEIGHT_SOURCES)}")
    return f"timm:{family}/{size}@{weights}"


def _looks_like_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def find_index(*, session: Session, source: str | None = None) -> ClsEmbeddingIndex:
    """The index of a source, or (no source) the one index with vectors, newest first."""
    if source:
        row = session.scalar(select(ClsEmbeddingIndex).where(ClsEmbeddingIndex.source == source))
        if row is None:
            raise NotFound(f"no embedding index for {source}; run `python -m core similar embed --model …` first")
        return row
    row = session.scalar(select(ClsEmbeddingIndex).where(ClsEmbeddingIndex.count > 0)
                         .order_by(ClsEmbeddingIndex.updated_at.desc()))
    if row is None:
        raise NotFound("no embedding index yet; run `python -m core similar embed --model …` first")
    return row


def index_status(*, session: Session, row: ClsEmbeddingIndex) -> str:
    """The row's status, with "building" read as "interrupted" once its job is no longer active."""
    if row.status == "building":
        job = session.get(ClsJob, row.job_id) if row.job_id else None
        if job is None or job.status not in ("queued", "running"):
            return "interrupted"
    return row.status


def describe(*, session: Session, row: ClsEmbeddingIndex) -> dict[str, Any]:
    return {"id": str(row.id), "source": row.source, "timm_name": row.timm_name, "dim": row.dim,
            "count": row.count, "shards": len(row.shards or []), "status": index_status(session=session, row=row),
            "job_id": str(row.job_id) if row.job_id else None, "error": row.error}


def _index_row(session: Session, actor: User, source: str) -> ClsEmbeddingIndex:
    """The index of `source`, created on first use (timm name and preprocessing filled by the run)."""
    row = session.scalar(select(ClsEmbeddingIndex).where(ClsEmbeddingIndex.source == source))
    if row is None:
        model_id = uuid.UUID(source.removeprefix("model:")) if source.startswith("model:") else None
        if model_id is not None:
            get_model(session=session, model_id=model_id)  # NotFound before anything is written
        row = ClsEmbeddingIndex(source=source, model_id=model_id, timm_name="", user_id=actor.id)
        session.add(row)
        session.flush()
    return row


def _refuse_if_running(session: Session, row: ClsEmbeddingIndex, own_job: uuid.UUID | None) -> None:
    if row.job_id and row.job_id != own_job:
        job = session.get(ClsJob, row.job_id)
        if job is not None and job.status in ("queued", "running"):
            raise Conflict(f"an embedding job for {row.source} is already {job.status} (job {job.id})")


@requires("admin", "computing image embeddings")
def start_embedding(*, actor: User, model: str, weights: str | None = None) -> uuid.UUID:
    """Queue the embedding job of a model (queue "predictions": GPU workers); the job id."""
    source = parse_source(model, weights)
    with session_scope() as session:  # refuse before a job row exists
        row = session.scalar(select(ClsEmbeddingIndex).where(ClsEmbeddingIndex.source == source))
        if row is not None:
            _refuse_if_running(session, row, None)

    def claim(session: Session, job: ClsJob) -> None:
        row = _index_row(session, actor, source)
        _refuse_if_running(session, row, job.id)
        row.job_id, row.status, row.error = job.id, "building", None

    return enqueue(actor=actor, kind=EMBEDDING_JOB_KIND, params={"source": source}, on_created=claim)


@requires("admin", "computing image embeddings")
def run_embedding(*, actor: User, source: str, job_id: uuid.UUID | None = None, progress=None,
                  threads: int | None = None) -> dict[str, Any]:
    """Embed every library image the index of `source` lacks (the job's body; the CLI runs it in
    place). Unreadable images are skipped and reported; the rest is recorded shard by shard."""
    report = progress or (lambda *args, **kwargs: None)
    storage = get_storage()
    with session_scope() as session:
        row = _index_row(session, actor, source)
        _refuse_if_running(session, row, job_id)
        row.job_id, row.status, row.error = job_id, "building", None
        index_id, recorded = row.id, [dict(shard) for shard in row.shards or []]
    try:
        embedder = _embedder(source, storage, threads)
        with session_scope() as session:
            row = session.get(ClsEmbeddingIndex, index_id)
            row.timm_name = getattr(embedder.model, "default_cfg", {}).get("architecture") or row.timm_name
            row.preprocessing = embedder.preprocessing
            todo = _missing_images(session, storage, recorded)
        summary = _embed_all(actor, embedder, storage, index_id, recorded, todo, report)
    except JobCancelled:  # the shards recorded so far stay usable
        with session_scope() as session:
            row = session.get(ClsEmbeddingIndex, index_id)
            row.status = "ready" if row.count else "empty"
        raise
    except Exception as exc:
        with session_scope() as session:
            row = session.get(ClsEmbeddingIndex, index_id)
            row.status, row.error = "failed", str(exc)[:2000]
        raise
    with session_scope() as session:
        row = session.get(ClsEmbeddingIndex, index_id)
        row.status = "ready"
        return {**describe(session=session, row=row), **summary}


def _missing_images(session: Session, storage, recorded: list[dict]) -> list[tuple[uuid.UUID, str]]:
    """(id, storage key) of the library images no recorded shard holds, oldest first."""
    have: set[bytes] = set()
    for shard in recorded:
        raw_ids, _vectors = shards.read_shard(storage, shard)
        have.update(value.tobytes() for value in raw_ids)
    rows = session.execute(select(ClsImage.id, ClsImage.storage_path).order_by(ClsImage.created_at, ClsImage.id))
    return [(image_id, key) for image_id, key in rows if image_id.bytes not in have]


def _embed_all(actor: User, embedder, storage, index_id: uuid.UUID, recorded: list[dict], todo: list, report) -> dict[str, Any]:
    """Embed `todo` in shard-sized steps, recording the shards after each step."""
    skipped: list[dict[str, str]] = []
    done = 0
    report(0, len(todo), f"embedding {len(todo):,} new images")
    for start in range(0, len(todo), shards.SHARD_ROWS):
        step = todo[start:start + shards.SHARD_ROWS]
        ids, vectors = [], []
        for batch_start in range(0, len(step), BATCH_IMAGES):
            batch_ids, images = _decode(storage, step[batch_start:batch_start + BATCH_IMAGES], embedder.mode,
                                        skipped)
            if images:
                ids += batch_ids
                vectors.append(embedder.embed(images))
            done += len(step[batch_start:batch_start + BATCH_IMAGES])
            report(done, len(todo), f"{done:,}/{len(todo):,} images")
        if ids:
            stacked = np.concatenate(vectors)
            recorded = shards.append(storage, actor=actor, index_id=index_id, shards=recorded, ids=ids, vectors=stacked)
            with session_scope() as session:
                row = session.get(ClsEmbeddingIndex, index_id)
                row.shards, row.dim = recorded, int(stacked.shape[1])
                row.count = sum(int(shard["count"]) for shard in recorded)
    return {"embedded": len(todo) - len(skipped), "skipped": skipped[:100], "skipped_count": len(skipped)}


def _decode(storage, items: list[tuple[uuid.UUID, str]], mode: str, skipped: list) -> tuple[list[uuid.UUID], list]:
    ids, images = [], []
    for image_id, key in items:
        try:
            images.append(decode_image(storage.get(key), mode=mode, name=str(image_id)))
            ids.append(image_id)
        except Exception as exc:  # one unreadable image is reported; the batch goes on
            skipped.append({"id": str(image_id), "error": f"{type(exc).__name__}: {exc}"[:300]})
    return ids, images


def _embedder(source: str, storage, threads: int | None):
    """The Embedder a source names (a registered model's checkpoint, or a backbone and its weights)."""
    if source.startswith("model:"):
        with session_scope() as session:
            row = get_model(session=session, model_id=source.removeprefix("model:"))
            key, preprocessing, model_id = row.checkpoint_url, dict(row.preprocessing), row.id
        if not key:
            raise NotFound(f"model {model_id} has no torch checkpoint to embed with")
        model, _saved = load_checkpoint_model(local_copy(storage, key, cache_dir() / "models" / str(model_id) / "best.pt"))
        return Embedder(model, preprocessing, threads=threads)
    family_size, _, weights = source.removeprefix("timm:").partition("@")
    family, _, size = family_size.partition("/")
    weights_file = None
    if weights.startswith("file:"):
        weights_file = Path(weights.removeprefix("file:"))
        if not weights_file.is_file():
            raise InvalidInput(f"--weights: no file {weights_file}")
    elif weights.startswith("storage:"):
        key = weights.removeprefix("storage:")
        if not storage.exists(key):
            raise NotFound(f"--weights: no object {key!r} in storage")
        weights_file = local_copy(storage, key, cache_dir() / "weights" / Path(key).name)
    model, preprocessing = backbone(family, size, weights=weights, weights_file=weights_file)
    return Embedder(model, preprocessing, threads=threads)

