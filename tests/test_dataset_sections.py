"""The dataset detail tabs (Splits, Versions, Health, Export) driven through Streamlit's AppTest."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.models import ClsDatasetImage, ClsDatasetVersion, ClsJob
from tests.factories import make_class, make_dataset, make_dataset_image

pytest.importorskip("streamlit.testing.v1")


def _section_app(section: str, dataset_id: str):
    def app(section: str, dataset_id: str):
        import uuid

        import ui.dataset_sections as sections

        getattr(sections, f"render_{section}")(uuid.UUID(dataset_id))

    from streamlit.testing.v1 import AppTest

    return AppTest.from_function(app, args=(section, dataset_id), default_timeout=60)


@pytest.fixture
def dataset_id(embedded_stack):
    with embedded_stack.session() as session:
        dataset = make_dataset(session, "page set")
        cats, dogs = make_class(session, "cats"), make_class(session, "<b>dogs</b>")
        for seed in range(12):
            make_dataset_image(session, embedded_stack.storage, dataset, seed=seed, classes=[cats if seed % 2 else dogs])
        return str(dataset.id)


def test_splits_tab_splits_and_shows_the_chart(embedded_stack, dataset_id):
    app = _section_app("splits", dataset_id).run()
    assert not app.exception
    assert [m.value for m in app.metric][:4] == ["0", "0", "0", "12"]
    app.button[0].click().run()  # the form's "Split" button
    assert not app.exception
    assert "Split 12 labeled images" in app.success[0].value
    with embedded_stack.session() as session:
        splits = session.scalars(select(ClsDatasetImage.split)).all()
    assert "unassigned" not in splits
    assert [m.value for m in app.metric][3] == "0"


def test_versions_tab_creates_and_compares(embedded_stack, dataset_id):
    app = _section_app("versions", dataset_id).run()
    assert not app.exception
    assert "12 labeled images have no split" in app.caption[0].value
    app.text_input[0].set_value("first")
    app.button[0].click().run()
    app.button[0].click().run()
    assert not app.exception
    with embedded_stack.session() as session:
        assert sorted(session.scalars(select(ClsDatasetVersion.version_number))) == [1, 2]
    assert len(app.selectbox) == 2  # the compare pickers appear with two versions


def test_health_tab_reports_findings_with_links(embedded_stack, dataset_id):
    app = _section_app("health", dataset_id).run()
    app.button[0].click().run()
    assert not app.exception
    titles = [e.label for e in app.expander]
    assert any("has only 6 images" in t for t in titles)
    assert any("\\<b\\>dogs\\</b\\>" in t for t in titles)  # a class name is never read as markup
    links = [m.value for m in app.markdown if "./images?image=" in m.value]
    assert links


def test_export_tab_starts_a_job_and_offers_the_download(embedded_stack, dataset_id):
    app = _section_app("export", dataset_id).run()
    app.radio[0].set_value("csv")
    app.button[0].click().run()
    assert not app.exception
    embedded_stack.drain_jobs()
    with embedded_stack.session() as session:
        job = session.scalars(select(ClsJob)).one()
        assert job.status == "succeeded", job.error
    app.run()
    assert not app.exception
    assert any("csv · current labels · succeeded · 12 images" in m.value for m in app.markdown)
    download = app.get("download_button")
    assert len(download) == 1 and download[0].proto.label == "Download"
