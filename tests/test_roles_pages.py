"""The real pages under each role (Streamlit AppTest): a viewer's create/edit/delete controls are hidden,
disabled or refused with nothing changed in the database."""

from __future__ import annotations

from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from core.config import reset_settings_cache
from core.models import ClsClass, ClsDataset
from tests.test_pages import ROOT


def _app(monkeypatch, role: str, page: str) -> AppTest:
    monkeypatch.setenv("DEFAULT_ROLE", role)  # the local user's role (no ROLES configured)
    reset_settings_cache()
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.run()
    app.switch_page(page)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _usable(app: AppTest, label: str):
    """The enabled button with this label, or None when it is hidden or disabled."""
    return next((b for b in app.button if b.label == label and not b.disabled), None)


def test_viewer_cannot_create_classes_or_datasets_through_the_pages(embedded_stack, monkeypatch):
    app = _app(monkeypatch, "viewer", "pages/classes.py")
    if (button := _usable(app, "Create class")) is not None:
        app.text_input[0].input("viewer-made")
        button.click()
        app.run()
    if (button := _usable(app, "Create classes")) is not None:
        app.text_area[0].input("a\nb")
        button.click()
        app.run()
    app.switch_page("pages/datasets.py")
    app.run()
    if (button := _usable(app, "Create dataset")) is not None:
        app.text_input[0].input("viewer-ds")
        button.click()
        app.run()
    with embedded_stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsClass)) == 0
        assert session.scalar(select(func.count()).select_from(ClsDataset)) == 0
