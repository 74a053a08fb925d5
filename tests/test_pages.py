"""Every page renders without an exception (Streamlit AppTest), on an empty and a demo workspace."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.factories import ADMIN

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["pages/dashboard.py", "pages/images.py", "pages/classes.py", "pages/datasets.py",
         "pages/labeling.py", "pages/training.py", "pages/models.py", "pages/predict.py"]


def render(page: str) -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.run()
    if page != "pages/dashboard.py":
        app.switch_page(page)
        app.run()
    return app


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_empty_workspace(embedded_stack, page):
    app = render(page)
    assert not app.exception, [e.value for e in app.exception]
    assert app.title, "every page has a title"


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_demo_data(embedded_stack, page):
    from core.imports.demo import load_demo

    load_demo(actor=ADMIN, products=4)
    app = render(page)
    assert not app.exception, [e.value for e in app.exception]


def test_dashboard_shows_real_counts(embedded_stack):
    from core.imports.demo import load_demo
    from core.jobs.queue import enqueue

    load_demo(actor=ADMIN, products=4)
    job_id = enqueue(actor=ADMIN, kind="test_add_numbers", params={"a": 1, "b": 2})
    embedded_stack.drain_jobs()
    app = render("pages/dashboard.py")
    metrics = {m.label: m.value for m in app.metric}
    assert set(metrics) >= {"Images", "Classes", "Datasets", "Labeled", "Training runs", "Models"}
    assert metrics["Training runs"] == "0"
    assert str(job_id)  # the job row exists and the page lists it without error
    assert any("succeeded" in p.proto.text for p in app.get("progress"))


def test_an_empty_workspace_offers_the_demo_data_in_one_click_then_names_the_next_step(embedded_stack):
    """A fresh install: the Dashboard offers Import and (admins) the demo data; the click runs the same
    loader as `python -m core demo` as a job; afterwards it names the next step instead."""
    from sqlalchemy import select

    from core.datasets.label_space import label_space
    from core.models import ClsDataset

    app = render("pages/dashboard.py")
    assert "Get started" in [h.value for h in app.subheader]
    [button] = [b for b in app.button if b.label == "Load the demo data"]
    button.click().run()
    assert not app.exception, [e.value for e in app.exception]
    embedded_stack.drain_jobs()
    app.run()
    assert "Get started" not in [h.value for h in app.subheader]
    assert any(text.value.startswith("Next: label the") for text in app.info)
    with embedded_stack.session() as session:
        dataset_id = session.scalar(select(ClsDataset.id))
        assert [c.name for c in label_space(session=session, dataset_id=dataset_id)] == [
            "Beverages", "Snacks", "Dairy", "Bakery"]  # the demo dataset's classes, in category order


def test_grid_selection_takes_the_browsers_page_unless_python_changed_it_since():
    from ui.components.thumbnail_grid import Selection

    selection = Selection(ids={"a", "x"})
    selection.from_browser({"epoch": 0, "page": ["a", "b", "c"], "selected": ["b", "c"]})
    assert selection.ids == {"b", "c", "x"}  # the page's ids replaced; ids on other pages kept
    selection.clear()  # Python changed it: a value the browser sent before that is stale
    selection.from_browser({"epoch": 0, "page": ["a", "b"], "selected": ["a"]})
    assert selection.ids == set()
    selection.from_browser({"epoch": selection.epoch, "page": ["a", "b"], "selected": ["a"]})
    assert selection.ids == {"a"}
    selection.select_all_matching()
    assert selection.count(total=500) == 500
    selection.from_browser({"epoch": selection.epoch, "page": ["a"], "selected": []})
    assert not selection.all_matching and selection.count(total=500) == 0
    selection.from_browser("not a dict")  # ignored
