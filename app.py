"""Entry point: a router and a frame. Builds the page list, shows who is signed in, runs the page."""

import streamlit as st

from ui.shared import (
    current_user,
    disable_nagle,
    end_labeling_elsewhere,
    ensure_schema,
    sidebar_user,
    warn_without_file_route,
)

st.set_page_config(page_title="Image classification", page_icon="🏷️", layout="wide")

disable_nagle()
ensure_schema()
warn_without_file_route()
user = current_user()
sidebar_user(user)

PAGES = {
    "": [st.Page("pages/dashboard.py", title="Dashboard", icon=":material/dashboard:", default=True)],
    "Classification": [
        st.Page("pages/images.py", title="Images", icon=":material/photo_library:", url_path="images"),
        st.Page("pages/classes.py", title="Classes", icon=":material/label:", url_path="classes"),
        st.Page("pages/datasets.py", title="Datasets", icon=":material/dataset:", url_path="datasets"),
        st.Page("pages/labeling.py", title="Labeling", icon=":material/keyboard:", url_path="labeling"),
        st.Page("pages/training.py", title="Training", icon=":material/model_training:", url_path="training"),
        st.Page("pages/models.py", title="Models", icon=":material/deployed_code:", url_path="models"),
        st.Page("pages/predict.py", title="Predict", icon=":material/online_prediction:", url_path="predict"),
    ],
}

page = st.navigation(PAGES)
end_labeling_elsewhere(page)
page.run()
