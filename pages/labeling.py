"""Labeling page: label a dataset's images one at a time from the keyboard.

Reached from a dataset (`?dataset=<id>&image=<id>`). Only the labeling part reruns on a key press
(a fragment); keys come from the browser-side queue in ui/components/labeling_keys and are
applied in order by core.labeling.keyboard_session, one transaction per action. The classes and their keys
are the dataset's label space in this user's key order (core.datasets.label_space), the same as on the
dataset grid. Every number on the page is read inside the fragment, keyed on the dataset's revision
(ui.freshness), so none is older than the last save.
"""

from __future__ import annotations

import uuid

import streamlit as st

from core.datasets.classes import list_classes
from core.datasets.label_space import KEYED_CLASSES, ClassKey, space_class_ids
from core.datasets.label_space_edits import add_classes
from core.db import session_scope
from core.errors import UserError
from core.labeling import actions, reservations
from core.labeling import keyboard_session as flow
from core.labeling import queue as labeling
from ui.actions import act
from ui.cluster_labeling import cluster_view
from ui.components.labeling_keys import labeling_view
from ui.freshness import dataset_revision
from ui.shared import allowed, current_user, plain, refusal, storage_url

MODE_NAMES = {"all": "All", "unlabeled": "Unlabeled", "review": "Review", "random": "Random",
              "low_confidence": "Low confidence", "useful": "Most useful next"}
MODE_HELP = ("All: every image · Unlabeled · Review: AI labels to check · Random · Low conf.: AI labels below 50 % · "
             "Most useful next: typical and diverse images first (embedding index), the model's least sure "
             "first once it has predicted")
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


def _choose(dataset_id: str | None) -> None:
    """The picker's callback: open that dataset (a fresh labeling state)."""
    _leave()
    if dataset_id:
        st.query_params.clear()
        st.query_params["dataset"] = dataset_id


def _leave() -> None:
    """End this page's labeling state (its reservations go back to the queue)."""
    state = st.session_state.pop("labeling_state", None)
    st.session_state.pop("labeling_context", None)
    if state is not None:
        flow.end(session_scope, state)


def _pick_dataset() -> None:
    """No dataset chosen yet: the datasets with their progress (read now, so never stale)."""
    with session_scope() as session:
        datasets = labeling.datasets_for_labeling(session=session)
    if not datasets:
        st.info("No datasets yet. Create one on the **Datasets** page, add images to it, then label it here.")
        st.page_link("pages/datasets.py", label="Go to Datasets", icon=":material/dataset:")
        return
    names = {str(d[0]): f"{d[1]} ({d[2]:,}/{d[3]:,} labeled)" for d in datasets}
    picked = st.selectbox("Dataset", list(names), format_func=names.get, index=None,
                          placeholder="Choose a dataset to label", key="labeling_pick")
    if picked:
        _choose(picked)
        st.rerun()


def _state(dataset_id: uuid.UUID, image_id: uuid.UUID | None, mode: str | None) -> flow.LabelingState | None:
    state = st.session_state.get("labeling_state")
    if state is not None and state.dataset_id == dataset_id:
        if not state.held_at:  # back from another page, which ended its reservations: claim them again
            flow.hold(session_scope, state)
        return state
    if state is not None:  # another dataset now: the old one's reservations end
        _leave()
    try:
        state = flow.start(session_scope, dataset_id=dataset_id, actor=user,
                           mode=mode if mode in MODE_NAMES else ("all" if image_id else "unlabeled"),
                           image_id=image_id)
    except UserError as exc:
        st.error(str(exc))
        return None
    st.session_state["labeling_state"] = state
    return state


def _shown_classes() -> list[ClassKey]:
    """The classes (and keys) the page showed last: the keys the labeler pressed refer to them."""
    cached = st.session_state.get("labeling_context")
    return cached[1][2] if cached else []


def _on_keys() -> None:
    """A batch of keys (or a heartbeat) from the browser: apply it before the fragment renders."""
    state: flow.LabelingState = st.session_state["labeling_state"]
    batch = st.session_state["labeling_view"].get("keys")
    if isinstance(batch, dict):
        flow.apply_keys(session_scope, state, batch=batch, classes=_shown_classes())


def _press(key: str) -> None:
    """A button: the same path as a key, for the image shown."""
    state: flow.LabelingState = st.session_state["labeling_state"]
    st.session_state["labeling_button_seq"] = st.session_state.get("labeling_button_seq", 0) + 1
    flow.apply_keys(session_scope, state, classes=_shown_classes(),
                    batch={"load": "buttons", "seq": st.session_state["labeling_button_seq"],
                           "image_id": str(state.image_id) if state.image_id else None, "keys": [key]})


def _on_mode() -> None:
    state: flow.LabelingState = st.session_state["labeling_state"]
    try:
        flow.set_mode(session_scope, state, st.session_state["labeling_mode"] or state.mode)
    except UserError as exc:
        state.message = ("error", str(exc))


def _card_data(card: labeling.ImageCard) -> dict:
    dims = f"{card.width}×{card.height}" if card.width else ""
    return {"id": str(card.image_id), "url": storage_url(card.storage_path),
            "caption": f"{card.filename} · {dims} · {_size(card.file_size_bytes)} · {card.status} · id {card.image_id}",
            "width": card.width, "height": card.height,
            "labels": [{"name": lbl.class_name, "color": lbl.color, "confidence": lbl.confidence,
                        "ai": lbl.is_ai_generated, "reviewed": lbl.is_reviewed} for lbl in card.labels],
            "selected": [str(c) for c in card.class_ids]}


def _empty_text(state: flow.LabelingState, held: int) -> str:
    if state.card is not None:
        return ""
    text = f"Nothing left for you in the {MODE_NAMES[state.mode]} queue."
    if held:
        text += (f" {held:,} more are open in other labelers' pages; they come back here when those pages move "
                 "on, close or sit idle for a minute.")
    elif state.mode != "all":
        text += " Choose another queue above, or go back to the dataset (Esc)."
    return text


def _view_data(state: flow.LabelingState, classes: list[ClassKey], ahead: list[labeling.ImageCard],
               held: int) -> dict:
    card = state.card
    suggested = {label.class_id: label.confidence for label in (card.labels if card else ())
                 if label.is_ai_generated}
    image = _card_data(card) if card else None
    next_cards = [_card_data(c) for c in ahead]
    return {
        "acks": state.acks, "image": image, "multi": state.multi, "can_label": allowed("labeler"),
        "empty_text": _empty_text(state, held),
        "no_classes_text": "This dataset has no classes yet: an admin adds them on the dataset's Settings tab."
        if not classes else "",
        "labels": image["labels"] if image else [],
        "selected": [str(c) for c in state.selection],
        "classes": [{"id": str(c.class_id), "name": c.name, "color": c.color, "key": c.key, "count": c.image_count,
                     "pinned": c.pinned, "suggested": suggested.get(c.class_id) or 0} for c in classes],
        "ahead": next_cards,  # what Enter/S/→ will show next: the browser shows it before the save returns
        "prefetch": [c["url"] for c in next_cards],
        "heartbeat_ms": reservations.HEARTBEAT_S * 1000,
    }


def _context(state: flow.LabelingState):
    """Progress, place, classes (with their keys and counts), the next images' cards and the queue's
    counts: read again only when the dataset's revision, the image, the place in history or the mode
    changed, or a heartbeat came (other labelers' reservations move the counts, not the revision); a
    number key re-renders without touching the database."""
    card = state.card
    revision = dataset_revision(state.dataset_id)
    ident = (revision, state.beats, state.mode, state.exhausted, card.image_id if card else None,
             card.label_revision if card else None, state.history_pos, len(state.history), tuple(state.upcoming))
    cached = st.session_state.get("labeling_context")
    if cached and cached[0] == ident:
        return cached[1]
    with session_scope() as session:
        progress = labeling.progress(session=session, dataset_id=state.dataset_id)
        place = labeling.position(session=session, dataset_id=state.dataset_id, image_id=card.image_id) \
            if card and state.mode == "all" else None
        classes = actions.classes_for_labeling(session=session, dataset_id=state.dataset_id, user_id=user.id)
        ahead = labeling.image_cards(session=session, dataset_id=state.dataset_id,
                                     image_ids=flow.ahead(state)[:PREFETCH])
        size, held = labeling.queue_counts(session=session, dataset_id=state.dataset_id, mode=state.mode,
                                           holder=state.holder)
    context = (progress, place, classes, ahead, size, held)
    st.session_state["labeling_context"] = (ident, context)
    return context


@st.fragment
def labeling_panel(dataset_id: uuid.UUID) -> None:
    state: flow.LabelingState = st.session_state["labeling_state"]
    if state.leave:
        state.leave = False
        st.switch_page("pages/datasets.py", query_params={"dataset": str(dataset_id)})
    progress, place, classes, ahead, size, held = _context(state)
    if state.image_id:
        st.query_params.update({"dataset": str(dataset_id), "image": str(state.image_id), "mode": state.mode})

    top = st.columns([3, 2], vertical_alignment="bottom")
    top[0].progress(progress.percent / 100,
                    text=f"{progress.labeled:,} / {progress.total:,} labeled ({progress.percent:.0f}%)")
    counted = f"**{place:,} / {size:,}**" if place else f"**{size:,}** for you"
    top[1].markdown(counted + (f" · {held:,} held by others" if held else ""))
    st.session_state["labeling_mode"] = state.mode
    # its own row, sized to its options: beside the progress bar it was cut off below ~1500 px
    st.segmented_control("Queue", list(MODE_NAMES), format_func=MODE_NAMES.get, key="labeling_mode",
                         on_change=_on_mode, label_visibility="collapsed", help=MODE_HELP)
    if refused := refusal("labeler", "labeling"):
        st.caption(f"{refused} You can look through the images (←, →) but not label them.")
    if state.message:
        kind, text = state.message
        getattr(st, kind if kind in ("info", "warning", "error") else "info")(text)
    labeling_view(data=_view_data(state, classes, ahead, held), on_keys=_on_keys)


def action_buttons(dataset_id: uuid.UUID) -> None:
    """Mouse controls, outside the fragment so a key press does not re-render them; a click runs
    the same path as its key. A horizontal container wraps them instead of cutting their labels."""
    refused = refusal("labeler", "labeling")
    with st.container(horizontal=True, gap="small"):
        st.button("← Prev", on_click=_press, args=("left",))
        st.button("Next →", on_click=_press, args=("right",))
        st.button("Clear (C)", on_click=_press, args=("c",), disabled=refused is not None, help=refused)
        st.button("Skip (S)", on_click=_press, args=("s",), disabled=refused is not None, help=refused)
        st.button("Save & Next (Enter)", on_click=_press, args=("enter",), type="primary",
                  disabled=refused is not None, help=refused)
        if refused is None:
            with st.popover("Pin classes"):
                _pins(dataset_id)
        if allowed("admin"):
            with st.popover("+ Class"):
                _add_class(dataset_id)


def _add_class(dataset_id: uuid.UUID) -> None:
    """Add a class to this dataset's classes: an existing one, or a new one by name (admins)."""
    with session_scope() as session:
        inside = set(space_class_ids(session, dataset_id))
        others = {str(c.id): c.name for c in list_classes(session=session) if c.id not in inside and c.is_active}
    existing = st.selectbox("Existing class", list(others), format_func=others.get, index=None,
                            placeholder="Choose a class of the workspace", key="labeling_add_existing")
    name = st.text_input("…or a new class", key="labeling_new_class", max_chars=100)
    if st.button("Add to this dataset", key="labeling_add_class", disabled=not (existing or name.strip())):
        added = act(lambda session, actor: add_classes(
            session=session, actor=actor, dataset_id=dataset_id,
            class_ids=[existing] if existing else [], new_names=[name] if name.strip() else []))
        if added is not None:
            for key in ("labeling_new_class", "labeling_add_existing", "labeling_context"):
                st.session_state.pop(key, None)
            st.rerun()


def _pins(dataset_id: uuid.UUID) -> None:
    classes = _shown_classes()
    names = {str(c.class_id): c.name for c in classes}
    pinned = [str(c.class_id) for c in classes if c.pinned]
    st.caption("Your own key order for this dataset (here, on its grid and in its bulk actions).")
    chosen = st.multiselect("Classes on keys 1–0, in order", list(names), default=pinned, format_func=names.get,
                            max_selections=KEYED_CLASSES, key="labeling_pins")
    if st.button("Save pins", key="labeling_pins_save"):
        saved = act(lambda session, actor: actions.set_pins(
            session=session, actor=actor, dataset_id=dataset_id, class_ids=[uuid.UUID(c) for c in chosen]))
        if saved is not None:
            st.session_state.pop("labeling_context", None)  # pins are no dataset write: no revision to follow
            st.rerun()


def header(dataset_id: uuid.UUID) -> None:
    """The dataset being labeled (by name: its numbers live in the panel below) and a way to another."""
    with session_scope() as session:
        datasets = {str(d[0]): d[1] for d in labeling.datasets_for_labeling(session=session)}
    cols = st.columns([3, 1], vertical_alignment="bottom")
    cols[0].markdown(f"### {plain(datasets.get(str(dataset_id), 'Labeling'))}")
    with cols[1].popover("Another dataset", width="stretch"):
        for other_id, name in datasets.items():
            if other_id != str(dataset_id):
                st.button(name, key=f"labeling_switch_{other_id}", on_click=_choose, args=(other_id,),
                          type="tertiary")


st.title("Labeling")
remembered = st.session_state.get("labeling_state")
dataset_id = _uuid(st.query_params.get("dataset")) or (remembered.dataset_id if remembered else None)
if dataset_id is None:
    _pick_dataset()
else:
    header(dataset_id)
    by_cluster = st.toggle("Label by cluster", key="labeling_by_cluster",
                           help="Group the unlabeled images by similarity; one number key labels a whole cluster")
    if by_cluster:  # the one-image panel (and its key listener) is not drawn: the cluster keys listen
        if (held := st.session_state.get("labeling_state")) is not None and held.held_at:
            flow.end(session_scope, held)
        cluster_view(dataset_id, user.id)
    elif (state := _state(dataset_id, _uuid(st.query_params.get("image")), st.query_params.get("mode"))) is not None:
        labeling_panel(dataset_id)
        action_buttons(dataset_id)
        from ui.similar_view import labeling_section

        labeling_section(dataset_id)
