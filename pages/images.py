"""Images page: The image library: upload, import, search, filter, bulk actions and duplicates."""

import streamlit as st

st.title("Images")
st.caption("The image library: upload, import, search, filter, bulk actions and duplicates.")
st.info("This page is being built.")
