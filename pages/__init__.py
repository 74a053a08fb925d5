"""Page scripts (run through app.py's st.navigation) and the widgets they share.

When a fresh server's first request is a deep link (`/datasets?...`), Streamlit runs that file in
pages/ on its own, in its old folder mode, skipping app.py and with it the login and schema checks.
Every page imports from this package, so the first import turns that mode off and reruns: the rerun
goes through app.py. (Streamlit's flag is class state; st.navigation itself clears it the same way.)
"""

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

if PagesManager.uses_pages_directory and get_script_run_ctx() is not None:
    PagesManager.uses_pages_directory = False
    st.rerun()
