"""Embedding indexes end to end: the job on both set-ups (SQLite + local storage + in-process jobs;
Postgres + S3 + RQ), incremental runs, nearest neighbours, refusals, the CLI."""

from __future__ import annotations

import hashlib
import io
import uuid

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from core.config import reset_settings_cache
from core.errors import InvalidInput, PermissionDenied
from core.models import ClsEmbeddingIndex, ClsImage, ClsJob
from tests.factories import ADMIN, drawn_image_bytes, person

BACKBONE = "convnext/atto"  # the smallest family member; random weights (no hub here)


def add_image(session, storage, data: bytes, name: str) -> uuid.UUID:
    image_id = uuid.uuid4()
    key = f"images/{image_id}.img"
    storage.put(key, data)
    session.add(ClsImage(id=image_id, filename=f"{image_id}.img", original_filename=name, storage_path=key,
                         file_hash=hashlib.sha256(data).hexdigest()))
    session.flush()
    return image_id


def near_copy(data: bytes) -> bytes:
    """Resized to 90 % and re-encoded as JPEG: other bytes, the same picture. (Random weights, as
    here, keep such a copy closest; a harsher edit needs a trained model's features.)"""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    buffer = io.BytesIO()
    image.resize((image.width * 9 // 10, image.height * 9 // 10), Image.LANCZOS).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def library(stack, seeds) -> dict[int, uuid.UUID]:
    with stack.session() as session:
        return {seed: add_image(session, stack.storage, drawn_image_bytes(seed), f"drawn_{seed}.png") for seed in seeds}


def embed_queued(stack) -> dict:
    from core.similarity.embeddings import start_embedding

    job_id = start_embedding(actor=ADMIN, model=BACKBONE, weights="none")
    stack.drain_jobs()
    with stack.session() as session:
        job = session.get(ClsJob, job_id)
        assert job.status == "succeeded", job.error
        return dict(job.result)


def test_the_embedding_job_fills_float16_shards_and_neighbours_are_near_copies(stack):
    from core.similarity import shards
    from core.similarity.search import similar_images

    ids = library(stack, range(10))
    with stack.session() as session:
        copy_id = add_image(session, stack.storage, near_copy(drawn_image_bytes(3)), "copy_of_3.jpg")
    result = embed_queued(stack)
    assert result["embedded"] == 11 and result["skipped_count"] == 0
    with stack.session() as session:
        row = session.scalar(select(ClsEmbeddingIndex))
        assert (row.status, row.count, row.dim, row.timm_name) == ("ready", 11, 320, "convnextv2_atto")
        recorded = list(row.shards)
    raw_ids, vectors = shards.read_shard(stack.storage, recorded[0])
    assert vectors.dtype == np.float16 and vectors.shape == (11, 320)
    assert np.allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1, atol=1e-2)
    assert set(shards.ids_of(raw_ids)) == {*ids.values(), copy_id}
    with stack.session() as session:
        found = similar_images(session, image_id=ids[3], k=5)
        assert found[0]["id"] == copy_id and found[0]["filename"] == "copy_of_3.jpg"
        assert found[0]["similarity"] > found[1]["similarity"]
        assert ids[3] not in [m["id"] for m in found]
        assert similar_images(session, image_id=ids[3], k=5, min_similarity=0.9999) == []


def test_a_second_run_embeds_only_new_images_and_searches_see_them(stack):
    from core.similarity.search import similar_images

    ids = library(stack, range(6))
    assert embed_queued(stack)["embedded"] == 6
    with stack.session() as session:
        similar_images(session, image_id=ids[0], k=3)  # this process now holds the index in memory
        copy_id = add_image(session, stack.storage, near_copy(drawn_image_bytes(0)), "late_copy.jpg")
        add_image(session, stack.storage, b"not an image", "broken.png")
    second = embed_queued(stack)
    assert second["embedded"] == 1 and second["skipped_count"] == 1
    assert "broken" not in str(second["skipped"]) and second["skipped"][0]["error"]
    with stack.session() as session:
        assert session.scalar(select(ClsEmbeddingIndex.count)) == 7
        assert similar_images(session, image_id=ids[0], k=3)[0]["id"] == copy_id  # caught up, no rebuild
    third = embed_queued(stack)
    assert third["embedded"] == 0 and third["skipped_count"] == 1  # the broken one is tried again, alone


def test_deleted_images_drop_out_and_bad_queries_are_refused(db_stack):
    from core.similarity.embeddings import parse_source, run_embedding
    from core.similarity.search import similar_images

    ids = library(db_stack, range(5))
    run_embedding(actor=ADMIN, source=parse_source(BACKBONE, "none"))
    with db_stack.session() as session:
        session.delete(session.get(ClsImage, ids[1]))
    with db_stack.session() as session:
        assert ids[1] not in [m["id"] for m in similar_images(session, image_id=ids[0], k=10)]
        with pytest.raises(InvalidInput, match="not in the"):
            similar_images(session, image_id=uuid.uuid4())
        with pytest.raises(InvalidInput, match="k must be"):
            similar_images(session, image_id=ids[0], k=0)
        with pytest.raises(InvalidInput, match="dimensions"):
            similar_images(session, vector=np.ones(7))
    with pytest.raises(InvalidInput, match="family/size"):
        parse_source("convnext", None)
    with pytest.raises(InvalidInput, match="--weights"):
        parse_source(BACKBONE, "ftp://x")


def test_a_viewer_cannot_start_or_run_an_embedding(db_stack, monkeypatch):
    from core.similarity.embeddings import parse_source, run_embedding, start_embedding

    library(db_stack, range(2))
    monkeypatch.setenv("ROLES", "boss@acme.com=admin")
    monkeypatch.setenv("DEFAULT_ROLE", "viewer")
    reset_settings_cache()
    viewer = person("guest@acme.com")
    with pytest.raises(PermissionDenied, match="computing image embeddings needs the admin role"):
        start_embedding(actor=viewer, model=BACKBONE, weights="none")
    with pytest.raises(PermissionDenied):
        run_embedding(actor=viewer, source=parse_source(BACKBONE, "none"))
    with db_stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsJob)) == 0
        assert session.scalar(select(func.count()).select_from(ClsEmbeddingIndex)) == 0
    assert not list(db_stack.storage.list_keys("embeddings/"))


def test_cli_embeds_and_finds_with_file_names(embedded_stack, capsys):
    import json

    from core.cli import main

    ids = library(embedded_stack, range(4))
    assert main(["similar", "embed", "--model", BACKBONE, "--weights", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["embedded"] == 4
    assert main(["similar", "find", str(ids[2]), "--k", "2", "--min", "-1"]) == 0
    found = json.loads(capsys.readouterr().out)["similar"]
    assert len(found) == 2 and all(m["file"].startswith("drawn_") for m in found)
    assert main(["similar", "find", "nonsense"]) == 2
    assert "image id" in capsys.readouterr().err
    assert main(["similar", "embed", "--model", "nosuch/size"]) == 2
    assert "unknown model family" in capsys.readouterr().err


def test_a_registered_model_embeds_with_its_own_network_and_preprocessing(embedded_stack, tmp_path_factory):
    from core.similarity.embeddings import start_embedding
    from tests.model_factory import digit_images, register_model, shared_checkpoint

    with embedded_stack.session() as session:
        model_id = register_model(session, embedded_stack.storage, shared_checkpoint(tmp_path_factory),
                                  class_ids=[uuid.uuid4() for _ in range(3)])
        images, _target = digit_images(3, 2)
        for k, data in enumerate(images):
            add_image(session, embedded_stack.storage, data, f"digit_{k}.png")
    job_id = start_embedding(actor=ADMIN, model=str(model_id))
    embedded_stack.drain_jobs()
    with embedded_stack.session() as session:
        assert session.get(ClsJob, job_id).status == "succeeded"
        row = session.scalar(select(ClsEmbeddingIndex))
        assert (row.source, row.model_id, row.count, row.dim) == (f"model:{model_id}", model_id, 6, 320)
        assert row.preprocessing["in_chans"] == 1 and row.preprocessing["size"] == 32
    with pytest.raises(InvalidInput, match="--weights applies"):
        start_embedding(actor=ADMIN, model=str(model_id), weights="hub")


# ---------------------------------------------------------------- the ANN index itself (core.similarity.ann)


def clustered_vectors(n: int, dim: int = 32, clusters: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + 0.4 * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float16)


def exact_ids(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    sims = queries @ vectors.astype(np.float32).T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True)) / truth.size


def test_vector_index_is_exact_when_small_then_trains_and_grows_without_a_rebuild():
    from core.similarity.ann import AnnSettings, VectorIndex

    vectors = clustered_vectors(9_000)
    queries = clustered_vectors(50, seed=1).astype(np.float32)
    index = VectorIndex(32, AnnSettings(train_at=2_000, probes=8))
    assert index.add(vectors[:1_500]).tolist() == list(range(1_500)) and index.ivf is None
    found, sims = index.search(queries, 10)
    assert np.array_equal(found, exact_ids(vectors[:1_500], queries, 10)), "below train_at: exact"
    assert np.all(np.diff(sims, axis=1) <= 1e-6), "best first"

    index.add(vectors[1_500:4_000], threads=1)
    assert index.ivf is not None and index.trained_on == 4_000 and index.ivf.ntotal == 4_000
    assert recall(index.search(queries, 10)[0], exact_ids(vectors[:4_000], queries, 10)) >= 0.95
    ivf = index.ivf
    index.add(vectors[4_000:9_000])  # 2.25x the trained size: appended to the same lists
    assert index.ivf is ivf and index.ivf.ntotal == len(index) == 9_000
    found, sims = index.search(queries, 10)
    assert recall(found, exact_ids(vectors, queries, 10)) >= 0.95
    assert np.allclose(sims[:, 0], np.einsum("nd,nd->n", index.vectors(found[:, 0]), queries
                                             / np.linalg.norm(queries, axis=1, keepdims=True)), atol=1e-3)
    many, many_sims = index.search(queries[:1], 20_000)  # k above the count: clipped, -1 past what was probed
    assert many.shape == (1, 9_000) and np.all((many >= 0) == np.isfinite(many_sims))


def test_vector_index_retrains_after_growing_eightfold_and_refuses_bad_shapes():
    from core.similarity.ann import RETRAIN_GROWTH, AnnSettings, VectorIndex

    index = VectorIndex(32, AnnSettings(train_at=500))
    index.add(clustered_vectors(600))
    assert index.trained_on == 600
    index.add(clustered_vectors(600 * RETRAIN_GROWTH, seed=2))
    assert index.trained_on == 600 * (RETRAIN_GROWTH + 1) and index.ivf.ntotal == len(index)
    with pytest.raises(ValueError, match="32 dimensions"):
        index.add(np.zeros((3, 16)))
    with pytest.raises(ValueError, match="storage dtype"):
        VectorIndex(32, AnnSettings(dtype="i4"))
    empty = VectorIndex(32)
    assert empty.search(np.ones(32), 5)[0].shape == (1, 0)
