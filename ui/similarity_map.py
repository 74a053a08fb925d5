"""The dataset page's Map tab: the dataset's images on the 2-D map of the embedding index (plotly
Scattergl: WebGL, so 50,000 points stay fluid) coloured by class, split, prediction or label errors.
A lasso or box selection becomes the dataset grid's selection (ui.dataset_grid): its number keys
label it and its bulk actions act on it, here below the map and on the Images tab; the library's
bulk actions (tags, another dataset) are one click away on the Images page.

Why on the dataset page: every colour worth having (labels, splits, AI labels, the label-error
finder's result) belongs to a dataset, and labeling a selection is the dataset grid's job."""

from __future__ import annotations

import uuid

import pandas  # noqa: F401  imported whole before plotly checks for it: a half-imported pandas in another
import plotly.graph_objects as go  # session's thread made plotly's array check fail once (seen in a browser test)
import streamlit as st

from core.db import session_scope
from core.similarity.browse import COLOUR_BY, dataset_map, selected_items
from core.similarity.projection import start_map
from ui.actions import act, user_errors
from ui.components.thumbnail_grid import Selection
from ui.dataset_grid import bulk_actions, dataset_and_classes, key_bar, tiles
from ui.freshness import dataset_revision
from ui.grid_selection import grid_selection
from ui.shared import refusal, watch_jobs
from ui.similar_view import index_state, no_index

PALETTE = ["#2563EB", "#D97706", "#059669", "#DC2626", "#7C3AED", "#DB2777", "#0891B2", "#65A30D", "#EA580C",
           "#4F46E5", "#0D9488", "#B45309"]
MUTED = {"unlabeled", "no prediction", "not flagged", "unassigned", "not checked (run the label-error finder)"}
TILES_SHOWN = 48
METHOD_NAMES = {"auto": "Automatic (UMAP up to 5,000 images, else PCA)", "pca": "PCA (seconds)",
                "umap": "UMAP (keeps neighbourhoods; ≈ 7 min per 10,000 here)"}


def figure(data: dict) -> tuple[go.Figure, list[list[str]]]:
    """The Scattergl figure and, per trace, the ids of its points: a selection names points by trace
    and index, so the ids never travel (1.8 MB of the 4.2 MB sent at 50,000 points)."""
    fig, traces = go.Figure(), []
    ids, names = data["ids"], data["names"]
    if data["scored"]:
        groups = {"unscored": [i for i, v in enumerate(data["colour"]) if v is None],
                  "label-error score": [i for i, v in enumerate(data["colour"]) if v is not None]}
    else:
        groups: dict[str, list[int]] = {}
        for row, value in enumerate(data["colour"]):
            groups.setdefault(value, []).append(row)
        groups = dict(sorted(groups.items(), key=lambda item: (item[0] in MUTED, item[0])))
    for number, (name, rows) in enumerate(groups.items()):
        if not rows:
            continue
        if name == "label-error score":
            marker = {"size": 7, "color": [data["colour"][r] for r in rows], "colorscale": "Reds", "cmin": 0, "cmax": 1,
                      "showscale": True, "colorbar": {"title": "score"}}
        else:
            marker = {"size": 6, "color": "#C7CCD4" if name in MUTED or name == "unscored"
                      else PALETTE[number % len(PALETTE)]}
        fig.add_trace(go.Scattergl(x=[data["x"][r] for r in rows], y=[data["y"][r] for r in rows], mode="markers",
                                   name=f"{name} ({len(rows):,})", marker=marker,
                                   hovertext=[names[r] for r in rows] if any(names) else None,
                                   hoverinfo="text+name" if any(names) else "name"))
        traces.append([ids[r] for r in rows])
    fig.update_layout(height=560, dragmode="lasso", margin={"t": 10, "b": 10, "l": 10, "r": 10},
                      legend={"orientation": "h", "y": -0.05}, xaxis={"visible": False},
                      yaxis={"visible": False, "scaleanchor": "x"})
    return fig, traces


def _selected(points: list[dict], traces: list[list[str]]) -> list[str]:
    chosen = []
    for point in points:
        curve, index = point.get("curve_number"), point.get("point_index", point.get("point_number"))
        if curve is not None and index is not None and curve < len(traces) and index < len(traces[curve]):
            chosen.append(traces[curve][index])
    return list(dict.fromkeys(chosen))


def render_map(dataset_id: uuid.UUID) -> None:
    state = index_state()
    if not state["ready"]:
        no_index(state, key=f"dsmap_{dataset_id}")
        return
    colour_by = st.segmented_control("Colour by", list(COLOUR_BY), format_func=COLOUR_BY.get, default="class",
                                     key=f"dsmap_colour_{dataset_id}") or "class"
    data = _map_data(dataset_id, colour_by, state["index"]["count"])
    if data is None:
        return
    if data["map"] is None:
        st.info("The map of the embedding index is not computed yet.")
        _compute_button(dataset_id, "Compute the map")
        return
    _caption(data, dataset_id)
    fig, traces = data["figure"]
    key = f"dsmap_chart_{dataset_id}"
    selection = grid_selection(dataset_id)

    def selected() -> None:  # a new lasso or box: it becomes the grid's selection
        points = (st.session_state.get(key) or {}).get("selection", {}).get("points", [])
        chosen = _selected(points, st.session_state.get(f"{key}_traces", []))
        if chosen:
            selection.clear()
            selection.set_page(chosen, True)

    st.session_state[f"{key}_traces"] = traces
    st.plotly_chart(fig, key=key, on_select=selected, selection_mode=("lasso", "box"),
                    config={"displaylogo": False, "scrollZoom": True})
    _selection_actions(dataset_id, selection)


def _map_data(dataset_id: uuid.UUID, colour_by: str, index_count: int) -> dict | None:
    """The map's points, kept while the dataset's revision, the colouring and the index stand: a
    lasso reruns the page, and reading 50,000 points again each time took seconds."""
    ident = (dataset_revision(dataset_id), colour_by, index_count)
    cached = st.session_state.get(f"dsmap_data_{dataset_id}")
    if cached and cached[0] == ident:
        return cached[1]
    data = None
    with user_errors(), session_scope() as session:
        data = dataset_map(session, dataset_id=dataset_id, colour_by=colour_by)
    if data is not None and data["map"] is not None:
        data["figure"] = figure(data)  # half a second at 50,000 points: built once with the data
        st.session_state[f"dsmap_data_{dataset_id}"] = (ident, data)
    return data


def _caption(data: dict, dataset_id: uuid.UUID) -> None:
    facts = data["map"]
    shown = len(data["ids"])
    text = f"{shown:,} images shown" + (f" (a sample of {data['total']:,})" if shown < data["total"] else "")
    text += f" · {facts['method'].upper()} of {facts['count']:,} vectors ({facts['source']})"
    if data["missing"]:
        text += f" · {data['missing']:,} of this dataset's images are not on the map yet"
    st.caption(text + " · draw a lasso or a box to select")
    if facts["index_count"] > facts["count"] or data["missing"]:
        _compute_button(dataset_id, "Recompute the map", secondary=True)


def _compute_button(dataset_id: uuid.UUID, label: str, secondary: bool = False) -> None:
    job_key = f"dsmap_job_{dataset_id}"
    if job_key in st.session_state:
        def done(_jobs) -> None:  # the new map replaces the kept one
            st.session_state.pop(job_key, None)
            st.session_state.pop(f"dsmap_data_{dataset_id}", None)
            st.rerun()

        watch_jobs([st.session_state[job_key]], on_done=done)
        return
    refused = refusal("admin", "computing the map")
    cols = st.columns([2, 1], vertical_alignment="bottom")
    method = cols[0].selectbox("Projection", list(METHOD_NAMES), format_func=METHOD_NAMES.get,
                               key=f"dsmap_method_{dataset_id}", disabled=refused is not None)
    if cols[1].button(label, key=f"dsmap_go_{dataset_id}", disabled=refused is not None, help=refused,
                      type="secondary" if secondary else "primary", width="stretch"):
        job_id = act(lambda _session, actor: start_map(actor=actor, method=method))
        if job_id is not None:
            st.session_state[job_key] = job_id
            st.rerun()


def _selection_actions(dataset_id: uuid.UUID, selection: Selection) -> None:
    """What a map selection can become: labels (number keys, bulk actions), or the library's actions."""
    dataset, _space, keyed = dataset_and_classes(dataset_id)
    count = len(selection.ids) if not selection.all_matching else 0
    cols = st.columns([2, 1.3, 1.3, 1], vertical_alignment="center")
    cols[0].markdown(f"**{count:,} selected**")

    def ids_provider() -> list[uuid.UUID]:
        return [uuid.UUID(i) for i in selection.ids]

    with cols[1]:
        bulk_actions(dataset, keyed, ids_provider, count)
    if cols[2].button("Tag or add to a dataset…", key=f"dsmap_library_{dataset_id}", disabled=count == 0,
                      width="stretch", help="Opens the Images page with this selection and its bulk actions"):
        st.session_state["img_selection"] = Selection(ids=set(selection.ids))
        st.switch_page("pages/images.py")
    cols[3].button("Clear", key=f"dsmap_clear_{dataset_id}", on_click=selection.clear, width="stretch")
    key_bar(dataset, keyed, ids_provider, count)
    if toast := st.session_state.pop(f"dsgrid_toast_{dataset_id}", None):
        st.toast(toast)
    if error := st.session_state.pop(f"dsgrid_error_{dataset_id}", None):
        st.error(error)
    if count:
        _selected_tiles(dataset_id, selection)


def _selected_tiles(dataset_id: uuid.UUID, selection: Selection) -> None:
    """The first TILES_SHOWN selected images, with their label chips (as on the grid)."""
    _dataset, space, _keyed = dataset_and_classes(dataset_id)
    chosen = [uuid.UUID(i) for i in sorted(selection.ids)[:TILES_SHOWN]]
    with session_scope() as session:
        items = selected_items(session, dataset_id=dataset_id, image_ids=chosen)
    tiles(dataset_id, items, {c["id"]: c for c in space})
