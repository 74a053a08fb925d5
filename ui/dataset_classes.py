"""The dataset's classes (its label space) on the Settings tab: the ordered list that gives the number
keys everywhere for this dataset, the classes offered while labeling, the training mapping and the
export's columns (core.datasets.label_space). Admins add existing or new classes, reorder, and remove classes
no label uses; everyone else sees the list. Every change runs as a callback, so the list and the keys
redraw in the run that follows."""

from __future__ import annotations

import uuid

import streamlit as st

from core.datasets.classes import list_classes
from core.datasets.label_space import KEYS, label_space
from core.datasets.label_space_edits import add_classes, remove_classes, reorder_classes
from core.db import session_scope
from core.errors import UserError
from core.permissions import can_act
from ui.shared import current_user, plain

MESSAGE = "dscls_message_{}"


def _act(dataset_id: uuid.UUID, action, done: str) -> None:
    """Callback: one label-space change in its own transaction; its outcome waits in session state."""
    try:
        with session_scope() as session:
            action(session)
    except UserError as exc:
        st.session_state[MESSAGE.format(dataset_id)] = ("error", str(exc))
    else:
        st.session_state[MESSAGE.format(dataset_id)] = ("success", done)


def _move(dataset_id: uuid.UUID, order: list[uuid.UUID], index: int, step: int) -> None:
    moved = list(order)
    moved.insert(index + step, moved.pop(index))
    _act(dataset_id, lambda session: reorder_classes(session=session, actor=current_user(), dataset_id=dataset_id,
                                                     class_ids=moved), "Order saved.")


def _remove(dataset_id: uuid.UUID, class_id: uuid.UUID, name: str) -> None:
    _act(dataset_id, lambda session: remove_classes(session=session, actor=current_user(), dataset_id=dataset_id,
                                                    class_ids=[class_id]), f"{name} removed from this dataset.")


def _add(dataset_id: uuid.UUID) -> None:
    picked = st.session_state.get(f"dscls_existing_{dataset_id}") or []
    typed = [n.strip() for n in (st.session_state.get(f"dscls_new_{dataset_id}") or "").split(",") if n.strip()]
    _act(dataset_id, lambda session: add_classes(session=session, actor=current_user(), dataset_id=dataset_id,
                                                 class_ids=picked, new_names=typed),
         f"{len(picked) + len(typed)} class(es) added.")
    if st.session_state[MESSAGE.format(dataset_id)][0] == "success":
        st.session_state[f"dscls_existing_{dataset_id}"] = []
        st.session_state[f"dscls_new_{dataset_id}"] = ""


def render_label_space(dataset_id: uuid.UUID) -> None:
    admin = can_act(current_user(), "admin")
    with session_scope() as session:
        space = label_space(session=session, dataset_id=dataset_id)
        others = {str(c.id): c.name for c in list_classes(session=session)
                  if c.is_active and c.id not in {s.class_id for s in space}}
    st.markdown("**Classes of this dataset**")
    st.caption("In this order they get the number keys 1–9, 0 (on the grid, the Labeling page and bulk actions; "
               "a labeler's own pins come first for them), the training class order and the export's columns.")
    if message := st.session_state.pop(MESSAGE.format(dataset_id), None):
        getattr(st, message[0])(message[1])
    if not space:
        st.info("No classes yet. Add existing classes or new ones below (an archive import adds its own).")
    order = [c.class_id for c in space]
    for index, cls in enumerate(space):
        cols = st.columns([0.5, 4, 1.4, 0.6, 0.6, 0.9], vertical_alignment="center")
        cols[0].markdown(f"`{KEYS[index]}`" if index < len(KEYS) else "")
        inactive = "" if cls.is_active else " (deactivated)"
        cols[1].markdown(f"{plain(cls.name)}{inactive}")
        cols[2].caption(f"{cls.image_count:,} images")
        if admin:
            cols[3].button("↑", key=f"dscls_up_{dataset_id}_{cls.class_id}", disabled=index == 0,
                           on_click=_move, args=(dataset_id, order, index, -1), help="Move up")
            cols[4].button("↓", key=f"dscls_down_{dataset_id}_{cls.class_id}", disabled=index == len(space) - 1,
                           on_click=_move, args=(dataset_id, order, index, 1), help="Move down")
            cols[5].button("Remove", key=f"dscls_rm_{dataset_id}_{cls.class_id}", disabled=cls.image_count > 0,
                           on_click=_remove, args=(dataset_id, cls.class_id, cls.name),
                           help="Only a class no image of this dataset carries can be removed"
                           if cls.image_count else "Take it out of this dataset (the class stays in the workspace)")
    if not admin:
        st.caption("Only admins change a dataset's classes.")
        return
    with st.container(border=True):
        left, right = st.columns(2)
        left.multiselect("Existing classes", list(others), format_func=others.get, key=f"dscls_existing_{dataset_id}",
                         placeholder="Classes of the workspace")
        right.text_input("New classes (comma-separated)", key=f"dscls_new_{dataset_id}", max_chars=2000)
        st.button("Add to this dataset", key=f"dscls_add_{dataset_id}", type="primary", on_click=_add,
                  args=(dataset_id,))
