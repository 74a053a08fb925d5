"""The dataset detail's image grid: thumbnails with label chips and split badges, filters, selection
(one, page, all matching) and bulk actions. With images selected, a class's number key (1–9, 0)
labels them all: native `st.button(shortcut=…)`, which ignores keys typed into inputs.

The grid is a fragment: a key press reruns only the grid, not the whole page. The tiles are one
component (ui/components/thumbnail_grid): selection happens in the browser, so a click landing
during a run is kept.
"""

from __future__ import annotations

import uuid

import streamlit as st

from core import limits
from core.datasets import dataset as ds
from core.datasets.classes import COLOR_RE
from core.datasets.dataset import get_dataset, jobs_writing_to
from core.datasets.grid import GridFilters, dataset_image_ids
from core.datasets.grid import dataset_grid as grid_page
from core.datasets.label_space import keyed_classes, label_space
from core.db import session_scope
from core.errors import UserError
from core.labeling.bulk_labels import key_press_mode
from core.library import bulk
from core.library.bulk import delete_images, set_label
from core.storage import get_storage
from core.vocabulary import SPLITS
from ui.components.thumbnail_grid import Selection, selection_controls, thumbnail_grid, tile
from ui.freshness import rerun_app
from ui.grid_selection import grid_selection, grid_state
from ui.shared import SPLIT_COLORS, allowed, current_user, plain, refusal, storage_urls
from ui.similar_view import more_like_this_panel

PER_ROW = 6
ANY = "any"


# ---------------------------------------------------------------- selection (per dataset)


def selected_ids(dataset_id: uuid.UUID, filters: GridFilters) -> list[uuid.UUID]:
    selection = grid_selection(dataset_id)
    if selection.all_matching:
        with session_scope() as session:
            return dataset_image_ids(session=session, dataset_id=dataset_id, filters=filters)
    return [uuid.UUID(i) for i in selection.ids]


# ---------------------------------------------------------------- filters


def filters_bar(dataset_id: uuid.UUID, classes: list[dict]) -> GridFilters:
    names = {c["id"]: c["name"] for c in classes}
    cols = st.columns(5)
    label = cols[0].selectbox("Label", [ANY, "unlabeled", *names], key=f"dsf_label_{dataset_id}",
                              format_func=lambda v: {"any": "Any", "unlabeled": "Unlabeled"}.get(v) or names[v])
    split = cols[1].selectbox("Split", [ANY, "train", "val", "test", "unassigned"], key=f"dsf_split_{dataset_id}",
                              format_func=lambda v: "Any" if v == ANY else v)
    status = cols[2].selectbox("Status", [ANY, "pending", "labeled", "review", "completed", "skipped"],
                               key=f"dsf_status_{dataset_id}", format_func=lambda v: "Any" if v == ANY else v)
    source = cols[3].selectbox("Labeled by", [ANY, "ai", "manual"], key=f"dsf_source_{dataset_id}",
                               format_func={"any": "Anyone", "ai": "AI", "manual": "People"}.get)
    reviewed = cols[4].selectbox("Reviewed", [ANY, "yes", "no"], key=f"dsf_reviewed_{dataset_id}",
                                 format_func={"any": "Any", "yes": "Reviewed", "no": "Not reviewed"}.get)
    return GridFilters(
        class_id=label if label not in (ANY, "unlabeled") else None, unlabeled=label == "unlabeled",
        split=None if split == ANY else split, status=None if status == ANY else status,
        source=None if source == ANY else source, reviewed={"yes": True, "no": False}.get(reviewed))


# ---------------------------------------------------------------- actions
# Actions run as on_click callbacks: they finish before the grid reruns, so the grid shows their
# result without a second rerun, and a message waits in session state for the grid to show it.


def _run(dataset_id: uuid.UUID, action, done: str) -> None:
    """Callback: run `action() -> int` (a core.library.bulk call: batches, each its own short
    transaction, so labelers are never held long); clear the selection on success."""
    try:
        changed = action()
    except UserError as exc:
        st.session_state[f"dsgrid_error_{dataset_id}"] = str(exc)
        return
    st.session_state[f"dsgrid_toast_{dataset_id}"] = done.format(n=changed)
    grid_selection(dataset_id).clear()


def label_selected(dataset: dict, class_row: dict, ids_provider) -> None:
    """Single-label: the class replaces. Multi-label: added, or removed when every selected image has it."""
    def action():
        ids = ids_provider()
        with session_scope() as session:
            mode = key_press_mode(session=session, dataset_id=dataset["id"], image_ids=ids, class_id=class_row["id"])
        return set_label(actor=current_user(), dataset_id=dataset["id"], image_ids=ids, class_id=class_row["id"],
                         mode=mode)

    _run(dataset["id"], action, f"{{n}} images changed: {plain(class_row['name'])}")


def key_bar(dataset: dict, keyed: list[dict], ids_provider, count: int) -> None:
    """One button per keyed class (the dataset's classes in this user's key order, as on the Labeling
    page); its number key labels every selected image."""
    keyed = [c for c in keyed if c["key"]]
    if not keyed:
        st.caption("This dataset has no classes yet: add them on its Settings tab (or import a labeled archive).")
        return
    st.caption("Label the selection: press a class's number key" +
               (" (adds it, or removes it when all selected images have it)" if dataset["task_type"] == "multi_label"
                else ""))
    refused = refusal("labeler", "labeling")
    if refused:
        st.caption(refused)
    cols = st.columns(len(keyed))
    for col, class_row in zip(cols, keyed, strict=True):
        key = class_row["key"]
        col.button(f"{key} · {plain(class_row['name'])}", key=f"dskey_{dataset['id']}_{key}", shortcut=key,
                   disabled=count == 0 or refused is not None, width="stretch",
                   help=refused or f"Label the selected images {plain(class_row['name'])}",
                   on_click=label_selected, args=(dataset, class_row, ids_provider))


@st.dialog("Delete images")
def confirm_delete(dataset_id: uuid.UUID, ids: list[uuid.UUID]) -> None:
    st.warning(f"Delete {len(ids):,} images from the library? They leave every dataset, with their labels "
               "and files. This cannot be undone.")
    if st.button(f"Delete {len(ids):,} images", type="primary", key="dsgrid_confirm_delete"):
        def action():
            return delete_images(actor=current_user(), image_ids=ids, storage=get_storage())

        _run(dataset_id, action, "{n} images deleted")
        st.rerun()


def bulk_actions(dataset: dict, classes: list[dict], ids_provider, count: int) -> None:
    """Labeling actions for labelers; splits, removal and deletion for admins; nothing for viewers."""
    if not allowed("labeler"):
        return
    with st.popover(f"Bulk actions ({count:,})", disabled=count == 0):
        admin = allowed("admin")
        tabs = st.tabs(["Set label", "Clear labels", *(["Set split", "Remove"] if admin else [])])
        _label_tabs(dataset, classes, ids_provider, count, tabs[:2])
        if admin:
            _admin_tabs(dataset, ids_provider, count, tabs[2:])


def _label_tabs(dataset: dict, classes: list[dict], ids_provider, count: int, tabs) -> None:
    dataset_id, actor, state = dataset["id"], current_user(), st.session_state
    label_tab, clear_tab = tabs
    with label_tab:
        names = {c["id"]: (f"{c['key']} · " if c["key"] else "") + c["name"] for c in classes}  # keyed order
        st.selectbox("Class", list(names), format_func=names.get, key=f"dsb_class_{dataset_id}")
        modes = ["replace"] if dataset["task_type"] == "single_label" else ["add", "remove", "replace"]
        st.radio("How", modes, horizontal=True, key=f"dsb_mode_{dataset_id}")
        st.button(f"Apply to {count:,} images", key=f"dsb_label_go_{dataset_id}", disabled=not names,
                  on_click=_run, args=(dataset_id, lambda: bulk.set_label(
                      actor=actor, dataset_id=dataset_id, image_ids=ids_provider(),
                      class_id=state[f"dsb_class_{dataset_id}"], mode=state[f"dsb_mode_{dataset_id}"]),
                      "{n} images labeled"))
    with clear_tab:
        st.button(f"Clear the labels of {count:,} images", key=f"dsb_clear_go_{dataset_id}", on_click=_run, args=(
            dataset_id, lambda: bulk.clear_labels(actor=actor, dataset_id=dataset_id, image_ids=ids_provider()),
            "{n} images cleared"))


def _admin_tabs(dataset: dict, ids_provider, count: int, tabs) -> None:
    dataset_id, actor, state = dataset["id"], current_user(), st.session_state
    split_tab, remove_tab = tabs
    with split_tab:
        st.radio("Split", list(SPLITS), horizontal=True, key=f"dsb_split_{dataset_id}")
        st.button("Apply", key=f"dsb_split_go_{dataset_id}", on_click=_run, args=(
            dataset_id, lambda: bulk.run_in_batches(ids_provider(), lambda session, chunk: ds.set_split(
                session=session, actor=actor, dataset_id=dataset_id, image_ids=chunk,
                split=state[f"dsb_split_{dataset_id}"])),
            "{n} images moved"))
    with remove_tab:
        st.button(f"Remove {count:,} from the dataset", key=f"dsb_remove_go_{dataset_id}",
                  help="The images stay in the library", on_click=_run, args=(
                      dataset_id, lambda: bulk.remove_from_dataset(actor=actor, dataset_id=dataset_id,
                                                                   image_ids=ids_provider()),
                      "{n} images removed from the dataset"))
        if st.button(f"Delete {count:,} images from the library", key=f"dsb_delete_go_{dataset_id}"):
            confirm_delete(dataset_id, ids_provider())


# ---------------------------------------------------------------- tiles


def _color(value: str | None) -> str:
    return value if value and COLOR_RE.match(value) else "#6B7280"


def tile_chips(labels: list, classes_by_id: dict, split: str | None, status: str) -> list[dict]:
    """Label chips in class colours (filled), the split and, when notable, the status (outlined). The
    component writes chip text with textContent, so names are never markup; odd colours are refused."""
    chips = []
    for label in labels:
        row = classes_by_id.get(label.class_id, {"name": "?", "color": None})
        extra = ""
        if label.is_ai_generated:
            extra = " · AI" + (f" {label.confidence:.0%}" if label.confidence is not None else "")
            extra += " ✓" if label.is_reviewed else ""
        chips.append({"text": f"{row['name']}{extra}", "color": _color(row["color"]), "filled": True})
    split = split or "unassigned"
    chips.append({"text": split, "color": SPLIT_COLORS[split]})
    if status not in ("labeled", "pending"):
        chips.append({"text": status, "color": "#9CA3AF"})
    return chips


def tiles(dataset_id: uuid.UUID, items: list, classes_by_id: dict) -> None:
    urls = storage_urls([item.thumbnail_path for item in items])
    thumbnail_grid(key=f"dsgrid_tiles_{dataset_id}", selection=grid_selection(dataset_id), tiles=[
        tile(item.image_id, url, item.filename, chips=tile_chips(item.labels, classes_by_id, item.split, item.status))
        for item, url in zip(items, urls, strict=True)])


def _turn(dataset_id: uuid.UUID, step: int) -> None:
    grid_state(dataset_id)["page"] += step


def pager(dataset_id: uuid.UUID, total: int) -> int:
    state = grid_state(dataset_id)
    pages = max(1, -(-total // limits.PAGE_SIZE))
    state["page"] = min(max(state["page"], 1), pages)
    if pages > 1:
        cols = st.columns([1, 1, 3])
        cols[0].button("◀ Previous", key=f"dsgrid_prev_{dataset_id}", disabled=state["page"] == 1,
                       on_click=_turn, args=(dataset_id, -1))
        cols[1].button("Next ▶", key=f"dsgrid_next_{dataset_id}", disabled=state["page"] == pages,
                       on_click=_turn, args=(dataset_id, 1))
        cols[2].caption(f"Page {state['page']} of {pages}")
    return state["page"]


# ---------------------------------------------------------------- the fragment


def dataset_and_classes(dataset_id: uuid.UUID) -> tuple[dict, list[dict], list[dict]]:
    """The dataset's row, its whole label space (chips, filters) and its classes in this user's key
    order (core.datasets.label_space: the same keys as the Labeling page), read on every run."""
    with session_scope() as session:
        row = get_dataset(session=session, dataset_id=dataset_id)
        dataset = {"id": row.id, "name": row.name, "task_type": row.task_type, "image_count": row.image_count,
                   "labeled_image_count": row.labeled_image_count, "class_count": row.class_count}
        space = [{"id": c.class_id, "name": c.name, "color": c.color, "is_active": c.is_active}
                 for c in label_space(session=session, dataset_id=dataset_id)]
        keyed = [{"id": c.class_id, "name": c.name, "color": c.color, "key": c.key}
                 for c in keyed_classes(session=session, dataset_id=dataset_id, user_id=current_user().id)]
    return dataset, space, keyed


REFRESH_S = 2.0


def _writers(dataset_id: uuid.UUID) -> int:
    with session_scope() as session:
        return jobs_writing_to(session=session, dataset_id=dataset_id)


def dataset_grid(dataset_id: uuid.UUID) -> None:
    """The grid as a fragment (a key press or a bulk action reruns only it: it holds every number they
    move). While an import or AI-label job writes into the dataset, it refreshes itself every
    REFRESH_S and redraws the page once the job ends (ui.freshness)."""
    busy = _writers(dataset_id) > 0

    @st.fragment(run_every=REFRESH_S if busy else None)
    def grid() -> None:
        if busy and not _writers(dataset_id):
            rerun_app()
        _grid_body(dataset_id)

    grid()


def _like_section(dataset_id: uuid.UUID, selection: Selection) -> bool:
    """"More like this" for one selected image: its neighbours in this dataset replace the tiles, in
    the grid's own selection (number keys and bulk actions act on them); True while shown."""
    state = grid_state(dataset_id)
    if not state.get("like"):
        if len(selection.ids) == 1 and not selection.all_matching:
            st.button("More like the selected image", key=f"dsgrid_like_go_{dataset_id}",
                      icon=":material/image_search:", on_click=state.update, args=({"like": next(iter(selection.ids))},))
        return False
    cols = st.columns([4, 1], vertical_alignment="center")
    cols[0].markdown("**More like the image chosen**: select among them, then press a class's key")
    cols[1].button("Back to the grid", key=f"dsgrid_like_back_{dataset_id}", on_click=state.pop, args=("like", None),
                   width="stretch")
    more_like_this_panel(uuid.UUID(state["like"]), key=f"dsgrid_like_{dataset_id}", selection=selection,
                         dataset_id=dataset_id)
    return True


def _grid_body(dataset_id: uuid.UUID) -> None:
    dataset, classes, keyed = dataset_and_classes(dataset_id)
    classes_by_id = {c["id"]: c for c in classes}
    pct = 100.0 * dataset["labeled_image_count"] / dataset["image_count"] if dataset["image_count"] else 0.0
    st.progress(pct / 100, text=f"{dataset['labeled_image_count']:,} of {dataset['image_count']:,} images "
                                f"labeled ({pct:.1f}%) · {dataset['class_count']} classes used")
    filters = filters_bar(dataset_id, classes)
    state = grid_state(dataset_id)
    selection = state["selection"]
    if state.get("filters") != filters:  # a new filter starts at page 1 with a fresh "all matching"
        state["filters"], state["page"] = filters, 1
        selection.all_matching = False
    with session_scope() as session:
        total, items = grid_page(session=session, dataset_id=dataset_id, filters=filters,
                                 offset=(state["page"] - 1) * limits.PAGE_SIZE, limit=limits.PAGE_SIZE)
    page_ids = [str(item.image_id) for item in items]

    def ids_provider() -> list[uuid.UUID]:
        return selected_ids(dataset_id, filters)

    cols = st.columns([2, 1, 1, 1.4, 1, 1.3])
    count = selection_controls(cols, selection, page_ids, total, key=f"dsgrid_{dataset_id}")
    with cols[5]:
        bulk_actions(dataset, keyed, ids_provider, count)
    key_bar(dataset, keyed, ids_provider, count)
    if toast := st.session_state.pop(f"dsgrid_toast_{dataset_id}", None):
        st.toast(toast)
    if error := st.session_state.pop(f"dsgrid_error_{dataset_id}", None):
        st.error(error)
    if _like_section(dataset_id, selection):
        return
    if not items:
        st.info("No images match these filters." if dataset["image_count"] else
                "This dataset has no images yet: use Import, or add images from the library below.")
        return
    tiles(dataset_id, items, classes_by_id)
    pager(dataset_id, total)
