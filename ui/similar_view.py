"""More like this, shared by the Images page, the dataset grid, the Labeling and Predict pages: the
images most similar to one (core.similarity.browse) with a least-similarity slider, drawn as a
thumbnail grid whose selection is the caller's (so the caller's bulk actions and number keys act on
it). Without an embedding index it says why, and offers admins the embeddings job."""

from __future__ import annotations

import uuid

import streamlit as st

from core.db import session_scope
from core.errors import UserError
from core.library.images import image_detail
from core.similarity.browse import embedding_choices, more_like_this, similar_to_image, warm_index
from core.similarity.browse import index_state as read
from core.similarity.embeddings import start_embedding
from ui.actions import act, user_errors
from ui.components.thumbnail_grid import Selection, thumbnail_grid, tile
from ui.grid_selection import grid_state
from ui.shared import plain, refusal, storage_urls, watch_jobs

COUNTS = (12, 24, 48, 96)
DEFAULT_MIN = 0.5


def index_state() -> dict:
    with session_scope() as session:
        return read(session=session)


def no_index(state: dict, key: str) -> None:
    """Why similar images cannot be shown yet, and the embeddings job for those who may start it."""
    st.info(state["message"])
    if state["building"] and state["building"]["job_id"]:
        watch_jobs([uuid.UUID(state["building"]["job_id"])], on_done=lambda _jobs: st.rerun())
        return
    refused = refusal("admin", "computing image embeddings")
    if refused:
        st.caption(refused)
        return
    with session_scope() as session:
        choices = embedding_choices(session=session)
    labels = [choice["label"] for choice in choices]
    picked = st.selectbox("Embed the library with", range(len(choices)), format_func=labels.__getitem__,
                          key=f"{key}_embed_model")
    if st.button("Start the embeddings job", key=f"{key}_embed_go", icon=":material/play_arrow:"):
        choice = choices[picked]
        job_id = act(lambda _session, actor: start_embedding(actor=actor, model=choice["model"],
                                                             weights=choice["weights"]))
        if job_id is not None:
            st.toast(f"Embeddings job queued ({job_id})")
            st.rerun()


def index_loaded(state: dict) -> bool:
    """Whether this server holds the index; if not, says it is loading and redraws once it is."""
    with session_scope() as session:
        if warm_index(session=session):
            return True
    st.info(f"Loading the similarity index ({state['index']['count']:,} images) into this server: once per "
            "server, about a minute per 100,000 images here.")

    @st.fragment(run_every=2.0)
    def wait() -> None:
        with session_scope() as session:
            if warm_index(session=session, wait_s=0):
                st.rerun()

    wait()
    return False


def similar_tiles(image_id: uuid.UUID, *, key: str, dataset_id: uuid.UUID | None = None) -> list[dict] | None:
    """The slider and count, then the matches ({id, similarity, filename, thumbnail_path}); None when
    there is no index (explained) or the query was refused (shown)."""
    state = index_state()
    if not state["ready"]:
        no_index(state, key)
        return None
    if not index_loaded(state):
        return None
    cols = st.columns([3, 1])
    least = cols[0].slider("Least similarity", 0.0, 1.0, DEFAULT_MIN, 0.01, key=f"{key}_min",
                           help="Cosine similarity of the embedding vectors: 1 is the same picture")
    count = cols[1].selectbox("At most", COUNTS, index=1, key=f"{key}_k")
    with user_errors(), session_scope() as session:
        return more_like_this(session, image_id=image_id, k=count, min_similarity=least, dataset_id=dataset_id)
    return None


def more_like_this_panel(image_id: uuid.UUID, *, key: str, selection: Selection,
                         dataset_id: uuid.UUID | None = None) -> list[str]:
    """Similar images as tiles selectable into `selection`, with "Select these" (replaces the
    selection with them); the ids shown."""
    found = similar_tiles(image_id, key=key, dataset_id=dataset_id)
    if found is None:
        return []
    ids = [str(match["id"]) for match in found]
    where = "in this dataset" if dataset_id else "in the library"
    cols = st.columns([3, 1, 1], vertical_alignment="center")
    cols[0].markdown(f"**{len(ids)} similar images** {where}" if ids else
                     "No image is that similar: lower the least similarity.")
    cols[1].button(f"Select these {len(ids)}", key=f"{key}_select", disabled=not ids, width="stretch",
                   on_click=_replace, args=(selection, ids))
    cols[2].button("Add to selection", key=f"{key}_add", disabled=not ids, width="stretch",
                   on_click=selection.set_page, args=(ids, True))
    if found:
        urls = storage_urls([match["thumbnail_path"] for match in found])
        thumbnail_grid(key=f"{key}_tiles", selection=selection, tiles=[
            tile(match["id"], url, f"{match['similarity']:.2f} · {match['filename']}")
            for match, url in zip(found, urls, strict=True)])
    return ids


def _replace(selection: Selection, ids: list[str]) -> None:
    selection.clear()
    selection.set_page(ids, True)


def like_view(*, key: str, selection: Selection, bulk_actions, dataset_id: uuid.UUID | None = None,
              back=None) -> None:
    """A page's "more like <image>" mode (the image id in ?like=): the neighbours as tiles in the
    page's own `selection`, the count and `bulk_actions(count)` above them; `back` leaves the mode."""
    try:
        image_id = uuid.UUID(str(st.query_params.get("like")))
        with session_scope() as session:
            name = image_detail(session=session, image_id=image_id)["image"].original_filename
    except (ValueError, UserError):
        st.query_params.pop("like", None)
        st.rerun()
    top = st.columns([4, 1.3, 1.2], vertical_alignment="center")
    top[0].markdown(f"### More like {plain(name)}")
    with top[1]:
        bulk_actions(len(selection.ids))
    top[2].button("Back", key=f"{key}_back", icon=":material/arrow_back:", on_click=back or _leave_like,
                  width="stretch")
    st.markdown(f"**{len(selection.ids):,} selected**")
    more_like_this_panel(image_id, key=key, selection=selection, dataset_id=dataset_id)


def _leave_like() -> None:
    st.query_params.pop("like", None)


def open_like(image_id, selection: Selection) -> None:
    """Callback: show the images like `image_id` (?like=), starting from an empty selection."""
    selection.clear()
    st.query_params.pop("image", None)
    st.query_params["like"] = str(image_id)


def carry_to_grid(dataset_id: uuid.UUID, ids: set[str]) -> None:
    """Open the dataset's grid with `ids` selected (its number keys and bulk actions act on them)."""
    grid_state(dataset_id)["selection"] = Selection(ids=set(ids))
    st.switch_page("pages/datasets.py", query_params={"dataset": str(dataset_id)})


def carry_to_images(ids: set[str]) -> None:
    """Open the Images page with `ids` selected (tags, folder, add to a dataset, delete)."""
    st.session_state["img_selection"] = Selection(ids=set(ids))
    st.switch_page("pages/images.py")


def labeling_section(dataset_id: uuid.UUID) -> None:
    """The Labeling page's "More like this": the current image's neighbours in this dataset, to
    select and carry to the dataset grid, where one key labels them all."""
    with st.expander("More like this image"):
        def find() -> None:  # the image on screen now (the labeling fragment moves it between full runs)
            state = st.session_state.get("labeling_state")
            st.session_state["labeling_like"] = str(state.image_id) if state and state.image_id else None
            st.session_state["labeling_like_sel"] = Selection()

        st.button("Find images like the current one", key="labeling_like_go", on_click=find)
        like = st.session_state.get("labeling_like")
        if not like:
            return
        selection = st.session_state.setdefault("labeling_like_sel", Selection())
        more_like_this_panel(uuid.UUID(like), key="labeling_like", selection=selection, dataset_id=dataset_id)
        if st.button(f"Label the {len(selection.ids)} selected on the dataset grid", key="labeling_like_grid",
                     disabled=not selection.ids):
            carry_to_grid(dataset_id, selection.ids)


def upload_section(data: bytes, number: int) -> None:
    """The Predict page's "More like this in the library" for an uploaded image (embedded with the
    index's own model, so the first query in a process loads it)."""
    if not st.toggle("More like this in the library", key=f"predict_like_{number}"):
        return
    state = index_state()
    if not state["ready"]:
        no_index(state, key=f"predict_like_{number}")
        return
    if not index_loaded(state):
        return
    least = st.slider("Least similarity", 0.0, 1.0, DEFAULT_MIN, 0.01, key=f"predict_like_min_{number}")
    found = None
    with user_errors(), st.spinner("Embedding the image…"), session_scope() as session:
        found = similar_to_image(session, data=data, k=24, min_similarity=least)
    if found is None:
        return
    if not found:
        st.caption("No library image is that similar: lower the least similarity.")
        return
    selection = st.session_state.setdefault(f"predict_like_sel_{number}", Selection())
    urls = storage_urls([match["thumbnail_path"] for match in found])
    thumbnail_grid(key=f"predict_like_tiles_{number}", selection=selection, per_row=4, tiles=[
        tile(match["id"], url, f"{match['similarity']:.2f} · {match['filename']}")
        for match, url in zip(found, urls, strict=True)])
    if st.button(f"Open the {len(selection.ids)} selected on the Images page", key=f"predict_like_open_{number}",
                 disabled=not selection.ids):
        carry_to_images(selection.ids)
