"""Datasets page: Datasets: images, labels, splits, versions, health and export."""

import streamlit as st

st.title("Datasets")
st.caption("Datasets: images, labels, splits, versions, health and export.")
st.info("This page is being built.")
