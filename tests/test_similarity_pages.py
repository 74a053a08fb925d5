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


def test_the_dataset_grid_shows_one_images_neighbours_and_its_keys_label_them(embedded_stack):
    """Datasets page (AppTest): one image selected → "More like the selected image" → its neighbours
    in the dataset as tiles; "Select these" then a class's key labels every one of them."""
    from streamlit.testing.v1 import AppTest

    from tests.apptest_tools import component_data
    from tests.plugins.browser import ROOT
    from ui.components.thumbnail_grid import Selection

    ids = seeded(embedded_stack)
    embed(embedded_stack)
    dataset_id = ids["dataset"]
    with embedded_stack.session() as session:
        session.query(ClsLabel).filter(ClsLabel.dataset_id == dataset_id).delete()
    app = AppTest.from_file(str(ROOT / "pages" / "datasets.py"), default_timeout=120)
    app.query_params["dataset"] = str(dataset_id)
    app.session_state[f"dsgrid_{dataset_id}"] = {"selection": Selection(ids={str(ids["inside"][3])}), "page": 1}
    app.run()
    assert not app.exception
    app.button(key=f"dsgrid_like_go_{dataset_id}").click().run()
    app.slider(key=f"dsgrid_like_{dataset_id}_min").set_value(0.0).run()
    [tiles] = component_data(app, "thumbnail_grid")
    shown = {t["id"] for t in tiles["tiles"]}
    assert str(ids["copy_in"]) == tiles["tiles"][0]["id"]
    assert shown <= {str(i) for i in [*ids["inside"], ids["copy_in"]]} and str(ids["inside"][3]) not in shown
    app.button(key=f"dsgrid_like_{dataset_id}_select").click().run()
    assert set(component_data(app, "thumbnail_grid")[0]["selected"]) == shown
    cat_key = next(b for b in app.button if b.key and b.key.startswith(f"dskey_{dataset_id}_") and "cat" in b.label)
    cat_key.click().run()
    assert not app.exception
    with embedded_stack.session() as session:
        labeled = {str(i) for i in session.scalars(select(ClsLabel.image_id).where(
            ClsLabel.dataset_id == dataset_id, ClsLabel.class_id == ids["cat"]))}
    assert labeled == shown


def test_an_upload_not_in_the_library_finds_its_library_copies(db_stack):
    """The Predict page's query: the upload embedded by the index's own model (seeded random weights
    here: the same network as the job's), its near copies first; a broken upload is refused."""
    from core.similarity.browse import similar_to_image
    from tests.factories import drawn_image_bytes, near_copy_bytes

    ids = seeded(db_stack)
    embed(db_stack)
    with db_stack.session() as session:
        found = similar_to_image(session, data=near_copy_bytes(3), k=3)
        assert {found[0]["id"], found[1]["id"]} == {ids["inside"][3], ids["copy_in"]}
        assert found[0]["similarity"] > 0.9 and "thumbnail_path" in found[0]
        assert similar_to_image(session, data=drawn_image_bytes(20), k=1)[0]["id"] == ids["outside"][1]
        with pytest.raises(InvalidInput, match="the image"):
            similar_to_image(session, data=b"not an image")


def test_the_labeling_page_carries_the_current_images_neighbours_to_the_grid(embedded_stack):
    """Labeling page (AppTest): "Find images like the current one" shows the neighbours in the
    dataset; the chosen ones open the dataset grid as its selection."""
    from streamlit.testing.v1 import AppTest

    from tests.apptest_tools import component_data
    from tests.plugins.browser import ROOT

    ids = seeded(embedded_stack)
    embed(embedded_stack)
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)  # the app: switch_page needs its pages
    app.run()
    app.switch_page("pages/labeling.py")
    app.query_params["dataset"] = str(ids["dataset"])
    app.query_params["mode"] = "all"  # every seeded image is labeled
    app.run()
    assert not app.exception
    current = app.query_params["image"]
    current = current[0] if isinstance(current, list) else current
    app.button(key="labeling_like_go").click().run()
    app.slider(key="labeling_like_min").set_value(0.0).run()
    tiles = next(c for c in component_data(app, "thumbnail_grid") if c["tiles"])["tiles"]
    shown = {t["id"] for t in tiles}
    assert current not in shown and shown <= {str(i) for i in [*ids["inside"], ids["copy_in"]]}
    app.button(key="labeling_like_select").click().run()
    app.button(key="labeling_like_grid").click().run()
    assert not app.exception
    assert any(m.value.startswith(f"**{len(shown)} selected") for m in app.markdown)  # the grid, its selection
    assert app.session_state[f"dsgrid_{ids['dataset']}"]["selection"].ids == shown


def test_a_page_loads_the_index_in_a_thread_and_says_when_it_holds_it(db_stack):
    from core.similarity import search
    from core.similarity.browse import warm_index

    seeded(db_stack)
    embed(db_stack)
    search._loaded.clear()  # as a fresh server process
    with db_stack.session() as session:
        warm_index(session=session, wait_s=0)  # starts the thread, does not wait
        assert warm_index(session=session, wait_s=60)  # loaded by the thread
        assert len(next(iter(search._loaded.values()))) == 1
        assert warm_index(session=session, wait_s=0)  # held: no thread, no wait
