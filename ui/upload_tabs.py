"""The Upload and URL tabs of the import dialog: read the form, call core, show a per-file summary."""

from __future__ import annotations

import uuid

import pandas as pd
import streamlit as st

from core.config import get_settings
from core.imports.urls import start_url_import
from core.library.decode import UPLOAD_EXTENSIONS
from core.library.ingest import ingest_many
from ui.actions import act, shown
from ui.shared import current_user, watch_jobs


def _target_fields(prefix: str) -> tuple[str, str, bool]:
    left, right = st.columns(2)
    folder = left.text_input("Folder (optional)", key=f"{prefix}_folder")
    tags = right.text_input("Tags (comma-separated, optional)", key=f"{prefix}_tags")
    skip = st.checkbox("Skip exact duplicates", value=True, key=f"{prefix}_skip",
                       help="A file whose bytes are already in the library is not imported again.")
    return folder, tags, skip


def show_summary(results: list[dict]) -> None:
    """Counts, then a table of every file that was not simply imported (with its reason)."""
    counts = {status: sum(1 for r in results if r["status"] == status) for status in ("imported", "duplicate", "rejected")}
    a, b, c = st.columns(3)
    a.metric("Imported", counts["imported"])
    b.metric("Duplicates skipped", counts["duplicate"])
    c.metric("Rejected", counts["rejected"])
    problems = [r for r in results if r["status"] != "imported"]
    if problems:
        frame = pd.DataFrame([{"file": r.get("filename") or r.get("url"), "result": r["status"],
                               "reason": r.get("error") or (f"same bytes as image {r['duplicate_of']}"
                                                            if r.get("duplicate_of") else "")} for r in problems])
        if len(frame) <= 100:  # a plain table: every reason readable (and findable with Ctrl+F)
            st.table(frame.set_index("file"))
        else:
            st.dataframe(frame, hide_index=True, width="stretch")


def refuse_oversized(files: list, limit: int) -> tuple[list, list[dict]]:
    """Files within MAX_UPLOAD_BYTES, and a rejected result for each larger one, judged by the size the
    upload reports, so an oversized file is never read into this process whole."""
    kept = [f for f in files if f.size <= limit]
    refused = [{"status": "rejected", "filename": f.name, "image_id": None, "duplicate_of": None,
                "error": f"{f.size:,} bytes; files over {limit:,} bytes are refused"} for f in files if f.size > limit]
    return kept, refused


def upload_tab(dataset_id: uuid.UUID | None = None) -> None:
    files = st.file_uploader("Drop images here", type=UPLOAD_EXTENSIONS, accept_multiple_files=True,
                             key="upload_files")
    folder, tags, skip = _target_fields("upload")
    if st.button("Import", type="primary", disabled=not files, key="upload_go"):
        bar = st.progress(0.0, text=f"Importing {len(files)} files…")

        def progress(done: int, total: int | None) -> None:
            bar.progress(done / total if total else 0.0, text=f"{done}/{total} files")

        files, refused = refuse_oversized(files, get_settings().max_upload_bytes)
        results = shown(lambda: ingest_many(items=[(f.name, f.getvalue()) for f in files], actor=current_user(),
                                            folder=folder or None, tags=tags, skip_duplicates=skip,
                                            progress=progress, dataset_id=dataset_id))
        if results is None:
            return
        bar.progress(1.0, text="Done")
        st.session_state["upload_summary"] = refused + [r.as_dict() for r in results]
    if st.session_state.get("upload_summary"):
        show_summary(st.session_state["upload_summary"])


def url_tab(dataset_id: uuid.UUID | None = None) -> None:
    text = st.text_area("Image URLs: one per line, or CSV with a `url` column", key="url_text", height=150)
    csv_file = st.file_uploader("…or a CSV/text file of URLs", type=["csv", "txt"], key="url_file")
    folder, tags, skip = _target_fields("url")
    if st.button("Import from URLs", type="primary", key="url_go", disabled=not (text.strip() or csv_file)):
        body = text + "\n" + (csv_file.getvalue().decode("utf-8", errors="replace") if csv_file else "")
        job_id = act(lambda _session, actor: start_url_import(
            actor=actor, text=body, folder=folder or None, tags=tags, skip_duplicates=skip, dataset_id=dataset_id))
        if job_id is not None:
            st.session_state["url_job"] = job_id
    job_id = st.session_state.get("url_job")
    if job_id:
        watch_jobs([job_id], on_done=lambda jobs: _show_job_result(jobs[0]))


def _show_job_result(job) -> None:
    if job.result:
        show_summary(job.result.get("results", []))
