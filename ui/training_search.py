"""The Training page's hyperparameter searches (core.training.search): the list, a form to start one
(?new_search=1), and one search (?search=<id>) with its trials, Optuna's plotly figures (history,
parameter importance), cancel / resume, and "register the best trial as a model"."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from core.datasets.dataset import list_datasets
from core.db import session_scope
from core.errors import UserError
from core.permissions import can_act
from core.storage import get_storage
from core.training.runs import resolve_version
from core.training.search import (
    cancel_search,
    list_searches,
    load_study,
    register_best,
    resume_search,
    search_figures,
    search_summary,
    start_search,
    trial_rows,
)
from core.training.views import format_duration
from core.training.wizard import FAMILIES
from ui.actions import read_or_explain, shown, user_errors

COLORS = {"running": "orange", "finishing": "orange", "refitting": "orange", "completed": "green", "cancelled": "gray"}
ACTIVE = ("running", "finishing", "refitting")
REFRESH_S = 3.0


def _when(epoch_s: float | None) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M") if epoch_s else "—"


def section(user, go) -> None:
    """The searches under the runs list."""
    head, new = st.columns([4, 1])
    head.subheader("Hyperparameter searches")
    if new.button("New search", icon=":material/tune:", disabled=not can_act(user, "admin"),
                  help="Train several runs within a time budget and keep the best (Optuna)"):
        go(new_search=1)
    searches = shown(list_searches)
    if searches is None:
        return
    if not searches:
        st.caption("No searches yet. A search trains runs with different settings within a time budget, "
                   "prunes weak ones, and keeps the best.")
    for row in searches:
        with st.container(border=True):
            left, mid, right = st.columns([3, 3, 1])
            if left.button(row["title"] or row["name"], key=f"open_search_{row['name']}", type="tertiary",
                           icon=":material/open_in_new:"):
                go(search=row["name"])
            left.badge(row["status"], color=COLORS.get(row["status"], "gray"))
            counts = row["trial_counts"]
            mid.caption(f"{row['model_type']}/{row['model_size']} · budget {row['budget_min']:g} min · "
                        f"{counts.get('complete', 0)} complete, {counts.get('pruned', 0)} pruned, "
                        f"{counts.get('fail', 0)} failed, {counts.get('running', 0)} running · {_when(row['created_at'])}")
            best = row["best_value"]
            right.markdown(f"best {row['metric']}  \n**{'—' if best is None else f'{best:.1%}'}**")


def new_search_view(user, go) -> None:
    st.title("New hyperparameter search")
    if st.button("← All runs", type="tertiary"):
        go()
    with session_scope() as session:
        datasets = {d.name: d.class_count for d in list_datasets(session=session)}
    if not datasets:
        st.info("No datasets yet. Create one on the Datasets page, label some images, then come back.")
        return
    with st.form("new_search"):
        dataset = st.selectbox("Dataset (its latest version)", list(datasets))
        a, b, c = st.columns(3)
        family = a.selectbox("Model family", list(FAMILIES), index=list(FAMILIES).index("resnet"))
        size = b.text_input("Size", value=next(iter(FAMILIES[family])), help="e.g. 18, atto, tiny")
        image_size = c.number_input("Image size (px)", min_value=16, max_value=2048, value=224, step=16)
        a, b, c = st.columns(3)
        budget = a.number_input("Budget (minutes, wall clock)", min_value=1.0, max_value=10080.0, value=60.0)
        trial = b.number_input("One trial at most (minutes)", min_value=0.5, max_value=10080.0, value=15.0)
        parallel = c.number_input("Trials at once (training workers)", min_value=1, max_value=64, value=1)
        refit = st.number_input("Then train the best settings once more (minutes, 0 = no refit)", min_value=0.0,
                                value=0.0, help="Taken from the end of the budget: short trials find the settings, "
                                                "the refit trains them as long as a normal run")
        refit_on_val = st.toggle("The refit trains on train + val", value=True,
                                 help="The val split chose the settings; the refit learns from it too and keeps "
                                      "its last weights. The test split stays held out.")
        pretrained = st.toggle("Start from pretrained weights (timm's hub)", value=False)
        name = st.text_input("Name (optional)")
        submitted = st.form_submit_button("Start the search", type="primary", disabled=not can_act(user, "admin"))
    if not submitted:
        return
    try:
        with session_scope() as session:
            version_id = resolve_version(session=session, actor=user, storage=get_storage(), dataset_name=dataset).id
        search = start_search(actor=user, version_id=version_id, budget_min=budget, trial_min=min(trial, budget),
                              parallel=parallel, name=name, refit_min=refit, refit_on_val=refit_on_val,
                              base={"model_type": family, "model_size": size.strip(),
                                                                  "image_size": int(image_size),
                                                                  "pretrained": pretrained})
    except UserError as exc:
        st.error(str(exc))
        return
    go(search=search)


def detail_view(name: str, user, go) -> None:
    if st.button("← All runs", type="tertiary"):
        go()
    summary = read_or_explain(lambda _session: search_summary(load_study(name)), title="Hyperparameter search")
    if summary is None:
        return
    st.title(summary["title"] or name)
    st.caption(f"{summary['model_type']}/{summary['model_size']} · budget {summary['budget_min']:g} min, trials up to "
               f"{summary['trial_min']:g} min, {summary['parallel']} at once · maximising {summary['metric']} on val · "
               f"started {_when(summary['created_at'])}")
    live(name, summary["status"] in ACTIVE)
    actions(summary, user)


def live(name: str, active: bool) -> None:
    @st.fragment(run_every=REFRESH_S if active else None)
    def body() -> None:
        study = load_study(name)
        summary = search_summary(study)
        st.badge(summary["status"], color=COLORS.get(summary["status"], "gray"))
        cols = st.columns(4)
        left = max(0.0, (summary["deadline"] or 0) - datetime.now(UTC).timestamp())
        cols[0].metric("Best " + (summary["metric"] or ""), "—" if summary["best_value"] is None
                       else f"{summary['best_value']:.1%}")
        cols[1].metric("Best trial", "—" if summary["best_trial"] is None else summary["best_trial"])
        cols[2].metric("Trials", sum(summary["trial_counts"].values()))
        cols[3].metric("Budget left", format_duration(left) if summary["status"] == "running" else "—")
        rows = trial_rows(study)
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        figures = search_figures(study)
        for key, caption in (("history", "Optimisation history"), ("importance", "Parameter importance")):
            if figures[key] is not None:
                st.plotly_chart(figures[key], key=f"search_{key}_{name}")
            elif key == "importance" and rows:
                st.caption(f"{caption} appears once two trials with different settings have finished.")
        if active and summary["status"] not in ACTIVE:
            st.rerun(scope="app")

    body()


def actions(summary: dict, user) -> None:
    admin = can_act(user, "admin")
    name = summary["name"]
    with user_errors():
        with st.container(horizontal=True):
            if summary["status"] in ACTIVE and st.button("Cancel", icon=":material/stop:", disabled=not admin):
                cancel_search(actor=user, name=name)
                st.rerun()
            if summary["status"] in ("cancelled", "completed"):
                more = st.number_input("Minutes more (0: what was left)", min_value=0.0, value=0.0, step=5.0)
                if st.button("Resume", icon=":material/replay:", disabled=not admin):
                    resume_search(actor=user, name=name, budget_min=more or None)
                    st.rerun()
            if summary["best_trial"] is not None and st.button(
                    "Register the best trial as a model", type="primary", icon=":material/deployed_code:",
                    disabled=not admin, help="Evaluates its weights on the test split, exports and registers them"):
                register_best(actor=user, name=name)
                st.toast("Registering: a training worker evaluates and exports the best trial.")
        if summary["best_model_id"] and st.button("Open the registered model", icon=":material/open_in_new:"):
            st.switch_page("pages/models.py", query_params={"model": summary["best_model_id"]})
