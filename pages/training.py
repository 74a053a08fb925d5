"""Training page: the runs list, the six-step wizard (?new=1 or ?clone=<run id>) and one run's live
detail (?run=<run id>). Progress refreshes inside fragments, so the page never reloads or freezes."""

from __future__ import annotations

import json
import uuid

import streamlit as st

from core.db import session_scope
from core.errors import UserError
from core.jobs.fanout import reap_stale
from core.storage import get_storage
from core.training.runs import cancel_run, create_run, delete_run, get_run, start_run
from core.training.views import (
    ACTIVE_RUN_STATUSES,
    RunFilters,
    format_duration,
    list_runs,
    run_detail,
    run_filter_options,
)
from ui import training_search, training_wizard, wizard_recipe
from ui.actions import read_or_explain, user_errors
from ui.shared import allowed, current_user, refusal
from ui.training_charts import history_figure, lr_range_figure

BADGES = {"pending": "gray", "preparing": "blue", "queued": "blue", "training": "orange",
          "completed": "green", "failed": "red", "cancelled": "gray"}
REFRESH_S = 2.0


def go(**params: str) -> None:
    """Navigate inside the page: replace the query parameters and rerun."""
    st.query_params.clear()
    for key, value in params.items():
        st.query_params[key] = str(value)
    st.rerun()


def badge(status: str) -> None:
    st.badge(status, color=BADGES.get(status, "gray"))


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def duration(row: dict) -> str:
    return format_duration(row["progress"]["elapsed_s"])


# ---------------------------------------------------------------- actions


def cancel(run_id: uuid.UUID) -> None:
    with session_scope() as session:
        cancel_run(session=session, actor=current_user(), run_id=run_id)
    st.toast("Cancel requested; the worker stops between batches.")


def delete(run_id: uuid.UUID) -> None:
    with session_scope() as session:
        delete_run(session=session, actor=current_user(), storage=get_storage(), run_id=run_id)
    st.toast("Run and its checkpoint deleted.")


def retry(run_id: uuid.UUID, user) -> uuid.UUID:
    """Start a never-started run; resume a failed/cancelled one from its checkpoint; else train its
    config again as a new run. Returns the run to show."""
    with session_scope() as session:
        run = get_run(session=session, run_id=run_id)
        status, has_checkpoint = run.status, bool(run.checkpoint_key)
        version_id, config, name = run.dataset_version_id, dict(run.config), run.name
    if status == "pending":
        start_run(actor=user, run_id=run_id)
        return run_id
    if status in ("failed", "cancelled") and has_checkpoint:
        start_run(actor=user, run_id=run_id, resume=True)
        return run_id
    if version_id is None:
        raise UserError("the run's dataset version was deleted; clone it into the wizard and pick a version")
    with session_scope() as session:
        new_run = create_run(session=session, actor=user, version_id=version_id, config=config,
                             name=f"{name} (retry)")
        new_id = new_run.id
    start_run(actor=user, run_id=new_id)
    return new_id


def actions(row: dict, user, *, where: str) -> None:
    """Cancel / retry / clone / delete buttons of one run (in the list or on its page); admins only."""
    if not allowed("admin"):
        return
    run_id, status = row["id"], row["status"]
    key = f"{where}_{run_id}"
    with user_errors():
        if status in ACTIVE_RUN_STATUSES and status != "pending":
            if st.button("Cancel", key=f"cancel_{key}", icon=":material/stop:"):
                cancel(run_id)
                st.rerun(scope="app")
        else:
            label = "Start" if status == "pending" else ("Resume" if status != "completed" and
                                                         row.get("has_checkpoint") else "Retry")
            if st.button(label, key=f"retry_{key}", icon=":material/replay:"):
                go(run=retry(run_id, user))
        if st.button("Clone", key=f"clone_{key}", icon=":material/content_copy:",
                     help="Open the wizard with this run's dataset and config"):
            go(clone=run_id)
        if status not in ACTIVE_RUN_STATUSES or status == "pending":
            with st.popover("Delete", icon=":material/delete:"):
                st.write("Delete this run and its checkpoint? Its trained model, if any, stays on the Models page.")
                if st.button("Delete run", key=f"delete_{key}", type="primary"):
                    delete(run_id)
                    if where == "detail":
                        go()
                    st.rerun(scope="app")


# ---------------------------------------------------------------- list


def run_card(row: dict, user) -> None:
    with st.container(border=True):
        info, progress, metrics, buttons = st.columns([3.2, 2.2, 1.6, 1.4])
        with info:
            if st.button(row["name"], key=f"open_{row['id']}", type="tertiary", icon=":material/open_in_new:"):
                go(run=row["id"])
            badge(row["status"])
            version = f" v{row['version_number']}" if row["version_number"] else ""
            st.caption(f"{row['dataset'] or 'deleted dataset'}{version} · {row['model_type']}/{row['model_size']} · "
                       f"{row['task_type'].replace('_', '-')} · {row['created_at']:%Y-%m-%d %H:%M}")
        with progress:
            p = row["progress"]
            text = f"epoch {p['epoch']}/{p['total_epochs']}"
            if p["eta_s"] is not None:
                text += f" · ETA {format_duration(p['eta_s'])}"
            st.progress(min(1.0, p["fraction"]), text=text)
            st.caption(f"duration {duration(row)}")
        with metrics:
            st.markdown(f"acc **{percent(row['best_accuracy'])}**  \nF1 **{percent(row['best_f1'])}**")
            if row["error_message"]:
                st.caption(f":red[{row['error_message'][:120]}]")
        with buttons:
            actions(row, user, where="list")


def list_view(user) -> None:
    st.title("Training")
    head, new = st.columns([4, 1])
    head.caption("Training runs on your dataset versions: status, progress and best metrics. "
                 "Open a run for its live charts.")
    if new.button("New training run", type="primary", icon=":material/add:", disabled=not allowed("admin"),
                  help=refusal("admin", "training a model")):
        st.session_state.pop(training_wizard.STATE, None)
        go(new=1)
    with session_scope() as session:
        reap_stale(session=session)  # runs whose worker died end failed, not "training" forever
        options = run_filter_options(session=session)
    f1, f2, f3, f4 = st.columns(4)
    statuses = f1.multiselect("Status", list(BADGES), key="runs_status")
    datasets = dict(options["datasets"])
    dataset_id = f2.selectbox("Dataset", [None, *datasets], format_func=lambda i: "All" if i is None else datasets[i],
                              key="runs_dataset")
    model_type = f3.selectbox("Model family", [None, *options["model_types"]],
                              format_func=lambda m: "All" if m is None else m, key="runs_family")
    text = f4.text_input("Search", placeholder="run name", key="runs_search")
    filters = RunFilters(statuses=statuses, dataset_id=dataset_id, model_type=model_type, text=text)
    with session_scope() as session:
        any_active = any(r["status"] in ACTIVE_RUN_STATUSES for r in list_runs(session=session, limit=50))

    @st.fragment(run_every=REFRESH_S if any_active else None)
    def runs_list() -> None:
        with session_scope() as session:
            rows = list_runs(session=session, filters=filters)
        if not rows:
            st.info("No training runs match." if any((statuses, dataset_id, model_type, text.strip()))
                    else "No training runs yet. Start one with **New training run**.")
        for row in rows:
            run_card(row, user)

    runs_list()
    training_search.section(user, go)


# ---------------------------------------------------------------- detail


def progress_panel(detail: dict) -> None:
    p = detail["progress"]
    parts = [f"epoch {p['epoch']}/{p['total_epochs']}"]
    if p["batch"] is not None:
        parts.append(f"batch {p['batch']}/{p['batches']}")
    if p["eta_s"] is not None:
        parts.append(f"ETA {format_duration(p['eta_s'])}")
    st.progress(min(1.0, p["fraction"]), text=" · ".join(parts))
    if p["message"] and p["batch"] is None and detail["status"] in ACTIVE_RUN_STATUSES:
        st.caption(p["message"])
    cols = st.columns(5)
    cols[0].metric("Best accuracy", percent(detail["best_accuracy"]))
    cols[1].metric("Best F1 (macro)", percent(detail["best_f1"]))
    cols[2].metric("Best top-5", percent(detail["best_top5_accuracy"]))
    cols[3].metric("Best epoch", detail["best_epoch"] or "—")
    cols[4].metric("Duration", duration(detail))


def live_section(run_id: uuid.UUID, active: bool) -> None:
    @st.fragment(run_every=REFRESH_S if active else None)
    def live() -> None:
        with session_scope() as session:
            detail = run_detail(session=session, run_id=run_id)
        badge(detail["status"])
        progress_panel(detail)
        history = detail["metrics_history"]
        if history:
            st.plotly_chart(history_figure(history, detail["best_epoch"]), key=f"history_{run_id}")
        elif detail["status"] in ACTIVE_RUN_STATUSES:
            st.caption("Charts appear after the first epoch.")
        if active and detail["status"] not in ACTIVE_RUN_STATUSES:
            st.rerun(scope="app")  # finished: show the final state and actions once

    live()


def detail_view(run_id: str, user) -> None:
    if st.button("← All runs", type="tertiary"):
        go()
    detail = read_or_explain(lambda session: run_detail(session=session, run_id=run_id), title="Training run")
    if detail is None:
        return
    st.title(detail["name"])
    version = f" v{detail['version_number']}" if detail["version_number"] else ""
    st.caption(f"{detail['dataset'] or 'deleted dataset'}{version} · {detail['model_type']}/{detail['model_size']} · "
               f"{detail['task_type'].replace('_', '-')} · {detail['num_classes']} classes · created "
               f"{detail['created_at']:%Y-%m-%d %H:%M}")
    if detail["description"]:
        st.write(detail["description"])
    live_section(detail["id"], detail["status"] in ACTIVE_RUN_STATUSES)
    if detail["status"] == "failed":
        st.error(f"Training failed: {detail['error_message'] or detail['job_error'] or 'no error text recorded'}")
    elif detail["error_message"]:
        st.warning(detail["error_message"])
    if detail["model_id"]:
        if st.button("Open the trained model", type="primary", icon=":material/deployed_code:"):
            st.switch_page("pages/models.py", query_params={"model": str(detail["model_id"])})
    with st.container(horizontal=True):
        actions(detail, user, where="detail")
    with st.expander("Recipe", expanded=False):
        wizard_recipe.table(detail["config"])
        if detail["config"].get("lr_range_test"):
            st.caption("LR range test")
            st.plotly_chart(lr_range_figure(detail["config"]["lr_range_test"]), key=f"lr_test_{detail['id']}")
    with st.expander("Config"):
        st.code(json.dumps(detail["config"], indent=2), language="json")
    if detail["log_tail"]:
        with st.expander("Log (last lines)", expanded=detail["status"] == "failed"):
            st.code(detail["log_tail"], language=None)


# ---------------------------------------------------------------- route


user = current_user()
params = st.query_params
if "run" in params:
    detail_view(params["run"], user)
elif "search" in params:
    training_search.detail_view(params["search"], user, go)
elif "new_search" in params:
    training_search.new_search_view(user, go)
elif ("new" in params or "clone" in params) and not allowed("admin"):
    st.title("Training")
    st.caption(refusal("admin", "training a model"))
elif "new" in params or "clone" in params:
    st.title("Training")

    def started(run_id, error):
        if error:
            st.session_state["run_start_error"] = error
        go(run=run_id)

    source = f"clone:{params['clone']}" if "clone" in params else "new"
    try:
        training_wizard.render(source, user, on_started=started, on_leave=go)
    except UserError as exc:  # e.g. cloning a run that was deleted
        st.error(str(exc))
        if st.button("Back to the runs"):
            go()
else:
    list_view(user)
if error := st.session_state.pop("run_start_error", None):
    st.error(f"The run was created but could not be queued: {error}")
