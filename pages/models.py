"""Models page: the trained models (list) and one model (?model=<id>): metrics, per-class table,
confusion matrix, misclassified images, the confidence-threshold explorer, files and management."""

from __future__ import annotations

import streamlit as st

from core.db import session_scope
from core.storage import get_storage
from core.training.registry import delete_model, rename_model, set_active, set_default
from core.training.views import describe_model, list_models, model_detail
from core.vocabulary import MODEL_TYPES
from ui.actions import act, read_or_explain
from ui.models_detail import detail_tabs
from ui.shared import allowed, current_user, refusal


def go(**params: str) -> None:
    st.query_params.clear()
    for key, value in params.items():
        st.query_params[key] = str(value)
    st.rerun()


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def predict_with(model_id) -> None:
    st.switch_page("pages/predict.py", query_params={"model": str(model_id)})


def model_badges(row: dict) -> None:
    with st.container(horizontal=True):
        if row["is_default"]:
            st.badge("default", color="green", icon=":material/star:")
        st.badge("active" if row["is_active"] else "inactive", color="blue" if row["is_active"] else "gray")
        st.badge(row["task_type"].replace("_", "-"), color="violet")


# ---------------------------------------------------------------- list


def model_card(row: dict, user) -> None:
    with st.container(border=True):
        info, metrics, buttons = st.columns([3.4, 2, 1.6])
        with info:
            if st.button(row["name"], key=f"open_{row['id']}", type="tertiary", icon=":material/open_in_new:"):
                go(model=row["id"])
            model_badges(row)
            version = f" v{row['version_number']}" if row["version_number"] else ""
            st.caption(f"{row['model_type']}/{row['model_size']} · {row['num_classes']} classes · "
                       f"{row['dataset'] or 'deleted dataset'}{version} · {row['created_at']:%Y-%m-%d %H:%M}")
        with metrics:
            st.markdown(f"accuracy **{percent(row['accuracy'])}**  \nF1 (macro) **{percent(row['f1_score'])}**")
        with buttons:
            if st.button("Predict", key=f"predict_{row['id']}", icon=":material/online_prediction:",
                         disabled=not row["is_active"]):
                predict_with(row["id"])
            if not row["is_default"] and row["is_active"] and allowed("admin") and st.button(
                    "Set default", key=f"default_{row['id']}", icon=":material/star:"):
                if act(_set_default(row["id"]), f"{row['name']} is now the default {row['model_type']}"):
                    st.rerun()


def list_view(user) -> None:
    st.title("Models")
    st.caption("Trained models with their test metrics. Open one for its confusion matrix, mistakes, "
               "thresholds and files.")
    a, b, c = st.columns([1, 1, 2])
    family = a.selectbox("Model family", [None, *MODEL_TYPES], format_func=lambda m: "All" if m is None else m,
                         key="models_family")
    active_only = b.toggle("Active only", key="models_active")
    text = c.text_input("Search", placeholder="model name", key="models_search")
    with session_scope() as session:
        rows = list_models(session=session, model_type=family, active_only=active_only, text=text)
    if not rows:
        st.info("No models match." if family or active_only or text.strip()
                else "No trained models yet. A training run that completes registers its best model here.")
    for row in rows:
        model_card(row, user)


# ---------------------------------------------------------------- actions


def _set_default(model_id):
    """The action that makes the model its family's default (run it with ui.actions.act)."""
    def change(session, actor) -> bool:
        set_default(session=session, actor=actor, model_id=model_id)
        return True
    return change


def _set_active(model_id, active: bool):
    def change(session, actor) -> bool:
        set_active(session=session, actor=actor, model_id=model_id, active=active)
        return True
    return change


def _rename(model_id, name: str, description: str):
    def change(session, actor) -> bool:
        rename_model(session=session, actor=actor, model_id=model_id, name=name)
        describe_model(session=session, actor=actor, model_id=model_id, description=description)
        return True
    return change


def _delete(model_id):
    def change(session, actor) -> bool:
        delete_model(session=session, actor=actor, storage=get_storage(), model_id=model_id)
        return True
    return change


def manage(detail: dict, user) -> None:
    if not allowed("admin"):
        st.caption(refusal("admin", "activating, renaming, setting the default and deleting models"))
        return
    model_id = detail["id"]
    with st.container(horizontal=True):
        if detail["is_active"]:
            if st.button("Deactivate", icon=":material/pause:", help="Hide it from prediction"):
                if act(_set_active(model_id, False), "Model deactivated"):
                    st.rerun()
        elif st.button("Activate", icon=":material/play_arrow:"):
            if act(_set_active(model_id, True), "Model activated"):
                st.rerun()
        if not detail["is_default"] and st.button("Set as default", icon=":material/star:",
                                                  disabled=not detail["is_active"],
                                                  help=f"One default per model type ({detail['model_type']})"):
            if act(_set_default(model_id), "Default model set"):
                st.rerun()
    with st.form("rename"):
        name = st.text_input("Name", value=detail["name"], max_chars=200)
        description = st.text_area("Description", value=detail["description"] or "", max_chars=2000)
        if st.form_submit_button("Save name and description"):
            if act(_rename(model_id, name, description), "Saved"):
                st.rerun()
    with st.popover("Delete model", icon=":material/delete:"):
        st.write("Delete this model and its files (checkpoint, ONNX, TorchScript, stored predictions)? "
                 "Its training run stays.")
        if st.button("Delete model", type="primary", key="delete_model"):
            if act(_delete(model_id), "Model deleted"):
                go()


# ---------------------------------------------------------------- detail


def metrics_row(detail: dict) -> None:
    extra = detail["export_check"]
    if detail["task_type"] == "multi_label":
        values = [("mAP", extra.get("map")), ("F1 (macro)", detail["f1_score"]), ("F1 (micro)", extra.get("f1_micro")),
                  ("Exact match", detail["accuracy"]), ("Precision (macro)", detail["precision_macro"])]
    else:
        values = [("Accuracy", detail["accuracy"]), ("F1 (macro)", detail["f1_score"]),
                  ("Top-5", detail["top5_accuracy"]), ("Precision (macro)", detail["precision_macro"]),
                  ("Recall (macro)", detail["recall_macro"])]
    for col, (label, value) in zip(st.columns(len(values)), values, strict=True):
        col.metric(label, percent(value))
    split = extra.get("evaluated_split")
    if split:
        st.caption(f"Scored on the {split} split of the version.")


def detail_view(model_id: str, user) -> None:
    if st.button("← All models", type="tertiary"):
        go()
    detail = read_or_explain(lambda session: model_detail(session=session, model_id=model_id), title="Model")
    if detail is None:
        return
    st.title(detail["name"])
    model_badges(detail)
    version = f" v{detail['version_number']}" if detail["version_number"] else ""
    st.caption(f"{detail['model_type']}/{detail['model_size']} ({detail['timm_name']}) · {detail['num_classes']} "
               f"classes · {detail['dataset'] or 'deleted dataset'}{version} · created "
               f"{detail['created_at']:%Y-%m-%d %H:%M}")
    if detail["description"]:
        st.write(detail["description"])
    with st.container(horizontal=True):
        if st.button("Predict with this model", type="primary", icon=":material/online_prediction:",
                     disabled=not detail["is_active"]):
            predict_with(detail["id"])
        if detail["training_run_id"] and st.button("Open its training run", icon=":material/model_training:"):
            st.switch_page("pages/training.py", query_params={"run": str(detail["training_run_id"])})
    metrics_row(detail)
    detail_tabs(detail, user, manage)


user = current_user()
if "model" in st.query_params:
    detail_view(st.query_params["model"], user)
else:
    list_view(user)
