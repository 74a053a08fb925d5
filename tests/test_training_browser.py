"""The training wizard in a real browser (Playwright + Debian Chromium): a newcomer creates a version,
picks the smallest model at 32 px for one epoch, starts it, watches the run complete live, and opens
its model with a confusion matrix. The run trains for real in the app's in-process job pool."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core.db import dispose_engines
from tests.plugins.browser import ROOT, exception_texts, start_app, stop_app, wait_for_app

DATASET = "Demo product categories"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app with the demo data, its dataset split 60/20/20 so val and test have images."""
    app = start_app(Path(tmp_path_factory.mktemp("training")), extra_env={"OMP_NUM_THREADS": "1"})
    for command in (["demo", "--products", "24"],
                    ["datasets", "split", DATASET, "--train", "0.6", "--val", "0.2", "--test", "0.2"]):
        subprocess.run([sys.executable, "-m", "core", *command], cwd=ROOT, env=app.env, check=True,
                       capture_output=True, timeout=300)
    yield app
    stop_app(app)
    dispose_engines()


def settle(page) -> None:
    """Best effort: wait for the script run to end. Every step below waits for what it expects to see
    anyway, so a run that outlasts this under load only costs time."""
    for _ in range(2):  # st.rerun() starts a second run right after the first
        try:
            wait_for_app(page, 20_000)
        except PlaywrightTimeout:
            pass
        page.wait_for_timeout(500)


def click_until(page, name: str, expected, attempts: int = 3) -> None:
    """Click a button until `expected` (a locator) shows: a click that lands between two script runs
    of Streamlit can be dropped. Only for buttons whose repeat is harmless."""
    for attempt in range(attempts):
        page.get_by_role("button", name=name, exact=True).click()
        try:
            expected.first.wait_for(timeout=60_000)
            break
        except Exception:
            if attempt == attempts - 1:
                raise
    settle(page)


def click_button(page, name: str) -> None:
    page.get_by_role("button", name=name, exact=True).click()
    settle(page)


def next_step(page, number: int, name: str) -> None:
    """Next, then wait until the stepper shows the new step in bold."""
    click_until(page, "Next →", page.locator("strong", has_text=f"{number}. {name}"))


def set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    settle(page)


@pytest.mark.timeout(840)
def test_wizard_trains_a_tiny_model_and_its_model_shows_a_confusion_matrix(server, browser_page):
    walk_wizard_to_model(browser_page, server)


def walk_wizard_to_model(page, server):
    page.goto(f"{server.url}/training")
    settle(page)
    click_until(page, "New training run", page.locator("strong", has_text="1. Data"))
    # step 1: the demo dataset has no version yet: make one from its labels
    click_until(page, "Create a version now", page.get_by_text("train images"))  # the new version's splits
    page.get_by_role("button", name="Next →", exact=True).and_(page.locator(":enabled")).wait_for()
    next_step(page, 2, "Model")
    # step 2: the default family/size (convnext/atto), trained from scratch (no hub here)
    page.get_by_text("None: train from scratch").click()
    settle(page)
    next_step(page, 3, "Training")
    # step 3: one epoch
    set_number(page, "Epochs", 1)
    set_number(page, "Batch size", 8)
    next_step(page, 4, "Augmentation")
    # step 4: no augmentation, 32 px
    page.get_by_text("None (Baseline)").click()
    settle(page)
    set_number(page, "Image size (px)", 32)
    next_step(page, 5, "Advanced")
    next_step(page, 6, "Review")
    # step 6: review shows the config and an estimate, then Start
    assert '"image_size": 32' in page.locator("[data-testid='stCode']").inner_text()
    assert "Estimated time" in page.inner_text("body")
    click_button(page, "Start training")
    page.wait_for_url(re.compile(r"run="))
    # the run page refreshes itself (fragment) until the run completes: no reload from us
    page.get_by_text("completed", exact=True).first.wait_for(timeout=420_000)
    settle(page)
    assert page.locator(".js-plotly-plot").count() >= 1  # loss/accuracy/F1/LR per epoch
    click_button(page, "Open the trained model")
    page.wait_for_url(re.compile(r"/models\?model="))
    settle(page)
    page.get_by_role("tab", name="Confusion matrix").click()
    page.locator("[data-testid='stTabPanel']:visible .js-plotly-plot").first.wait_for(timeout=30000)
    heatmaps = page.locator(".js-plotly-plot .heatmaplayer")
    assert heatmaps.count() >= 1
    assert exception_texts(page) == []
    assert page.watch.problems() == [], page.watch.problems()
