"""The import dialog: every way images enter the library, one tab each."""

from __future__ import annotations

import uuid

import streamlit as st

from pages.upload_tabs import upload_tab, url_tab


@st.dialog("Import images", width="large")
def open_import_dialog(dataset_id: uuid.UUID | None = None) -> None:
    upload, url = st.tabs(["Upload", "URL"])
    with upload:
        upload_tab(dataset_id=dataset_id)
    with url:
        url_tab(dataset_id=dataset_id)
