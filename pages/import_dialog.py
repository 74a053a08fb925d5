"""The import dialog: every way images enter the library, one tab each."""

from __future__ import annotations

import uuid

import streamlit as st

from pages.import_tabs import cutouts_tab, labeled_dataset_tab, od_images_tab, products_tab
from pages.upload_tabs import upload_tab, url_tab


# Closing the dialog reruns the page behind it, so its counts show what the import changed.
@st.dialog("Import images", width="large", on_dismiss="rerun")
def open_import_dialog(dataset_id: uuid.UUID | None = None) -> None:
    upload, url, labeled, products, cutouts, od = st.tabs(
        ["Upload", "URL", "Labeled Dataset", "Products", "Cutouts", "OD Images"])
    with upload:
        upload_tab(dataset_id=dataset_id)
    with url:
        url_tab(dataset_id=dataset_id)
    with labeled:
        labeled_dataset_tab(dataset_id=dataset_id)
    with products:
        products_tab(dataset_id=dataset_id)
    with cutouts:
        cutouts_tab(dataset_id=dataset_id)
    with od:
        od_images_tab(dataset_id=dataset_id)
