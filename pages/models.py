"""Models page: Trained models: metrics, confusion matrix, files, default model."""

import streamlit as st

st.title("Models")
st.caption("Trained models: metrics, confusion matrix, files, default model.")
st.info("This page is being built.")
