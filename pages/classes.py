"""Classes page: Class definitions: names, colors, hierarchy, merge."""

import streamlit as st

st.title("Classes")
st.caption("Class definitions: names, colors, hierarchy, merge.")
st.info("This page is being built.")
