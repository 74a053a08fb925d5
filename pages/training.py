"""Training page: Train classifiers: the six-step wizard and the runs with their live metrics."""

import streamlit as st

st.title("Training")
st.caption("Train classifiers: the six-step wizard and the runs with their live metrics.")
st.info("This page is being built.")
