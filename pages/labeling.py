"""Labeling page: Label a dataset's images one at a time from the keyboard."""

import streamlit as st

st.title("Labeling")
st.caption("Label a dataset's images one at a time from the keyboard.")
st.info("This page is being built.")
