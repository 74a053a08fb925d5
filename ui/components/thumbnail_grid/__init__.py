"""A page of thumbnails as one component (st.components.v2, inline JS/CSS from this folder): image,
caption, optional chips, a selection box and a Details link per tile.

Why not a grid of st.columns with st.image/st.checkbox/st.button per tile? That is ~250 Streamlit
elements for 48 tiles: measured, their drawing alone took about a second of the Images page's cold
render, and a checkbox click landing while the previous click's run was going could be dropped when
Streamlit redrew the tile. Here the selection lives in the browser and is sent whole for the page as a
state value (the last value wins, so no click is lost); Python's selection replaces it when Python
changes it (Select page, Clear, …), which it signals by bumping `epoch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

_HERE = Path(__file__).parent

_grid = st.components.v2.component(
    "thumbnail_grid",
    js=(_HERE / "thumbnail_grid.js").read_text(),
    css=(_HERE / "thumbnail_grid.css").read_text(),
    isolate_styles=False,  # tiles take the app's font and colours; class names are prefixed tg-
)


def tile(image_id, url: str | None, caption: str, *, chips: list[dict] | None = None) -> dict:
    """One tile: `chips` are {"text", "color"} dicts (colours as CSS values; a chip with "filled": True
    is drawn on its colour). Text is set with textContent: never markup."""
    out = {"id": str(image_id), "url": url, "caption": caption}
    if chips:
        out["chips"] = chips
    return out


@dataclass
class Selection:
    """Which images a grid has selected, across its pages: ids, or every image matching the filters.
    `epoch` changes whenever Python changes the selection, so the browser drops its own copy."""

    ids: set[str] = field(default_factory=set)
    all_matching: bool = False
    epoch: int = 0

    def count(self, total: int) -> int:
        return total if self.all_matching else len(self.ids)

    def set_page(self, page_ids: list[str], value: bool) -> None:
        (self.ids.update if value else self.ids.difference_update)(page_ids)
        self.all_matching = False
        self.epoch += 1

    def select_all_matching(self) -> None:
        self.all_matching = True
        self.epoch += 1

    def clear(self) -> None:
        self.ids.clear()
        self.all_matching = False
        self.epoch += 1

    def from_browser(self, value) -> None:
        """A page's selection as the browser sent it; ignored when sent before Python's last change."""
        if not isinstance(value, dict) or value.get("epoch") != self.epoch:
            return
        page = {str(i) for i in value.get("page") or []}
        self.ids.difference_update(page)
        self.ids.update(page & {str(i) for i in value.get("selected") or []})
        self.all_matching = False


def selection_controls(cols, selection: Selection, page_ids: list[str], total: int, key: str,
                       more: bool = False) -> int:
    """The count and Select page / Unselect page / Select all matching / Clear, in the first five of
    `cols` (Streamlit columns); returns how many images are selected. `more`: at least `total` match
    (the count stopped there)."""
    count = selection.count(total)
    shown = f"{count:,}+" if more and selection.all_matching else f"{count:,}"
    cols[0].markdown(f"**{shown} selected**" + (" (all matching)" if selection.all_matching else ""))
    cols[1].button("Select page", key=f"{key}_sel_page", on_click=selection.set_page, args=(page_ids, True),
                   width="stretch")
    cols[2].button("Unselect page", key=f"{key}_unsel_page", on_click=selection.set_page, args=(page_ids, False),
                   width="stretch")
    cols[3].button(f"Select all {total:,}{'+' if more else ''} matching", key=f"{key}_sel_all",
                   on_click=selection.select_all_matching, width="stretch")
    cols[4].button("Clear", key=f"{key}_sel_clear", on_click=selection.clear, width="stretch")
    return count


def thumbnail_grid(*, key: str, tiles: list[dict], selection: Selection,
                   on_details: Callable[[str], None] | None = None, per_row: int = 6) -> None:
    """Mount the grid; `selection` (kept in session state by the caller) follows the user's clicks, and
    `on_details(id)`, when given, runs when a tile's Details link is clicked. Both run as callbacks,
    before the script (or fragment) reruns."""

    def selection_changed() -> None:
        selection.from_browser((st.session_state.get(key) or {}).get("selection"))

    def details_clicked() -> None:
        image_id = (st.session_state.get(key) or {}).get("details")
        if image_id and on_details is not None:
            on_details(str(image_id))

    shown = {t["id"] for t in tiles}
    selected = shown if selection.all_matching else shown & selection.ids
    _grid(key=key, data={"tiles": tiles, "selected": sorted(selected), "epoch": selection.epoch, "per_row": per_row,
                         "details": on_details is not None},
          on_selection_change=selection_changed, on_details_change=details_clicked, height="content")
