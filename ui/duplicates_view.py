"""Duplicates tab of the Images page: check one image against the library, find exact and near-duplicate
groups (a background job: the search reads every hash), review each group, keep one image and delete
the extras."""

from __future__ import annotations

import uuid

import streamlit as st

from core.db import session_scope
from core.library.duplicate_search import group_rows, latest_search, start_duplicate_search
from core.library.duplicates import CONFIRM_MAX_DISTANCE, DEFAULT_THRESHOLD, MAX_THRESHOLD, check_image, delete_extras
from core.storage import get_storage
from ui.actions import act
from ui.shared import allowed, refusal, storage_urls, watch_jobs

GROUPS_PER_PAGE = 10
THUMBS_PER_ROW = 6


def _caption(row: dict) -> str:
    size = f"{(row.get('file_size_bytes') or 0) / 1024:,.0f} KB"
    return f"{row.get('original_filename') or row.get('filename') or ''} · {row.get('width')}×{row.get('height')} · {size}"


def check_section() -> None:
    st.subheader("Check an image")
    upload = st.file_uploader("Is this image already in the library?", key="dup_check_file")
    if upload is None:
        return
    threshold = st.session_state.get("dup_threshold", DEFAULT_THRESHOLD)

    def check(session, actor):
        return check_image(session=session, data=upload.getvalue(), threshold=threshold)

    result = act(check)
    if result is None:
        return
    matches = [{"match": "exact copy", "id": i} for i in result["exact"]] + result["near"]
    if not matches:
        st.success(f"No duplicate in the library (pHash distance ≤ {threshold}, confirmed).")
        return
    st.warning(f"{len(result['exact'])} exact and {len(result['near'])} near duplicates in the library.")
    st.dataframe([{"match": m["match"], "file": m.get("filename"), "pHash distance": m.get("phash_distance", 0),
                   "confirm distance": m.get("confirm_distance", 0), "id": str(m["id"])} for m in matches],
                 hide_index=True, width="stretch")


def search_controls() -> None:
    st.subheader("Duplicate groups")
    left, middle, right = st.columns([3, 3, 2], vertical_alignment="bottom")
    threshold = left.slider("pHash distance threshold", 0, MAX_THRESHOLD, DEFAULT_THRESHOLD, key="dup_threshold",
                            help="Largest number of differing bits (of 64) for two images to be candidates.")
    confirm = middle.toggle("Confirm with a second measure", value=True, key="dup_confirm",
                            help="Keep a candidate pair only when a 256-bit pHash of the thumbnails agrees too "
                                 f"(≤ {CONFIRM_MAX_DISTANCE} of its 192 mid-frequency bits differ). Without it, "
                                 "similar but different images (packshots on one background) are grouped.")
    refused = refusal("admin", "searching the library for duplicates")
    if right.button("Find duplicates", type="primary", key="dup_find", disabled=refused is not None, help=refused):
        act(lambda _session, actor: start_duplicate_search(actor=actor, threshold=threshold, confirm=confirm))


def _group_block(kind: str, group: list[dict]) -> None:
    first = str(group[0]["id"])
    with st.container(border=True):
        urls = storage_urls([row["thumbnail_path"] for row in group])
        for start in range(0, len(group), THUMBS_PER_ROW):
            columns = st.columns(THUMBS_PER_ROW)
            for column, row, url in zip(columns, group[start:start + THUMBS_PER_ROW],
                                        urls[start:start + THUMBS_PER_ROW], strict=False):
                with column:
                    if url:
                        st.image(url, width="stretch")
                    st.caption(_caption(row))
        ids = [str(row["id"]) for row in group]
        names = {str(row["id"]): row["original_filename"] or str(row["id"]) for row in group}
        left, right = st.columns([4, 1])
        if allowed("admin"):
            left.radio("Keep", ids, format_func=lambda i: names[i], horizontal=True, key=f"dup_keep_{kind}_{first}")
            right.checkbox("Delete the others", key=f"dup_pick_{kind}_{first}")


def _picked(kind: str, groups: list[list[dict]]) -> dict[uuid.UUID, list[uuid.UUID]]:
    chosen: dict[uuid.UUID, list[uuid.UUID]] = {}
    for group in groups:
        first = str(group[0]["id"])
        if st.session_state.get(f"dup_pick_{kind}_{first}"):
            keep = st.session_state.get(f"dup_keep_{kind}_{first}", first)
            chosen[uuid.UUID(keep)] = [row["id"] for row in group if str(row["id"]) != keep]
    return chosen


def delete_bar(kind: str, groups: list[list[dict]]) -> None:
    if not allowed("admin"):
        st.caption(refusal("admin", "deleting images"))
        return
    chosen = _picked(kind, groups)
    count = sum(len(extras) for extras in chosen.values())
    if not chosen:
        st.caption("Tick “Delete the others” on the groups to clean up.")
        return
    if not st.session_state.get("dup_confirm_delete"):
        if st.button(f"Delete {count} extra images from {len(chosen)} groups", key="dup_delete"):
            st.session_state["dup_confirm_delete"] = True
            st.rerun()
        return
    st.warning(f"Delete {count} images for good? They also leave every dataset they are in.")
    yes, no = st.columns(2)
    if yes.button(f"Yes, delete {count} images", type="primary", key="dup_delete_yes"):
        def change(session, actor):
            return delete_extras(session=session, actor=actor, storage=get_storage(),
                                 group_keep=chosen)

        deleted = act(change)
        st.session_state["dup_confirm_delete"] = False
        if deleted is not None:
            for group in groups:
                st.session_state.pop(f"dup_pick_{kind}_{group[0]['id']}", None)
            st.session_state["dup_toast"] = f"Deleted {deleted} images"
            st.rerun()
    if no.button("Cancel", key="dup_delete_no"):
        st.session_state["dup_confirm_delete"] = False
        st.rerun()


def groups_section() -> None:
    with session_scope() as session:
        latest = latest_search(session=session)
    if latest is None:
        st.info("No search yet: choose a threshold and press “Find duplicates”.")
        return
    if latest["status"] in ("queued", "running"):
        watch_jobs([latest["job_id"]], on_done=lambda _jobs: st.rerun())
        return
    if latest["status"] != "succeeded":
        st.error(f"The last search {latest['status']}: {latest['error'] or 'no result'}")
        return
    result = latest["result"]
    kind = st.radio("Show", ["near", "exact"], horizontal=True, key="dup_kind",
                    format_func=lambda k: "Near duplicates" if k == "near" else "Exact copies (same bytes)")
    with session_scope() as session:
        groups = group_rows(session=session, groups=result[kind])
    confirmed = "confirmed by the 256-bit pHash" if result.get("confirmed") else "pHash only, not confirmed"
    st.caption(f"{len(groups):,} groups, {sum(len(g) - 1 for g in groups):,} extra images · threshold "
               f"{result['threshold']}, {confirmed} · searched {latest['finished_at']:%Y-%m-%d %H:%M}")
    if not groups:
        st.success("No duplicates found.")
        return
    pages = max(1, -(-len(groups) // GROUPS_PER_PAGE))
    page = st.number_input("Page", 1, pages, 1, key="dup_page") if pages > 1 else 1
    shown = groups[(page - 1) * GROUPS_PER_PAGE:page * GROUPS_PER_PAGE]
    for group in shown:
        _group_block(kind, group)
    delete_bar(kind, shown)


def render_duplicates() -> None:
    check_section()
    st.divider()
    search_controls()
    groups_section()
    if st.session_state.get("dup_toast"):
        st.toast(st.session_state.pop("dup_toast"))
