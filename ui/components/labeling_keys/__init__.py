"""The labeling view component (st.components.v2, inline JS/CSS from this folder): image, class list
with keys and live search, shortcuts panel, and the browser-side key queue.

Why not streamlit-shortcuts (the design card's choice)? As released (1.2.2) its listener dies after a
page switch, fires while the user types in a text field, and binds through button clicks, which lose
presses that arrive during a run; and Streamlit keeps `c`/`r` for itself. A v2 component runs in the
page itself (no iframe), so one capture-phase listener sees every key first, stops the ones it uses,
ignores auto-repeat and text fields, and sends queued presses in order after each run (ack'd by
sequence number), which a wrapper around button shortcuts cannot do.

Images reach the browser at stable URLs so the browser caches and prefetches them: the storage's
public URL or a presigned S3 URL reused for hours (core.file_links.stable_url), or, for local storage,
a signed link valid for hours to serve.py's file route (core.file_links).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

_HERE = Path(__file__).parent

_view = st.components.v2.component(
    "labeling_view",
    js=(_HERE / "labeling_keys.js").read_text(),
    css=(_HERE / "labeling_keys.css").read_text(),
    isolate_styles=False,  # a shadow root would hide the real key target (text field or not)
)

def labeling_view(*, data: dict, on_keys: Callable[[], None], key: str = "labeling_view"):
    """Mount the view; `on_keys` runs (before the fragment body) when a batch of keys arrives."""
    return _view(key=key, data=data, on_keys_change=on_keys, height="content")
