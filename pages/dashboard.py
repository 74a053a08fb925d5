"""Dashboard: workspace counts and the recent background jobs with their progress."""

import streamlit as st

from core.db import session_scope
from core.jobs import list_jobs, reap_stale_jobs
from core.stats import workspace_stats
from pages.ui import job_progress

st.title("Dashboard")
st.caption("Your workspace at a glance: images, classes, datasets, labeling progress, training and models.")

with session_scope() as session:
    stats = workspace_stats(session=session)

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
        reap_stale_jobs(session=session)
        jobs = list_jobs(session=session, limit=10)
        if not jobs:
            st.caption("No background jobs yet. Imports, training and batch predictions show up here.")
        for job in jobs:
            job_progress(job)


recent_jobs()
