"""What the pages ask of the embedding index (core.similarity.browse, core.similarity.projection), on
SQLite and Postgres: the index's state when there is none, more like this inside and outside a
dataset, the map job and the map of a dataset coloured by class, split, prediction and label errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import func, select

from core.config import reset_settings_cache
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.models import ClsJob, ClsLabel
from tests.factories import ADMIN, make_class, make_dataset, make_dataset_image, person

BACKBONE = "convnext/atto"


def embed(stack) -> None:
    from core.similarity.embeddings import parse_source, run_embedding

    run_embedding(actor=ADMIN, source=parse_source(BACKBONE, "none"))


def seeded(stack):
    """A dataset of 6 labeled images (2 classes, splits), one of them a near copy of seed 3, and 3
    library images outside it (one the near copy of seed 1)."""
    from core.models import ClsImage

    with stack.session() as session:
        dataset = make_dataset(session, "pets")
        cat, dog = make_class(session, "cat"), make_class(session, "dog")
        inside = [make_dataset_image(session, stack.storage, dataset, seed=s, classes=[cat if s % 2 else dog],
                                     split="train" if s < 4 else "val") for s in range(5)]
        copy_in = make_dataset_image(session, stack.storage, dataset, seed=3, near_copy=True, classes=[cat])
        other = make_dataset(session, "elsewhere")
        outside = [make_dataset_image(session, stack.storage, other, seed=s, near_copy=s == 1) for s in (1, 20, 21)]
        session.add(ClsLabel(dataset_id=dataset.id, image_id=inside[0].id, class_id=cat.id, is_ai_generated=True,
                             confidence=0.7))
        ids = {"dataset": dataset.id, "inside": [i.id for i in inside], "copy_in": copy_in.id,
               "outside": [i.id for i in outside], "cat": cat.id, "dog": dog.id}
        assert session.scalar(select(func.count()).select_from(ClsImage)) == 9
    return ids


def test_no_index_says_so_then_more_like_this_inside_and_outside_a_dataset(db_stack):
    from core.similarity.browse import index_state, more_like_this

    ids = seeded(db_stack)
    with db_stack.session() as session:
        state = index_state(session=session)
        assert not state["ready"] and "No embedding index yet" in state["message"]
        with pytest.raises(NotFound, match="no embedding index"):
            more_like_this(session, image_id=ids["inside"][3])
    embed(db_stack)
    with db_stack.session() as session:
        state = index_state(session=session)
        assert state["ready"] and state["index"]["count"] == 9 and state["message"] is None
        found = more_like_this(session, image_id=ids["inside"][3], k=8, min_similarity=-1)
        assert found[0]["id"] == ids["copy_in"] and "thumbnail_path" in found[0]
        assert len(found) == 8 and ids["inside"][3] not in [m["id"] for m in found]
        in_dataset = more_like_this(session, image_id=ids["inside"][1], k=8, min_similarity=-1,
                                    dataset_id=ids["dataset"])
        assert {m["id"] for m in in_dataset} == ({*ids["inside"], ids["copy_in"]} - {ids["inside"][1]})
        library_wide = more_like_this(session, image_id=ids["inside"][1], k=1)
        assert library_wide[0]["id"] == ids["outside"][0]  # its near copy, outside the dataset
        similarities = [m["similarity"] for m in found]
        assert similarities == sorted(similarities, reverse=True)
        cut = more_like_this(session, image_id=ids["inside"][3], k=8, min_similarity=similarities[2])
        assert [m["id"] for m in cut] == [m["id"] for m in found[:len(cut)]] and 3 <= len(cut) < 8
        with pytest.raises(InvalidInput, match="k must be"):
            more_like_this(session, image_id=ids["inside"][3], k=0)


def test_the_map_job_stores_a_projection_and_colours_a_dataset(stack):
    from core.similarity.browse import dataset_map
    from core.similarity.projection import map_key, start_map, stored_map

    ids = seeded(stack)
    embed(stack)
    with stack.session() as session:
        assert dataset_map(session, dataset_id=ids["dataset"])["map"] is None
    job_id = start_map(actor=ADMIN, method="pca")
    stack.drain_jobs()
    with stack.session() as session:
        job = session.get(ClsJob, job_id)
        assert job.status == "succeeded", job.error
        assert (job.result["points"], job.result["method"]) == (9, "pca")
        stored = stored_map(session=session, storage=stack.storage)
        assert stored["xy"].shape == (9, 2) and stored["count"] == stored["index_count"] == 9
        assert stack.storage.exists(map_key(stored["index_id"]))
        by_class = dataset_map(session, dataset_id=ids["dataset"], colour_by="class")
        assert by_class["total"] == 6 and by_class["missing"] == 0 and len(by_class["x"]) == 6
        colour = dict(zip(by_class["ids"], by_class["colour"], strict=True))
        assert colour[str(ids["inside"][1])] == "cat" and colour[str(ids["inside"][2])] == "dog"
        assert colour[str(ids["inside"][0])] == "cat, dog"  # a human label and an AI label
        split = dict(zip(*[dataset_map(session, dataset_id=ids["dataset"], colour_by="split")[k]
                           for k in ("ids", "colour")], strict=True))
        assert split[str(ids["inside"][0])] == "train" and split[str(ids["inside"][4])] == "val"
        predicted = dataset_map(session, dataset_id=ids["dataset"], colour_by="prediction")
        assert sorted(predicted["colour"]) == ["cat", *["no prediction"] * 5]
        unchecked = dataset_map(session, dataset_id=ids["dataset"], colour_by="disagreement")
        assert set(unchecked["colour"]) == {"not checked (run the label-error finder)"}
        sampled = dataset_map(session, dataset_id=ids["dataset"], max_points=4)
        assert len(sampled["ids"]) == 4 and sampled["total"] == 6
        with pytest.raises(InvalidInput, match="colour by"):
            dataset_map(session, dataset_id=ids["dataset"], colour_by="mood")


def test_label_error_scores_colour_the_map(db_stack):
    from core.prediction.label_errors import issues_key
    from core.similarity.browse import dataset_map
    from core.similarity.projection import build_map

    ids = seeded(db_stack)
    embed(db_stack)
    build_map(actor=ADMIN, method="pca")
    flagged = str(ids["inside"][2])
    db_stack.storage.put(issues_key(ids["dataset"]), json.dumps({"issues": [
        {"image_id": flagged, "suggested": "cat", "label_quality": 0.25}]}).encode())
    with db_stack.session() as session:
        scores = dataset_map(session, dataset_id=ids["dataset"], colour_by="label_error")
        assert scores["scored"]
        score = dict(zip(scores["ids"], scores["colour"], strict=True))
        assert score[flagged] == 0.75 and sum(v is None for v in score.values()) == 5
        disagreement = dataset_map(session, dataset_id=ids["dataset"], colour_by="disagreement")
        assert sorted(set(disagreement["colour"])) == ["not flagged", "suggests cat"]


def test_projection_methods_and_refusals(db_stack, monkeypatch):
    from core.similarity.projection import build_map, project, start_map

    vectors = np.random.default_rng(1).normal(size=(200, 16)).astype(np.float16)
    xy, method = project(vectors, "pca")
    assert xy.shape == (200, 2) and xy.dtype == np.float32 and method == "pca"
    assert project(vectors[:2], "auto")[0].shape == (2, 2)
    with pytest.raises(InvalidInput, match="map method"):
        project(vectors, "tsne")
    with pytest.raises(NotFound, match="no embedding index"):
        start_map(actor=ADMIN)
    seeded(db_stack)
    embed(db_stack)
    monkeypatch.setenv("ROLES", "boss@acme.com=admin")
    monkeypatch.setenv("DEFAULT_ROLE", "labeler")
    reset_settings_cache()
    labeler = person("someone@acme.com")
    with pytest.raises(PermissionDenied, match="computing image embeddings needs the admin role"):
        build_map(actor=labeler, method="pca")
    with pytest.raises(PermissionDenied):
        start_map(actor=labeler)
    assert not [k for k in db_stack.storage.list_keys("embeddings/") if k.endswith("map.npz")]


def test_the_images_page_offers_the_job_then_shows_neighbours_as_a_selection(embedded_stack):
    """The page script (AppTest): ?like= without an index says so and starts the job; then the
    neighbours are tiles, "Select these" makes them the selection the bulk actions count."""
    from streamlit.testing.v1 import AppTest

    from tests.apptest_tools import component_data
    from tests.plugins.browser import ROOT

    ids = seeded(embedded_stack)
    app = AppTest.from_file(str(ROOT / "pages" / "images.py"), default_timeout=120)
    app.query_params["like"] = str(ids["inside"][3])
    app.run()
    assert not app.exception
    assert any("No embedding index yet" in info.value for info in app.info)
    app.selectbox(key="img_like_embed_model").select_index(1).run()  # random weights: no download
    app.button(key="img_like_embed_go").click().run()
    assert not app.exception
    embedded_stack.drain_jobs()
    with embedded_stack.session() as session:
        job = session.scalar(select(ClsJob))
        assert (job.kind, job.status) == ("embeddings", "succeeded")
    app.run()
    app.slider(key="img_like_min").set_value(0.0).run()
    [tiles] = component_data(app, "thumbnail_grid")
    assert tiles["tiles"][0]["id"] == str(ids["copy_in"]) and tiles["selected"] == []
    shown = len(tiles["tiles"])  # the library's other images at similarity ≥ 0 (random weights: not all)
    assert 2 <= shown <= 8 and all(float(t["caption"].split(" · ")[0]) >= 0 for t in tiles["tiles"])
    app.button(key="img_like_select").click().run()
    assert any(m.value == f"**{shown} selected**" for m in app.markdown)
    assert sorted(component_data(app, "thumbnail_grid")[0]["selected"]) == sorted(t["id"] for t in tiles["tiles"])
