"""The Labeled Dataset, Products, Cutouts and OD Images tabs of the import dialog.

Each tab reads its form, shows a preview from core, queues the import as a job and shows the job's
progress and summary. User text (class names, file names) is shown only as plain text: widget
values, st.text and dataframes, never markdown or HTML.
"""

from __future__ import annotations

import io
import uuid

import pandas as pd
import streamlit as st

from core.config import get_settings
from core.datasets.classes import list_classes
from core.datasets.dataset import create_dataset, list_datasets
from core.db import session_scope
from core.errors import UserError
from core.imports.archive import (
    ClassMapping,
    ImportLabeledDatasetRequest,
    check_mapping,
    preview_archive,
    start_archive_import,
)
from core.imports.sources import (
    CutoutFilters,
    ImportFromCutoutsRequest,
    ImportFromODRequest,
    ImportFromProductsRequest,
    ODImageFilters,
    ProductFilters,
    preview_source_import,
    source_filter_options,
    start_source_import,
)
from ui.actions import act, shown, user_errors
from ui.shared import current_user, watch_jobs

NEW_CLASS, SKIP = "New class", "Skip (don't import)"
CONFLICT_CHOICES = {"first": "Label every copy with the first copy's class (archive order)",
                    "skip": "Leave these images unlabeled"}
NEW_DATASET = "New dataset…"
NO_DATASET = "No dataset (library only)"


def show_import_summary(job) -> None:
    """The job's counts and a table of per-file errors."""
    result = job.result or {}
    if not result:
        return
    a, b, c, d = st.columns(4)
    a.metric("Imported", result.get("images_imported", 0))
    b.metric("Duplicates skipped", result.get("duplicates_skipped", 0) + result.get("already_imported", 0))
    c.metric("Classes created", len(result.get("classes_created", [])))
    d.metric("Labels written", result.get("labels_written", 0))
    if result.get("label_conflict_count"):
        st.caption(f"{result['label_conflict_count']} image(s) were in the archive under different classes:")
        st.dataframe(_conflict_rows(result["label_conflicts"]), hide_index=True, width="stretch")
    if result.get("labels_merged"):
        st.caption(f"{result['labels_merged']} image(s) under several class folders got all those classes "
                   "(multi-label dataset).")
    if result.get("errors"):
        st.caption(f"{result.get('error_count', len(result['errors']))} problem(s):")
        st.dataframe(pd.DataFrame(result["errors"]), hide_index=True, width="stretch")


def _conflict_rows(conflicts: list[dict]) -> pd.DataFrame:
    """One row per conflict: its files and their classes (plain text in a table, never markdown)."""
    rows = [{"files": " | ".join(c["files"]), "classes": " | ".join(c["classes"]),
             **({"labeled as": c["labeled_as"] or "(not labeled)"} if "labeled_as" in c else {})} for c in conflicts]
    return pd.DataFrame(rows)


def _dataset_picker(prefix: str, dataset_id: uuid.UUID | None, *, optional: bool) -> str | None:
    """The target dataset's id: fixed when the dialog was opened on a dataset, else chosen or created."""
    with session_scope() as session:
        datasets = [(str(d.id), d.name, d.task_type) for d in list_datasets(session=session)]
    if dataset_id is not None:
        name = next((n for i, n, _ in datasets if i == str(dataset_id)), str(dataset_id))
        st.text(f"Target dataset: {name}")
        return str(dataset_id)
    options = ([NO_DATASET] if optional else []) + [name for _, name, _ in datasets] + [NEW_DATASET]
    choice = st.selectbox("Target dataset", options, key=f"{prefix}_dataset",
                          help="Images are added to this dataset and labeled there.")
    if choice == NO_DATASET:
        return None
    if choice != NEW_DATASET:
        return next(i for i, n, _ in datasets if n == choice)
    left, right = st.columns([3, 2])
    name = left.text_input("New dataset name", key=f"{prefix}_new_dataset")
    task = right.radio("Task", ["single_label", "multi_label"], key=f"{prefix}_new_task", horizontal=True)
    if not name.strip():
        return None
    st.session_state[f"{prefix}_create"] = (name, task)
    return "create"


def _resolve_dataset(prefix: str, picked: str | None) -> str | None:
    if picked != "create":
        return picked

    name, task = st.session_state[f"{prefix}_create"]
    with session_scope() as session:
        return str(create_dataset(session=session, actor=current_user(), name=name, task_type=task).id)


def _watch(prefix: str) -> None:
    job_id = st.session_state.get(f"{prefix}_job")
    if job_id:
        watch_jobs([job_id], on_done=lambda jobs: show_import_summary(jobs[0]))


# ---------------------------------------------------------------- labeled dataset (ZIP)


def labeled_dataset_tab(dataset_id: uuid.UUID | None = None) -> None:
    st.caption("A ZIP with one folder per class, Roboflow train/valid/test folders, a multi-label "
               "`_classes.csv`, or a CSV of filename,label rows.")
    upload = st.file_uploader("ZIP archive", type=["zip"], key="archive_file")
    if upload is None:
        return
    limit = get_settings().max_archive_bytes
    if upload.size > limit:  # refused on its reported size, before the archive is read
        st.error(f"the archive is {upload.size:,} bytes; at most {limit:,} are allowed (MAX_ARCHIVE_BYTES)")
        return
    if st.session_state.get("archive_preview_of") != upload.file_id:
        try:
            with session_scope() as session:
                st.session_state["archive_preview"] = preview_archive(io.BytesIO(upload.getvalue()), session=session)
        except UserError as exc:
            st.session_state["archive_preview"] = {"error": str(exc)}
        st.session_state["archive_preview_of"] = upload.file_id
    preview = st.session_state["archive_preview"]
    if "error" in preview:
        st.error(preview["error"])
        return
    _show_archive_preview(preview)
    mapping = _mapping_form(preview)
    picked = _dataset_picker("archive", dataset_id, optional=False)
    skip = st.checkbox("Skip exact duplicates", value=True, key="archive_skip")
    conflicts = _conflict_choice(preview)
    if st.button(f"Import {preview['image_count']} images", type="primary", key="archive_go",
                 disabled=picked is None or not preview["image_count"]):
        _start_archive(upload, mapping, picked, skip, conflicts)
    _watch("archive")


def _show_archive_preview(preview: dict) -> None:
    st.text(f"Format: {preview['format_label']}")
    a, b, c = st.columns(3)
    a.metric("Images", preview["image_count"])
    b.metric("Classes", len(preview["classes"]))
    c.metric("Unlabeled", preview["unlabeled_count"])
    if preview["splits"]:
        st.text("Splits: " + ", ".join(f"{split} {n}" for split, n in preview["splits"].items()))
    if preview["problems"]:
        with st.expander(f"{len(preview['problems'])} problem(s) found"):
            st.dataframe(pd.DataFrame(preview["problems"]), hide_index=True, width="stretch")


def _conflict_choice(preview: dict) -> str:
    """The same bytes under different classes: listed, and what the import does with them chosen."""
    count = preview.get("label_conflict_count", 0)
    if not count:
        return "first"
    st.warning(f"{count} image(s) appear under different classes (the same file content in several folders).")
    st.dataframe(_conflict_rows(preview["label_conflicts"]), hide_index=True, width="stretch")
    return st.radio("Same image under different classes", list(CONFLICT_CHOICES), format_func=CONFLICT_CHOICES.get,
                    key="archive_conflicts", help="Single-label datasets. In a multi-label dataset such an image "
                    "gets all of its classes instead. Either way the summary lists them.")


def _mapping_form(preview: dict) -> list:
    with session_scope() as session:
        existing = {c.name: str(c.id) for c in list_classes(session=session)}
    options = [NEW_CLASS, SKIP, *existing]
    st.text("Map each source class:")
    mapping = []
    for index, cls in enumerate(preview["classes"]):
        name_col, choice_col, new_col, color_col = st.columns([3, 3, 3, 1])
        name_col.text(f"{cls['name'][:60]} ({cls['image_count']})")
        if cls["problem"]:
            name_col.caption(cls["problem"])
        default = cls["existing_class_name"] or (SKIP if cls["problem"] else NEW_CLASS)
        choice = choice_col.selectbox(f"Map class {index + 1}", options, index=options.index(default),
                                      key=f"archive_map_{index}", label_visibility="collapsed")
        if choice == NEW_CLASS:
            new_name = new_col.text_input(f"New class name {index + 1}", value=cls["name"] if not cls["problem"] else "",
                                          key=f"archive_new_{index}", label_visibility="collapsed")
            color = color_col.color_picker(f"Color {index + 1}", value=cls["color"], key=f"archive_color_{index}",
                                           label_visibility="collapsed")
            mapping.append(ClassMapping(source_name=cls["name"], create_new=True, new_name=new_name, color=color))
        elif choice == SKIP:
            mapping.append(ClassMapping(source_name=cls["name"], skip=True))
        else:
            mapping.append(ClassMapping(source_name=cls["name"], target_class_id=existing[choice]))
    return mapping


def _start_archive(upload, mapping: list, picked: str, skip: bool, conflicts: str) -> None:
    with user_errors():
        check_mapping(mapping)  # before a new dataset is created for it
        target = _resolve_dataset("archive", picked)
        request = ImportLabeledDatasetRequest(dataset_id=target, class_mapping=mapping, skip_duplicates=skip,
                                              conflicts=conflicts)
        st.session_state["archive_job"] = start_archive_import(
            actor=current_user(), source=io.BytesIO(upload.getvalue()), request=request)


# ---------------------------------------------------------------- products, cutouts, OD images


def _filter_options() -> dict:
    with session_scope() as session:
        return source_filter_options(session=session)


def _preview(kind: str, request) -> dict:
    with session_scope() as session:
        return preview_source_import(session=session, kind=kind, request=request)


def _preview_and_import(kind: str, request, dataset_id: uuid.UUID | None) -> None:
    preview = shown(lambda: _preview(kind, request))
    if preview is None:
        return
    with st.container(border=True):
        st.text("Preview")
        a, b, c = st.columns(3)
        a.metric("Matching", preview["matching"])
        b.metric("Images to import", preview["images_to_import"])
        c.metric("New classes", len(preview["new_classes"]))
        if preview["already_imported"]:
            st.text(f"{preview['already_imported']} already imported (added to the dataset, not stored again)")
        if preview["classes"]:
            st.text("Classes: " + ", ".join(preview["classes"][:30]) + (" …" if len(preview["classes"]) > 30 else ""))
    picked = _dataset_picker(kind, dataset_id, optional=True)
    if preview["classes"] and picked is None:
        st.caption("Labels are stored in a dataset: without one, images are imported unlabeled.")
    if st.button(f"Import {preview['images']} images", type="primary", key=f"{kind}_go",
                 disabled=not preview["images"]):
        def start(_session, actor):
            request.dataset_id = _resolve_dataset(kind, picked)
            return start_source_import(actor=actor, kind=kind, request=request)

        job_id = act(start)
        if job_id is not None:
            st.session_state[f"{kind}_job"] = job_id
    _watch(kind)


def products_tab(dataset_id: uuid.UUID | None = None) -> None:
    options = _filter_options()
    labels = {"category": "Use category as label", "brand": "Use brand as label",
              "product_name": "Use product name (fine-grained)", "manual": "Import unlabeled"}
    label = st.radio("Label strategy", list(labels), format_func=labels.get, key="products_label")
    cols = st.columns(3)
    types = [t for t, col in zip(("synthetic", "real", "augmented"), cols, strict=True)
             if col.checkbox(f"{t.capitalize()} images", value=t != "augmented", key=f"products_type_{t}")]
    max_frames = st.number_input("Max frames per product", 1, 100, 5, key="products_frames")
    status_col, category_col, brand_col = st.columns(3)
    statuses = ["All", *options["statuses"]]
    status = status_col.selectbox("Status", statuses, index=statuses.index("matched") if "matched" in statuses else 0,
                                  key="products_status")
    categories = category_col.multiselect("Category", options["categories"], key="products_categories")
    brands = brand_col.multiselect("Brand", options["brands"], key="products_brands")
    skip = st.checkbox("Skip exact duplicates", value=True, key="products_skip")
    if not types:
        st.warning("Choose at least one image type.")
        return
    request = ImportFromProductsRequest(
        label_source=label, image_types=types, max_frames_per_product=int(max_frames), skip_duplicates=skip,
        filters=ProductFilters(status=None if status == "All" else status, categories=categories, brands=brands))
    _preview_and_import("products", request, dataset_id)


def cutouts_tab(dataset_id: uuid.UUID | None = None) -> None:
    options = _filter_options()
    labels = {"matched_product_category": "Matched product's category",
              "matched_product_brand": "Matched product's brand", "manual": "Import unlabeled"}
    label = st.radio("Label strategy", list(labels), format_func=labels.get, key="cutouts_label")
    only_matched = st.checkbox("Only cutouts matched to a product", value=True, key="cutouts_matched")
    category_col, brand_col = st.columns(2)
    categories = category_col.multiselect("Category", options["categories"], key="cutouts_categories")
    brands = brand_col.multiselect("Brand", options["brands"], key="cutouts_brands")
    skip = st.checkbox("Skip exact duplicates", value=True, key="cutouts_skip")
    request = ImportFromCutoutsRequest(label_source=label, only_matched=only_matched, skip_duplicates=skip,
                                       filters=CutoutFilters(categories=categories, brands=brands))
    _preview_and_import("cutouts", request, dataset_id)


def od_images_tab(dataset_id: uuid.UUID | None = None) -> None:
    st.caption("Object-detection images are imported unlabeled (their boxes are a different kind of label).")
    folders = ["All", *_filter_options()["od_folders"]]
    folder = st.selectbox("Folder", folders, key="od_folder")
    skip = st.checkbox("Skip exact duplicates", value=True, key="od_skip")
    request = ImportFromODRequest(skip_duplicates=skip, filters=ODImageFilters(folder=None if folder == "All" else folder))
    _preview_and_import("od", request, dataset_id)
