"""Dashboard: workspace counts, the next step (on a fresh install: import images or load the demo
data with one click, admins only), and the recent background jobs with their progress."""

import streamlit as st

from core.db import session_scope
from core.imports.demo import start_demo as start
from core.jobs.fanout import reap_stale
from core.jobs.rows import list_jobs
from core.permissions import can_act
from core.stats import workspace_stats
from ui.actions import act
from ui.freshness import rerun_app
from ui.shared import current_user, job_progress, watch_jobs

DEMO_JOB = "dashboard_demo_job"

user = current_user()
admin = can_act(user, "admin")

st.title("Dashboard")
st.caption("Your workspace at a glance: images, classes, datasets, labeling progress, training and models.")

with session_scope() as session:
    stats = workspace_stats(session=session)


def start_demo() -> None:
    job_id = act(lambda _session, actor: start(actor=actor))
    if job_id is not None:
        st.session_state[DEMO_JOB] = job_id


def next_step() -> None:
    """What to do next, from what the workspace holds: one line and the page (or button) for it."""
    if not stats["images"]:
        with st.container(border=True):
            st.subheader("Get started")
            st.write("The workspace is empty. Bring images in, or look around with demo data first: drawn product "
                     "packshots, cutouts and shelf photos, and a labeled dataset of four product categories.")
            cols = st.columns(2)
            cols[0].page_link("pages/images.py", label="Import your images (Images → Import)",
                              icon=":material/upload:")
            if admin:
                cols[1].button("Load the demo data", type="primary", icon=":material/auto_awesome:",
                               on_click=start_demo, disabled=DEMO_JOB in st.session_state,
                               help="The same as `python -m core demo`: runs as a background job.")
            else:
                cols[1].caption("An admin can load demo data here (or run `python -m core demo`).")
        if DEMO_JOB in st.session_state:
            def finished(_jobs):
                st.session_state.pop(DEMO_JOB, None)
                rerun_app()

            watch_jobs([st.session_state[DEMO_JOB]], on_done=finished)
        return
    if not stats["datasets"]:
        text, page, label = ("Next: create a dataset and add images to it.", "pages/datasets.py", "Datasets")
    elif not stats["dataset_images"]:
        text, page, label = ("Next: add images to a dataset (its Import button, or from the library).",
                             "pages/datasets.py", "Datasets")
    elif stats["labeled_images"] < stats["dataset_images"]:
        left = stats["dataset_images"] - stats["labeled_images"]
        text, page, label = (f"Next: label the {left:,} unlabeled dataset images from the keyboard.",
                             "pages/labeling.py", "Labeling")
    elif not stats["training_runs"]:
        text, page, label = ("Next: every dataset image is labeled; train a model.", "pages/training.py", "Training")
    elif not stats["models"]:
        text, page, label = ("Next: follow your training run; its model appears on the Models page.",
                             "pages/training.py", "Training")
    else:
        text, page, label = ("Next: predict new images with your models (with Grad-CAM).", "pages/predict.py",
                             "Predict")
    cols = st.columns([4, 1], vertical_alignment="center")
    cols[0].info(text)
    cols[1].page_link(page, label=f"Go to {label}", icon=":material/arrow_forward:")


next_step()

row1 = st.columns(4)
row1[0].metric("Images", f"{stats['images']:,}")
row1[1].metric("Classes", f"{stats['classes']:,}")
row1[2].metric("Datasets", f"{stats['datasets']:,}")
row1[3].metric("Labeled", f"{stats['labeled_pct']}%",
               help=f"{stats['labeled_images']:,} of {stats['dataset_images']:,} dataset images")
row2 = st.columns(4)
row2[0].metric("Training runs", f"{stats['training_runs']:,}")
row2[1].metric("Running now", f"{stats['active_runs']:,}")
row2[2].metric("Models", f"{stats['models']:,}")

st.subheader("Recent jobs")


@st.fragment(run_every=2.0)
def recent_jobs():
    with session_scope() as session:
        reap_stale(session=session)
        jobs = list_jobs(session=session, limit=10)
        if not jobs:
            st.caption("No background jobs yet. Imports, training and batch predictions show up here.")
        for job in jobs:
            job_progress(job)


recent_jobs()
