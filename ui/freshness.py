"""One rule for what a page shows after a change (issue 15: "no screen shows numbers older than the
user's own last action"), applied by every page:

1. **Read on every run.** A page reads the numbers it shows from the database each time it runs (a
   denormalized count is one row: cheap). It keeps a read across runs only under a key that includes
   the revision of what was read: a dataset's `revision` (`dataset_revision`), bumped in the same
   transaction as every write to that dataset (core.datasets.locks.lock_dataset). The Labeling page's
   per-key cache is keyed this way.
2. **Act before rendering.** Buttons that change data run as callbacks (`on_click`), so the run that
   follows renders their result; an action that runs inline ends with `st.rerun()`. A dialog that
   changed data reruns the whole app when it closes (`rerun_app`), so the page behind it is redrawn.
3. **Numbers shown together redraw together.** A fragment that changes data either holds every
   number that change moves, or reruns the app (`rerun_app`).
"""

from __future__ import annotations

import uuid

import streamlit as st

from core.datasets.dataset import dataset_revision as read
from core.db import session_scope


def dataset_revision(dataset_id: uuid.UUID) -> int:
    """The dataset's revision now (one primary-key read; -1 when the dataset is gone)."""
    with session_scope() as session:
        return read(session=session, dataset_id=dataset_id)


def rerun_app() -> None:
    """Redraw the whole page (from a fragment or a dialog) after a change it does not itself show."""
    st.rerun(scope="app")
