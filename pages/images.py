"""Images page: the image library. Search and filter (kept in the URL), a grid or list of thumbnails,
selection (one, page, all matching), bulk actions, an image detail dialog, and the import dialog."""

from __future__ import annotations

import uuid

import streamlit as st

from core import limits
from core.datasets.dataset import list_datasets
from core.db import session_scope
from core.errors import UserError
from core.library import bulk
from core.library import images as lib
from core.library.bulk import delete_images
from core.library.duplicates import duplicates_of
from core.library.images import SORTS, ImageFilters, count_ahead, image_detail, list_images, matching_image_ids
from core.storage import get_storage
from core.vocabulary import IMAGE_STATUSES
from ui.actions import act
from ui.components.thumbnail_grid import Selection, selection_controls, thumbnail_grid, tile
from ui.duplicates_view import render_duplicates
from ui.shared import (
    allowed,
    library_filter_options,
    plain,
    refusal,
    storage_urls,
)
from ui.similar_view import like_view, open_like

SORT_LABELS = {"date_desc": "Newest first", "date_asc": "Oldest first", "name_asc": "Name A–Z",
               "name_desc": "Name Z–A", "size_desc": "Largest first", "size_asc": "Smallest first"}


# ---------------------------------------------------------------- filters in the URL


def filters_bar(options: dict) -> tuple[ImageFilters, str, str]:
    params = st.query_params
    initial = ImageFilters.from_params(params.to_dict())
    top = st.columns([3, 1.3, 1, 1])
    search = top[0].text_input("Search file names and tags", value=initial.search or "", key="img_q")
    sort_default = params.get("sort", "date_desc")
    sort = top[1].selectbox("Sort", list(SORTS), index=list(SORTS).index(sort_default) if sort_default in SORTS else 0,
                            format_func=SORT_LABELS.get, key="img_sort")
    view = top[2].segmented_control("View", ["Grid", "List"], default=params.get("view", "Grid"), key="img_view")
    if top[3].button("Import", icon=":material/upload:", type="primary", key="img_import", width="stretch",
                     disabled=not allowed("admin"), help=refusal("admin", "importing")):
        from ui.import_dialog import open_import_dialog

        open_import_dialog()
    cols = st.columns(4)

    def pick(col, label, name, values, chosen):
        return col.multiselect(label, sorted(set(values) | set(chosen)), default=chosen, key=f"img_{name}")

    filters = ImageFilters(
        search=search.strip() or None,
        statuses=pick(cols[0], "Status", "status", options["statuses"], initial.statuses),
        sources=pick(cols[1], "Source", "source", options["sources"], initial.sources),
        folders=pick(cols[2], "Folder", "folder", options["folders"], initial.folders),
        tags=pick(cols[3], "Tags (any)", "tags", options["tags"], initial.tags),
    )
    return filters, sort, view or "Grid"


def sync_query_params(filters: ImageFilters, sort: str, view: str, page: int) -> None:
    wanted = filters.to_params()
    if sort != "date_desc":
        wanted["sort"] = sort
    if view != "Grid":
        wanted["view"] = view
    if page > 1:
        wanted["page"] = str(page)
    for kept in ("image", "like"):
        if kept in st.query_params:
            wanted[kept] = st.query_params[kept]
    if wanted != st.query_params.to_dict():
        st.query_params.from_dict(wanted)


# ---------------------------------------------------------------- selection


def _selection() -> Selection:
    return st.session_state.setdefault("img_selection", Selection())


def selected_ids(filters: ImageFilters) -> list[uuid.UUID]:
    if _selection().all_matching:
        with session_scope() as session:
            return matching_image_ids(session=session, filters=filters)
    return [uuid.UUID(i) for i in _selection().ids]


def selection_bar(page_ids: list[str], total: int, more: bool) -> int:
    return selection_controls(st.columns([2, 1, 1, 1.4, 1]), _selection(), page_ids, total, key="img", more=more)


# ---------------------------------------------------------------- bulk actions


@st.dialog("Delete images")
def confirm_delete(ids: list[uuid.UUID], what: str) -> None:
    st.warning(f"Delete {len(ids):,} {what}? Their files, dataset memberships and labels go too. "
               "This cannot be undone.")
    if st.button(f"Delete {len(ids):,} images", type="primary", key="img_confirm_delete"):
        def delete(_session, actor):  # in batches, each its own short transaction (a labeler is never held long)
            bar = st.progress(0.0)
            return delete_images(actor=actor, image_ids=ids, storage=get_storage(),
                                 progress=lambda done, total, message: bar.progress(done / total, message))

        if act(delete) is not None:
            _selection().clear()
            st.rerun()


def bulk_actions(filters: ImageFilters, count: int, total: int, more: bool, by_filters: bool = True) -> None:
    """`by_filters`: offer "delete all matching the filters" (not under ?like=, where they are not shown)."""
    if not allowed("admin"):  # every bulk action here changes the library: admins only
        return
    plus = "+" if more and _selection().all_matching else ""
    with st.popover(f"Bulk actions ({count:,}{plus})", disabled=count == 0):
        tab_ds, tab_folder, tab_tags, tab_delete = st.tabs(["Add to dataset", "Folder", "Tags", "Delete"])
        with tab_ds:
            datasets = _datasets()
            if not datasets:
                st.caption("No datasets yet: create one on the Datasets page.")
            else:
                chosen = st.selectbox("Dataset", list(datasets), format_func=datasets.get, key="img_bulk_ds")
                if st.button("Add to dataset", key="img_bulk_ds_go"):
                    _apply(lambda ids, progress, actor: bulk.add_to_dataset(
                        actor=actor, dataset_id=chosen, image_ids=ids, progress=progress),
                        filters, "added to dataset")
        with tab_folder:
            folder = st.text_input("Folder (empty clears it)", key="img_bulk_folder")
            if st.button("Set folder", key="img_bulk_folder_go"):
                _apply(lambda ids, progress, actor: bulk.run_in_batches(ids, lambda s, chunk: lib.set_folder(
                    session=s, actor=actor, image_ids=chunk, folder=folder), progress=progress), filters,
                    "folder set")
        with tab_tags:
            mode = st.radio("Tags", ["Add", "Remove", "Replace"], horizontal=True, key="img_bulk_tag_mode")
            tags = st.text_input("Tags (comma-separated)", key="img_bulk_tags")
            if st.button(f"{mode} tags", key="img_bulk_tags_go"):
                values = lib.clean_tags(tags)
                kwargs = {"Add": {"add": values}, "Remove": {"remove": values}, "Replace": {"replace": values}}[mode]
                _apply(lambda ids, progress, actor: bulk.tag_images(actor=actor, image_ids=ids, progress=progress,
                                                                    **kwargs), filters, "tags updated")
        with tab_delete:
            if st.button(f"Delete {count:,} selected", key="img_bulk_delete"):
                confirm_delete(selected_ids(filters), "selected images")
            if by_filters and st.button(f"Delete all {total:,}{'+' if more else ''} matching the filters",
                                        key="img_bulk_delete_filtered"):
                with session_scope() as session:
                    confirm_delete(matching_image_ids(session=session, filters=filters), "images matching the filters")


def _apply(action, filters: ImageFilters, done: str) -> None:
    """`action(ids, progress, actor)`: a core.library.bulk call (batches, each its own transaction)."""
    ids = selected_ids(filters)

    def change(_session, actor):
        bar = st.progress(0.0)
        return action(ids, lambda finished, total, message: bar.progress(finished / total, message), actor)

    changed = act(change)
    if changed is not None:
        st.session_state["img_toast"] = f"{changed:,} images: {done}"
        st.rerun()


def _datasets() -> dict:
    with session_scope() as session:
        return {d.id: d.name for d in sorted(list_datasets(session=session), key=lambda d: d.name)}


# ---------------------------------------------------------------- grid, list, pages


def _open_detail(image_id: str) -> None:
    st.query_params["image"] = image_id


def grid(rows, urls) -> None:
    tiles = [tile(row.id, url, row.original_filename or row.filename) for row, url in zip(rows, urls, strict=True)]
    thumbnail_grid(key="img_grid", tiles=tiles, selection=_selection(), on_details=_open_detail)


def table(rows, urls) -> None:
    import pandas as pd

    selection = _selection()
    shown_selected = {str(r.id) for r in rows if selection.all_matching or str(r.id) in selection.ids}
    frame = pd.DataFrame([{
        "selected": str(r.id) in shown_selected, "thumbnail": u, "file": r.original_filename, "folder": r.folder,
        "tags": ", ".join(r.tags or []), "status": r.status, "source": r.source,
        "size (KB)": round((r.file_size_bytes or 0) / 1024, 1), "pixels": f"{r.width}×{r.height}",
        "added": r.created_at, "id": str(r.id)} for r, u in zip(rows, urls, strict=True)])
    edited = st.data_editor(frame, hide_index=True, width="stretch", key="img_table", disabled=[
        c for c in frame.columns if c != "selected"], column_config={
        "thumbnail": st.column_config.ImageColumn("", width="small"), "id": None,
        "selected": st.column_config.CheckboxColumn("✓", width="small")})
    chosen = [image_id for image_id, on in zip(edited["id"], edited["selected"], strict=True) if on]
    if set(chosen) != shown_selected:
        selection.set_page(list(edited["id"]), False)
        selection.set_page(chosen, True)


def pager(total: int, page: int, more: bool = False) -> int:
    """Page numbers; with `more` the count stopped at `total`, so the last page shown is not the end
    (paging on counts further)."""
    pages = max(1, -(-total // limits.PAGE_SIZE), page + 1 if more else 1)
    page = min(max(page, 1), pages)
    if pages > 1:
        shown = sorted({1, pages, *range(max(1, page - 3), min(pages, page + 3) + 1)})
        cols = st.columns(len(shown) + 1)
        cols[0].caption(f"Page {page} of {pages:,}{'+' if more else ''}")
        for col, number in zip(cols[1:], shown, strict=True):
            if col.button(str(number), key=f"img_page_{number}", type="primary" if number == page else "secondary",
                          width="stretch"):
                st.session_state["img_page"] = number
                st.rerun()
    return page


# ---------------------------------------------------------------- image detail


def _close_detail() -> None:
    st.query_params.pop("image", None)


@st.dialog("Image", width="large", on_dismiss=_close_detail)
def image_dialog(image_id: uuid.UUID) -> None:
    try:
        with session_scope() as session:
            detail = image_detail(session=session, image_id=image_id)
    except UserError as exc:
        st.error(str(exc))
        return
    image = detail["image"]
    left, right = st.columns([3, 2])
    with left:
        url = storage_urls([image.thumbnail_path])[0]
        preview = _preview_bytes(image.storage_path, image.file_size_bytes)
        st.image(preview if preview is not None else url, width="stretch")
    with right:
        st.markdown(f"**{plain(image.original_filename)}**")
        st.caption(f"{image.width}×{image.height} · {image.format} · {(image.file_size_bytes or 0) / 1024:,.1f} KB · "
                   f"{image.source} · added {image.created_at:%Y-%m-%d %H:%M}")
        st.caption(f"SHA-256 {image.file_hash[:16]}… · pHash {image.phash}")
        if st.button("More like this", key="img_more_like", icon=":material/image_search:"):
            open_like(image.id, _selection())
            st.rerun()  # the whole page: a dialog's button reruns only the dialog
        if allowed("admin"):
            _edit_image(image)
        else:
            st.caption(f"Folder: {plain(image.folder or '—')} · tags: {plain(', '.join(image.tags or []) or '—')} · "
                       f"status: {image.status}")
            st.caption(refusal("admin", "editing and deleting images"))
    st.markdown("**Datasets**")
    st.dataframe(_displayable(detail["datasets"]) or [{"dataset": "in no dataset"}], hide_index=True, width="stretch")
    st.markdown("**Labels**")
    st.dataframe(_displayable(detail["labels"]) or [{"labels": "none"}], hide_index=True, width="stretch")
    _duplicates_of(image_id)


def _edit_image(image) -> None:
    """Folder, tags, status and delete (admins)."""
    image_id = image.id
    with st.form(f"edit_{image_id}"):
        folder = st.text_input("Folder", value=image.folder or "")
        tags = st.text_input("Tags (comma-separated)", value=", ".join(image.tags or []))
        status = st.selectbox("Status", IMAGE_STATUSES, index=IMAGE_STATUSES.index(image.status))
        if st.form_submit_button("Save"):
            def save(session, actor):
                return lib.update_image(session=session, actor=actor, image_id=image_id, folder=folder,
                                    tags=tags, status=status)

            act(save, success="Saved")
    if st.button("Delete this image", key=f"del_{image_id}"):
        def delete_one(session, actor):
            return lib.delete_images(session=session, actor=actor, storage=get_storage(),
                                     image_ids=[image_id])

        if act(delete_one) is not None:
            st.query_params.pop("image", None)
        st.rerun()


def _displayable(rows: list[dict]) -> list[dict]:
    """Ids as text: Arrow (behind st.dataframe) has no UUID type."""
    return [{k: str(v) if isinstance(v, uuid.UUID) else v for k, v in row.items()} for row in rows or []]


def _preview_bytes(key: str, size: int | None) -> bytes | None:
    if size and size > 15 * 1024 * 1024:
        return None  # show the thumbnail rather than push a huge original to the browser
    try:
        return get_storage().get(key)
    except UserError:
        return None


def _duplicates_of(image_id: uuid.UUID) -> None:
    st.markdown("**Duplicates**")
    with session_scope() as session:
        found = act(lambda session, _actor: duplicates_of(session=session, image_id=image_id), session=session)
    if found:
        st.dataframe(_displayable(found), hide_index=True, width="stretch")
    else:
        st.caption("No duplicates found.")


# ---------------------------------------------------------------- the page


def library_tab() -> None:
    if st.session_state.get("img_toast"):
        st.toast(st.session_state.pop("img_toast"))
    if st.query_params.get("like"):  # more like one image: its neighbours, the same bulk actions
        return like_view(key="img_like", selection=_selection(),
                         bulk_actions=lambda count: bulk_actions(ImageFilters(), count, count, False, False))
    options = library_filter_options()
    filters, sort, view = filters_bar(options)
    signature = (filters.to_params(), sort)
    if "img_signature" not in st.session_state:  # first run: the page comes from a shared URL
        asked = str(st.query_params.get("page", "1"))
        st.session_state["img_page"] = int(asked) if asked.isdigit() else 1
    elif st.session_state["img_signature"] != signature:  # new filters or sort: back to page 1
        st.session_state["img_page"] = 1
        _selection().all_matching = False
    st.session_state["img_signature"] = signature
    page = st.session_state.get("img_page", 1)
    with session_scope() as session:
        offset = (max(page, 1) - 1) * limits.PAGE_SIZE
        count_limit = offset + count_ahead(filters)
        rows, total = list_images(session=session, filters=filters, sort=sort, offset=offset, count_limit=count_limit)
    more = total > count_limit
    total = min(total, count_limit)
    st.caption(f"{total:,}{'+' if more else ''} of {options['total_count']:,} images")
    page_ids = [str(r.id) for r in rows]
    count = selection_bar(page_ids, total, more)
    bulk_actions(filters, count, total, more)
    urls = storage_urls([r.thumbnail_path for r in rows])
    if not rows and not options["total_count"]:
        st.info("The library is empty. Bring images in with the **Import** button (upload, URLs, a labeled archive, "
                "the product catalog), or load the demo data from the Dashboard (admins).")
    elif not rows:
        st.info("No images match. Loosen the filters, or import more with the Import button.")
    elif view == "List":
        table(rows, urls)
    else:
        grid(rows, urls)
    page = pager(total, page, more)
    sync_query_params(filters, sort, view, page)
    if st.query_params.get("image"):
        try:
            image_dialog(uuid.UUID(st.query_params["image"]))
        except ValueError:
            st.query_params.pop("image", None)


def render() -> None:
    st.title("Images")
    # Lazy tabs: only the open tab runs (the Duplicates tab's queries are not the library's cost).
    library, duplicates = st.tabs(["Library", "Duplicates"], key="img_tab", on_change="rerun")
    if library.open:
        with library:
            library_tab()
    if duplicates.open:
        with duplicates:
            render_duplicates()


if __name__ == "__main__":
    render()
