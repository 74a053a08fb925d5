"""Datasets page: the list (counts, labeled %), create, and a dataset's detail (`?dataset=<id>`):
the labeling grid, adding library images, splits, versions, health, export, settings."""

from __future__ import annotations

import uuid

import streamlit as st

from core.datasets.dataset import (
    create_dataset,
    delete_dataset,
    get_dataset,
    library_image_ids,
    list_datasets,
    update_dataset,
)
from core.db import session_scope
from core.errors import UserError
from core.library.bulk import add_to_dataset
from ui.actions import act
from ui.dataset_classes import render_label_space
from ui.dataset_grid import dataset_grid
from ui.shared import allowed, current_user, plain, refusal

TASK_LABELS = {"single_label": "Single-label", "multi_label": "Multi-label"}


def _dataset_id() -> uuid.UUID | None:
    raw = st.query_params.get("dataset")
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        st.query_params.pop("dataset", None)
        return None


def _open(dataset_id) -> None:
    st.query_params["dataset"] = str(dataset_id)


def _close() -> None:
    st.query_params.pop("dataset", None)


# ---------------------------------------------------------------- create and edit


def settings_form(key: str, current: dict | None = None) -> dict | None:
    """The fields of a dataset; returns them when the form is submitted."""
    current = current or {}
    ratios = current.get("split_ratios") or {"train": 0.8, "val": 0.1, "test": 0.1}
    prep = current.get("preprocessing") or {"image_size": 224, "normalize": True}
    with st.form(key, clear_on_submit=current == {}):
        name = st.text_input("Name", value=current.get("name", ""), max_chars=200)
        description = st.text_area("Description", value=current.get("description") or "", height=68)
        task = st.radio("Task", list(TASK_LABELS), format_func=TASK_LABELS.get, horizontal=True,
                        index=list(TASK_LABELS).index(current.get("task_type", "single_label")))
        cols = st.columns(3)
        train = cols[0].number_input("Train", 0.0, 1.0, float(ratios.get("train", 0.8)), 0.05)
        val = cols[1].number_input("Val", 0.0, 1.0, float(ratios.get("val", 0.1)), 0.05)
        test = cols[2].number_input("Test", 0.0, 1.0, float(ratios.get("test", 0.1)), 0.05)
        cols = st.columns(2)
        size = cols[0].number_input("Image size (px)", 16, 2048, int(prep.get("image_size", 224)), 16)
        normalize = cols[1].checkbox("Normalize", value=bool(prep.get("normalize", True)))
        if not st.form_submit_button("Save" if current else "Create dataset", type="primary"):
            return None
    return {"name": name, "description": description, "task_type": task,
            "split_ratios": {"train": round(train, 4), "val": round(val, 4), "test": round(test, 4)},
            "preprocessing": {"image_size": int(size), "normalize": normalize}}


def create_section() -> None:
    with st.expander("New dataset", icon=":material/add:"):
        values = settings_form("ds_create")
        if values is not None:
            def change(session, actor):
                return create_dataset(session=session, actor=actor, **values).id

            created = act(change)
            if created is not None:
                _open(created)
                st.rerun()


# ---------------------------------------------------------------- list


def list_view() -> None:
    st.title("Datasets")
    if allowed("admin"):
        create_section()
    else:
        st.caption(refusal("admin", "creating, editing and deleting datasets"))
    with session_scope() as session:
        rows = [{"id": d.id, "name": d.name, "description": d.description, "task": TASK_LABELS[d.task_type],
                 "images": d.image_count, "labeled": d.labeled_image_count, "classes": d.class_count,
                 "created": d.created_at} for d in list_datasets(session=session)]
    if not rows:
        st.info("No datasets yet. Create one above, then add images from the library or import them.")
        return
    for row in rows:
        with st.container(border=True):
            cols = st.columns([3, 1.2, 1, 1, 2.2, 1])
            cols[0].markdown(f"**{plain(row['name'])}**")
            if row["description"]:
                cols[0].caption(plain(row["description"]))
            cols[1].caption(row["task"])
            cols[2].metric("Images", f"{row['images']:,}")
            cols[3].metric("Classes", row["classes"])
            pct = row["labeled"] / row["images"] if row["images"] else 0.0
            cols[4].progress(pct, text=f"{row['labeled']:,} labeled ({pct:.0%})")
            cols[5].button("Open", key=f"ds_open_{row['id']}", on_click=_open, args=(row["id"],), width="stretch")


# ---------------------------------------------------------------- detail


def _add_images(dataset_id: uuid.UUID, ids_provider, asked: int | None = None) -> None:
    """Callback: add library images (in batches: a labeler of this dataset is never held long); the
    outcome waits in session state, and the grid, drawn after this, already counts them."""
    key = f"dsadd_message_{dataset_id}"
    try:
        ids = ids_provider()
        added = add_to_dataset(actor=current_user(), dataset_id=dataset_id, image_ids=ids)
    except UserError as exc:
        st.session_state[key] = ("error", str(exc))
        return
    already = (asked if asked is not None else len(ids)) - added
    st.session_state[key] = ("success", f"{added:,} images added." + (f" ({already:,} were already in the dataset.)"
                                                                      if already else ""))


def _pasted_ids(dataset_id: uuid.UUID) -> list[str]:
    text = st.session_state.get(f"dsadd_ids_{dataset_id}") or ""
    return list(dict.fromkeys(part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()))


def add_images_section(dataset_id: uuid.UUID) -> None:
    """Add library images by filters (folder, tags, source, status, file name) or by pasted ids (each
    tile's id copies with one click). Admins only (core refuses others)."""
    message = st.session_state.pop(f"dsadd_message_{dataset_id}", None)
    with st.expander("Add images from the library", icon=":material/add_photo_alternate:",
                     expanded=message is not None):
        if message:
            getattr(st, message[0])(message[1])
        refused = refusal("admin", "adding images to a dataset")
        if refused:
            st.caption(refused)
        by_filters, by_ids = st.tabs(["By filters", "By ids"])
        with by_filters:
            cols = st.columns(5)
            filters = {"folder": cols[0].text_input("Folder", key=f"dsadd_folder_{dataset_id}").strip() or None,
                       "tags": [t.strip() for t in cols[1].text_input("Tags (any, comma-separated)",
                                                                      key=f"dsadd_tags_{dataset_id}").split(",")
                                if t.strip()] or None,
                       "source": cols[2].selectbox("Source", ["", "upload", "url_import", "products_import",
                                                              "cutouts_import", "od_import", "dataset_import"],
                                                   key=f"dsadd_source_{dataset_id}") or None,
                       "status": cols[3].selectbox("Status", ["", "pending", "labeled", "review", "completed",
                                                              "skipped"], key=f"dsadd_status_{dataset_id}") or None,
                       "search": cols[4].text_input("File name contains", key=f"dsadd_q_{dataset_id}").strip() or None}

            def matching() -> list[uuid.UUID]:
                with session_scope() as session:
                    return library_image_ids(session=session, not_in_dataset=dataset_id, **filters)

            count = len(matching())
            st.caption(f"{count:,} library images match and are not in this dataset yet.")
            st.button(f"Add {count:,} images", key=f"dsadd_filters_go_{dataset_id}",
                      disabled=not count or refused is not None, type="primary",
                      on_click=_add_images, args=(dataset_id, matching))
        with by_ids:
            st.text_area("Image ids (one per line or comma-separated; copy them from a tile's id)",
                         key=f"dsadd_ids_{dataset_id}")
            st.button("Add these images", key=f"dsadd_ids_go_{dataset_id}", disabled=refused is not None,
                      on_click=lambda: _add_images(dataset_id, lambda: _pasted_ids(dataset_id),
                                                   len(_pasted_ids(dataset_id))))


@st.dialog("Delete dataset")
def confirm_delete(dataset_id: uuid.UUID, name: str, images: int) -> None:
    st.warning(f"Delete the dataset {plain(name)} with its {images:,} memberships, labels and versions? "
               "The images stay in the library. This cannot be undone.")
    if st.button("Delete dataset", type="primary", key="ds_confirm_delete"):
        def change(session, actor):
            return delete_dataset(session=session, actor=actor, dataset_id=dataset_id)

        if act(change) is not None:
            _close()
            st.rerun()


def settings_section(dataset: dict) -> None:
    render_label_space(dataset["id"])
    st.divider()

    if not allowed("admin"):
        st.caption(refusal("admin", "editing and deleting datasets"))
        return
    values = settings_form(f"ds_edit_{dataset['id']}", dataset)
    if values is not None:
        def change(session, actor):
            return update_dataset(session=session, actor=actor, dataset_id=dataset["id"], **values).id

        if act(change, success="Dataset saved") is not None:
            st.rerun()
    st.divider()
    if st.button("Delete dataset…", key=f"ds_delete_{dataset['id']}", icon=":material/delete:"):
        confirm_delete(dataset["id"], dataset["name"], dataset["image_count"])


def _section(name: str, dataset_id: uuid.UUID) -> None:
    """A tab written by another area (ui/dataset_sections.py); absent until it exists."""
    try:
        import ui.dataset_sections as sections
    except ImportError:
        st.info(f"{name.title()} are not available yet.")
        return
    getattr(sections, f"render_{name}")(dataset_id)


def detail_view(dataset_id: uuid.UUID) -> None:
    try:
        with session_scope() as session:
            row = get_dataset(session=session, dataset_id=dataset_id)
            dataset = {"id": row.id, "name": row.name, "description": row.description, "task_type": row.task_type,
                       "image_count": row.image_count, "split_ratios": row.split_ratios,
                       "preprocessing": row.preprocessing}
    except UserError as exc:
        st.error(str(exc))
        st.button("All datasets", on_click=_close, key="ds_back_missing")
        return
    st.button("All datasets", on_click=_close, key="ds_back", type="tertiary", icon=":material/arrow_back:")
    with st.container(horizontal=True, vertical_alignment="center"):
        st.title(plain(dataset["name"]), anchor=False, width="stretch")
        if st.button("Import", icon=":material/upload:", key="ds_import", disabled=not allowed("admin"),
                     help=refusal("admin", "importing")):
            from ui.import_dialog import open_import_dialog

            open_import_dialog(dataset_id=dataset_id)
        if st.button("Label", icon=":material/keyboard:", key="ds_label", type="primary"):
            st.switch_page("pages/labeling.py", query_params={"dataset": str(dataset_id)})
    st.caption(" · ".join(filter(None, [TASK_LABELS[dataset["task_type"]], plain(dataset["description"])])))
    tabs = st.tabs(["Images", "Map", "Splits", "Versions", "Health", "Export", "Settings"],
                   key=f"ds_tabs_{dataset_id}", on_change="rerun")
    with tabs[0]:
        if tabs[0].open:
            dataset_grid(dataset_id)
            if allowed("admin"):
                add_images_section(dataset_id)
    with tabs[1]:
        if tabs[1].open:
            from ui.similarity_map import render_map

            render_map(dataset_id)
    for tab, name in zip(tabs[2:6], ("splits", "versions", "health", "export"), strict=True):
        with tab:
            if tab.open:
                _section(name, dataset_id)
    with tabs[6]:
        if tabs[6].open:
            settings_section(dataset)


def render() -> None:
    dataset_id = _dataset_id()
    if dataset_id is None:
        list_view()
    else:
        detail_view(dataset_id)


if __name__ == "__main__":
    render()
