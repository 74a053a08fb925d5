"""Predict page: Predict classes for new images with a trained model, with Grad-CAM."""

import streamlit as st

st.title("Predict")
st.caption("Predict classes for new images with a trained model, with Grad-CAM.")
st.info("This page is being built.")
