"""The recipe in the training wizard: every setting the recipe decides shows its chosen value with one
line of why, and an Override button that turns it into an ordinary field (and Auto to go back).
The recipe itself is core.training.runs.recipe_values (core.ml.recipe); core.training.wizard previews it."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core.training.runs import recipe_rows
from core.training.wizard import RECIPE_FIELDS, field_default


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _set(state: dict[str, Any], field: str, value: Any) -> None:
    state["values"][field] = value
    st.session_state.pop(f"wz_{field}", None)


def field(bind, widget, label: str, name: str, state: dict[str, Any], recipe: dict[str, Any] | None, **kwargs):
    """A recipe setting: "auto" with its value and why, or the user's own widget."""
    assert name in RECIPE_FIELDS
    value = state["values"].get(name)
    text, button = st.columns([5, 1.4], vertical_alignment="bottom")
    if value is None:
        chosen = recipe.get(name) if recipe else None
        why = (recipe or {}).get("recipe_notes", {}).get(name, "")
        text.markdown(f"**{label}**: {_show(chosen) if chosen is not None else '—'} · *auto*")
        if why:
            text.caption(why)
        fallback = chosen if chosen is not None else field_default(name)
        button.button("Override", key=f"wz_override_{name}", on_click=_set, args=(state, name, fallback),
                      help="Set this value yourself")
        return chosen
    with text:
        bind(widget, label, name, state, **kwargs)
    button.button("Auto", key=f"wz_auto_{name}", on_click=_set, args=(state, name, None),
                  help="Let the recipe choose it from the data")
    return state["values"][name]


def table(config: dict[str, Any]) -> None:
    """The run's recipe: setting, value, who chose it, why."""
    rows = recipe_rows(config)
    if rows:
        frame = pd.DataFrame([{**row, "value": _show(row["value"])} for row in rows])
        st.dataframe(frame, hide_index=True, width="stretch")
