"""Labeling page: label a dataset's images one at a time from the keyboard.

Reached from a dataset (`?dataset=<id>&image=<id>`). Only the labeling part reruns on a key press
(a fragment); keys come from the browser-side queue in pages/components/labeling_keys and are
applied in order by core.labeling_session, one transaction per action.
"""

from __future__ import annotations

import uuid

import streamlit as st

from core import labeling
from core import labeling_session as flow
from core.classes import create_class
from core.db import session_scope
from core.errors import UserError
from core.storage import get_storage
from pages.components.labeling_keys import image_url, labeling_view
from pages.ui import allowed, current_user, refusal

MODE_NAMES = {"all": "All", "unlabeled": "Unlabeled", "review": "Review", "random": "Random",
              "low_confidence": "Low confidence"}
PREFETCH = 3

user = current_user()


def _uuid(raw) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(raw)) if raw else None
    except ValueError:
        return None


def _size(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


def _pick_dataset() -> uuid.UUID | None:
    with session_scope() as session:
        datasets = labeling.datasets_for_labeling(session=session)
    if not datasets:
        st.info("No datasets yet: create one on the Datasets page, then label it here.")
        return None
    names = {str(d[0]): f"{d[1]} ({d[2]}/{d[3]} labeled)" for d in datasets}
    chosen = st.selectbox("Dataset", list(names), format_func=names.get, index=None,
                          placeholder="Choose a dataset to label")
    return _uuid(chosen)


def _state(dataset_id: uuid.UUID, image_id: uuid.UUID | None, mode: str | None) -> flow.LabelingState | None:
    state = st.session_state.get("labeling_state")
    if state is not None and state.dataset_id == dataset_id:
        return state
    try:
        state = flow.start(session_scope, dataset_id=dataset_id, actor=user,
                           mode=mode if mode in MODE_NAMES else ("all" if image_id else "unlabeled"),
                           image_id=image_id)
    except UserError as exc:
        st.error(str(exc))
        return None
    st.session_state["labeling_state"] = state
    return state


def _on_keys() -> None:
    """A batch of keys from the browser: apply it before the fragment renders."""
    state: flow.LabelingState = st.session_state["labeling_state"]
    batch = st.session_state["labeling_view"].get("keys")
    if isinstance(batch, dict):
        flow.apply_keys(session_scope, state, batch=batch, classes=st.session_state.get("labeling_classes", []))


def _press(key: str) -> None:
    """A button: the same path as a key, for the image shown."""
    state: flow.LabelingState = st.session_state["labeling_state"]
    st.session_state["labeling_button_seq"] = st.session_state.get("labeling_button_seq", 0) + 1
    flow.apply_keys(session_scope, state, classes=st.session_state.get("labeling_classes", []),
                    batch={"load": "buttons", "seq": st.session_state["labeling_button_seq"],
                           "image_id": str(state.image_id) if state.image_id else None, "keys": [key]})


def _on_mode() -> None:
    state: flow.LabelingState = st.session_state["labeling_state"]
    try:
        flow.set_mode(session_scope, state, st.session_state["labeling_mode"] or state.mode)
    except UserError as exc:
        state.message = ("error", str(exc))


def _card_data(card: labeling.ImageCard, storage) -> dict:
    dims = f"{card.width}×{card.height}" if card.width else ""
    return {"id": str(card.image_id), "url": image_url(storage, card.storage_path),
            "caption": f"{card.filename} · {dims} · {_size(card.file_size_bytes)} · {card.status}",
            "labels": [{"name": lbl.class_name, "color": lbl.color, "confidence": lbl.confidence,
                        "ai": lbl.is_ai_generated, "reviewed": lbl.is_reviewed} for lbl in card.labels],
            "selected": [str(c) for c in card.class_ids]}


def _view_data(state: flow.LabelingState, classes: list[labeling.ClassKey],
               ahead: list[labeling.ImageCard]) -> dict:
    card = state.card
    suggested = {label.class_id: label.confidence for label in (card.labels if card else ())
                 if label.is_ai_generated}
    storage = get_storage()
    image = _card_data(card, storage) if card else None
    next_cards = [_card_data(c, storage) for c in ahead]
    return {
        "acks": state.acks, "image": image, "multi": state.multi, "can_label": allowed("labeler"),
        "empty_text": "Nothing left in this queue." if not card else "",
        "labels": image["labels"] if image else [],
        "selected": [str(c) for c in state.selection],
        "classes": [{"id": str(c.class_id), "name": c.name, "color": c.color, "key": c.key, "count": c.image_count,
                     "pinned": c.pinned, "suggested": suggested.get(c.class_id) or 0} for c in classes],
        "ahead": next_cards,  # what Enter/S/→ will show next: the browser shows it before the save returns
        "prefetch": [c["url"] for c in next_cards],
    }


@st.cache_data(ttl=3, show_spinner=False)
def _queue_size(dataset_id: uuid.UUID, mode: str) -> int:
    """A COUNT over the dataset: refreshed every few seconds, not on every key."""
    with session_scope() as session:
        return labeling.queue_size(session=session, dataset_id=dataset_id, mode=mode)


@st.cache_data(ttl=2, show_spinner=False)
def _classes(dataset_id: uuid.UUID, user_id: uuid.UUID) -> list[labeling.ClassKey]:
    with session_scope() as session:
        return labeling.classes_for_labeling(session=session, dataset_id=dataset_id, user_id=user_id)


def _context(state: flow.LabelingState) -> tuple[labeling.Progress, int | None, list[labeling.ImageCard]]:
    """Progress, place and the cards of the next images: read again only when the image, its revision,
    the place in history or the mode changed (a number key re-renders without touching the database)."""
    card = state.card
    ident = (state.mode, card.image_id, card.label_revision, card.status, state.history_pos,
             len(state.history), tuple(state.upcoming)) if card else (state.mode,)
    cached = st.session_state.get("labeling_context")
    if cached and cached[0] == ident:
        return cached[1]
    with session_scope() as session:
        progress = labeling.progress(session=session, dataset_id=state.dataset_id)
        place = labeling.position(session=session, dataset_id=state.dataset_id, image_id=card.image_id) \
            if card and state.mode == "all" else None
        ahead = labeling.image_cards(session=session, dataset_id=state.dataset_id,
                                     image_ids=flow.ahead(state)[:PREFETCH])
    context = (progress, place, ahead)
    st.session_state["labeling_context"] = (ident, context)
    return context


@st.fragment
def labeling_panel(dataset_id: uuid.UUID) -> None:
    state: flow.LabelingState = st.session_state["labeling_state"]
    if state.leave:
        state.leave = False
        st.switch_page("pages/datasets.py", query_params={"dataset": str(dataset_id)})
    classes = _classes(dataset_id, user.id)
    progress, place, ahead = _context(state)
    st.session_state["labeling_classes"] = classes
    size = _queue_size(dataset_id, state.mode)
    if state.image_id:
        st.query_params.update({"dataset": str(dataset_id), "image": str(state.image_id), "mode": state.mode})

    top = st.columns([3, 3, 1], vertical_alignment="center")
    top[0].progress(progress.percent / 100,
                    text=f"{progress.labeled} / {progress.total} labeled ({progress.percent:.0f}%)")
    st.session_state["labeling_mode"] = state.mode
    top[1].segmented_control("Queue", list(MODE_NAMES), format_func=MODE_NAMES.get, key="labeling_mode",
                             on_change=_on_mode, label_visibility="collapsed")
    top[2].markdown(f"**{place} / {size}**" if place else f"**{size}** in queue")
    if refused := refusal("labeler", "labeling"):
        st.caption(f"{refused} You can look through the images (←, →) but not label them.")
    if state.message:
        kind, text = state.message
        getattr(st, kind if kind in ("info", "warning", "error") else "info")(text)
    labeling_view(data=_view_data(state, classes, ahead), on_keys=_on_keys)



def action_buttons(dataset_id: uuid.UUID) -> None:
    """Mouse controls, outside the fragment so a key press does not re-render them; a click runs
    the same path as its key."""
    refused = refusal("labeler", "labeling")
    buttons = st.columns(7)
    buttons[0].button("← Prev", on_click=_press, args=("left",), width="stretch")
    buttons[1].button("Next →", on_click=_press, args=("right",), width="stretch")
    for column, label, key in ((buttons[2], "Clear (C)", "c"), (buttons[3], "Skip (S)", "s")):
        column.button(label, on_click=_press, args=(key,), width="stretch", disabled=refused is not None, help=refused)
    buttons[4].button("Save & Next (Enter)", on_click=_press, args=("enter",), type="primary", width="stretch",
                      disabled=refused is not None, help=refused)
    if refused is None:
        with buttons[5].popover("Pin classes", width="stretch"):
            _pins(dataset_id, _classes(dataset_id, user.id))
    if allowed("admin"):
        with buttons[6].popover("+ New class", width="stretch"):
            _new_class()


def _new_class() -> None:
    name = st.text_input("Class name", key="labeling_new_class", max_chars=200)
    if st.button("Create", key="labeling_new_class_create"):
        try:
            with session_scope() as session:
                create_class(session=session, actor=user, name=name)
        except UserError as exc:
            st.error(str(exc))
        else:
            _classes.clear()
            st.session_state.pop("labeling_new_class", None)
            st.rerun()


def _pins(dataset_id: uuid.UUID, classes: list[labeling.ClassKey]) -> None:
    names = {str(c.class_id): c.name for c in classes}
    pinned = [str(c.class_id) for c in classes if c.pinned]
    chosen = st.multiselect("Classes on keys 1–0, in order", list(names), default=pinned, format_func=names.get,
                            max_selections=labeling.KEYED_CLASSES, key="labeling_pins")
    if st.button("Save pins", key="labeling_pins_save"):
        try:
            with session_scope() as session:
                labeling.set_pins(session=session, actor=user, dataset_id=dataset_id,
                                  class_ids=[uuid.UUID(c) for c in chosen])
        except UserError as exc:
            st.error(str(exc))
        else:
            _classes.clear()
            st.rerun()


st.title("Labeling")
remembered = st.session_state.get("labeling_state")
dataset_id = (_uuid(st.query_params.get("dataset")) or (remembered.dataset_id if remembered else None)
              or _pick_dataset())
if dataset_id is not None:
    state = _state(dataset_id, _uuid(st.query_params.get("image")), st.query_params.get("mode"))
    if state is not None:
        labeling_panel(dataset_id)
        action_buttons(dataset_id)
