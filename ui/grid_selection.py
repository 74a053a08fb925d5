"""The dataset grid's per-dataset state in the session (its selection and page): in a module of its
own because the grid, more-like-this and the map all set it, and the grid draws more-like-this."""

from __future__ import annotations

import uuid

import streamlit as st

from ui.components.thumbnail_grid import Selection


def grid_state(dataset_id: uuid.UUID) -> dict:
    return st.session_state.setdefault(f"dsgrid_{dataset_id}", {"selection": Selection(), "page": 1})


def grid_selection(dataset_id: uuid.UUID) -> Selection:
    return grid_state(dataset_id)["selection"]
