"""Classes page: create (one or many pasted lines), edit, deactivate, delete (says how many labels go),
merge several classes into one, and the hierarchy as a tree with image counts."""

from __future__ import annotations

import html
import uuid

import streamlit as st

from core.datasets.classes import (
    COLOR_RE,
    bulk_create_classes,
    class_tree,
    create_class,
    delete_class,
    labels_using,
    merge_classes,
    update_class,
)
from core.db import session_scope
from ui.actions import act
from ui.shared import allowed, plain, refusal

NO_PARENT = "none"


def _classes() -> list[dict]:
    with session_scope() as session:
        return [{"id": c.id, "name": c.name, "display_name": c.display_name, "description": c.description,
                 "color": c.color, "parent_class_id": c.parent_class_id, "image_count": c.image_count,
                 "is_active": c.is_active, "depth": depth} for depth, c in class_tree(session=session)]


def _done(message: str) -> None:
    st.session_state["cls_toast"] = message
    st.session_state.pop("cls_dialog", None)
    st.rerun()


# ---------------------------------------------------------------- create


def create_section(classes: list[dict]) -> None:
    names = {c["id"]: c["name"] for c in classes}
    one, many = st.tabs(["New class", "Paste many"])
    with one, st.form("cls_create", clear_on_submit=True):
        cols = st.columns([2, 2, 1, 2])
        name = cols[0].text_input("Name", max_chars=100)
        display = cols[1].text_input("Display name")
        color = cols[2].color_picker("Color", "#3B82F6")
        parent = cols[3].selectbox("Parent", [NO_PARENT, *names], format_func=lambda v: names.get(v, "—"))
        description = st.text_input("Description")
        if st.form_submit_button("Create class", type="primary"):
            def change(session, actor):
                return create_class(session=session, actor=actor, name=name, display_name=display,
                                    description=description, color=color,
                                    parent_class_id=None if parent == NO_PARENT else parent).name

            created = act(change)
            if created is not None:
                _done(f"Class {plain(created)} created")
    with many, st.form("cls_bulk", clear_on_submit=True):
        text = st.text_area("One class name per line", height=140)
        if st.form_submit_button("Create classes", type="primary"):
            def change(session, actor):
                return bulk_create_classes(session=session, actor=actor, text=text)

            result = act(change)
            if result is not None:
                st.session_state["cls_bulk_report"] = result
                _done(f"{len(result['created'])} classes created")
    if report := st.session_state.pop("cls_bulk_report", None):
        for error in report["errors"]:
            st.error(f"Line {error['line']}: {error['error']}")
        if report["existing"]:
            st.info(f"Already there: {plain(', '.join(report['existing']))}")


# ---------------------------------------------------------------- tree, edit, delete


def _close_dialog() -> None:
    st.session_state.pop("cls_dialog", None)


@st.dialog("Delete class", on_dismiss=_close_dialog)
def confirm_delete(class_row: dict) -> None:
    with session_scope() as session:
        count = labels_using(session=session, class_id=class_row["id"])
    st.warning(f"Delete {plain(class_row['name'])}? This removes {count:,} labels from the datasets' images "
               "(versions already made keep theirs). This cannot be undone.")
    if st.button(f"Delete and remove {count:,} labels", type="primary", key="cls_confirm_delete"):
        def change(session, actor):
            return delete_class(session=session, actor=actor, class_id=class_row["id"])

        removed = act(change)
        if removed is not None:
            _done(f"Class deleted, {removed:,} labels removed")


@st.dialog("Edit class", on_dismiss=_close_dialog)
def edit_dialog(class_row: dict, classes: list[dict]) -> None:
    others = {c["id"]: c["name"] for c in classes if c["id"] != class_row["id"]}
    parent_options = [NO_PARENT, *others]
    current_parent = class_row["parent_class_id"] if class_row["parent_class_id"] in others else NO_PARENT
    with st.form("cls_edit"):
        name = st.text_input("Name", class_row["name"], max_chars=100)
        display = st.text_input("Display name", class_row["display_name"] or "")
        description = st.text_input("Description", class_row["description"] or "")
        color = st.color_picker("Color", class_row["color"])
        parent = st.selectbox("Parent", parent_options, index=parent_options.index(current_parent),
                              format_func=lambda v: others.get(v, "—"))
        active = st.checkbox("Active (shown for labeling)", value=class_row["is_active"])
        if st.form_submit_button("Save", type="primary"):
            def change(session, actor):
                return update_class(session=session, actor=actor, class_id=class_row["id"], name=name,
                                    display_name=display,
                                    description=description, color=color, is_active=active,
                                    parent_class_id=None if parent == NO_PARENT else parent).name

            if act(change) is not None:
                _done("Class saved")


def _color(value: str | None) -> str:
    return value if value and COLOR_RE.match(value) else "#6B7280"


def tree(classes: list[dict]) -> None:
    if not classes:
        st.info("No classes yet. Create one above or paste a list.")
        return
    refused = refusal("admin", "editing and deleting classes")
    for row in classes:
        cols = st.columns([5, 1.2, 1, 0.8, 0.8])
        indent = "&nbsp;" * 6 * row["depth"]
        chip = (f'{indent}<span style="display:inline-block;width:0.9em;height:0.9em;border-radius:50%;'
                f'background:{_color(row["color"])};vertical-align:middle"></span> '
                f'<b>{html.escape(row["name"])}</b>')
        if row["display_name"]:
            chip += f' <span style="color:#6B7280">({html.escape(row["display_name"])})</span>'
        if not row["is_active"]:
            chip += ' <span style="color:#9CA3AF">· inactive</span>'
        cols[0].markdown(chip, unsafe_allow_html=True)
        cols[1].markdown(f"{row['image_count']:,} images")
        cols[2].button("Edit", key=f"cls_edit_{row['id']}", type="tertiary", on_click=_open_dialog,
                       args=("edit", row["id"]), disabled=refused is not None, help=refused)
        cols[3].button("Delete", key=f"cls_del_{row['id']}", type="tertiary", on_click=_open_dialog,
                       args=("delete", row["id"]), disabled=refused is not None, help=refused)


def _open_dialog(kind: str, class_id: uuid.UUID) -> None:
    st.session_state["cls_dialog"] = (kind, class_id)


# ---------------------------------------------------------------- merge


def merge_section(classes: list[dict]) -> None:
    names = {str(c["id"]): c["name"] for c in classes}
    with st.expander("Merge classes", icon=":material/merge:"):
        st.caption("Every label of the merged classes moves to the target; the merged classes are deleted. "
                   "An image never ends with two labels in a single-label dataset.")
        cols = st.columns(2)
        sources = cols[0].multiselect("Merge these", list(names), format_func=names.get, key="cls_merge_sources")
        target = cols[1].selectbox("Into", [c for c in names if c not in sources], format_func=names.get,
                                   key="cls_merge_target", index=None)
        if st.button("Merge", key="cls_merge_go", disabled=not sources or target is None):
            def change(session, actor):
                return merge_classes(session=session, actor=actor,
                                     source_ids=[uuid.UUID(s) for s in sources], target_id=uuid.UUID(target))

            result = act(change)
            if result is not None:
                _done(f"Merged {len(result['merged'])} classes into {plain(result['target'])}: "
                      f"{result['labels_moved']:,} labels moved, {result['duplicate_labels_dropped']:,} duplicates dropped")


def render() -> None:
    st.title("Classes")
    st.caption("The workspace's classes. A dataset labels with its own ordered list of them (its keys 1–0): "
               "add a class to a dataset on that dataset's Settings tab; imports add theirs.")
    if toast := st.session_state.pop("cls_toast", None):
        st.toast(toast)
    classes = _classes()
    if allowed("admin"):
        create_section(classes)
        merge_section(classes)
    else:
        st.caption(refusal("admin", "creating, editing, merging and deleting classes"))
    st.subheader(f"{len(classes)} classes")
    tree(classes)
    if (dialog := st.session_state.get("cls_dialog")) and allowed("admin"):  # kept until done or dismissed
        kind, class_id = dialog
        row = next((c for c in classes if c["id"] == class_id), None)
        if row is not None:
            (edit_dialog(row, classes) if kind == "edit" else confirm_delete(row))


if __name__ == "__main__":
    render()
