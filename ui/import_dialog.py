"""The import dialog: every way images enter the library, one tab each."""

from __future__ import annotations

import uuid

import streamlit as st

from ui.import_tabs import cutouts_tab, labeled_dataset_tab, od_images_tab, products_tab
from ui.upload_tabs import upload_tab, url_tab


# Closing the dialog reruns the page behind it, so its counts show what the import changed.
@st.dialog("Import images", width="large", on_dismiss="rerun")
def open_import_dialog(dataset_id: uuid.UUID | None = None) -> None:
    tabs = {"Upload": upload_tab, "URL": url_tab, "Labeled Dataset": labeled_dataset_tab, "Products": products_tab,
            "Cutouts": cutouts_tab, "OD Images": od_images_tab}
    for tab, render in zip(st.tabs(list(tabs)), tabs.values(), strict=True):
        with tab:
            render(dataset_id=dataset_id)
