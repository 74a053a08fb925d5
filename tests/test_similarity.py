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
