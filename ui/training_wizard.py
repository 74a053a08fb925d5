"""The six-step training wizard of the Training page (?new=1, or ?clone=<run id> prefilled).

Values live in st.session_state["wizard"] (widgets are seeded from it, since Streamlit drops the
state of widgets a step does not draw). The rules (start values, which step owns a setting, the
checks) are core.training.wizard's; a problem blocks Next at the step its fields belong to.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pandas as pd
import streamlit as st

from core.datasets.dataset import list_datasets
from core.datasets.split_checks import version_missing_eval, warning_lines
from core.datasets.versions import create_version, list_versions, version_summary
from core.db import session_scope
from core.errors import UserError
from core.storage import get_storage
from core.training import runs  # looked up at each start: tests record starts on core.training.runs
from core.training.views import estimate_training_seconds, format_duration, list_models
from core.training.wizard import (
    FAMILIES,
    STEPS,
    catalogue,
    clone_values,
    config_values,
    fitted_batch_size,
    problems,
    recipe_preview,
    start_values,
    version_by_id,
)
from core.vocabulary import TRAINING_SPLITS
from ui import wizard_recipe
from ui.actions import act
from ui.wizard_steps import bind, bind_state, step_advanced, step_augmentation, step_training

STATE = "wizard"
PRETRAINED_SOURCES = {
    "hub": "ImageNet weights from timm's hub",
    "scratch": "None: train from scratch",
    "file": "A weights file on the worker",
    "storage": "A weights file in storage",
    "model": "An earlier model of this platform (fine-tune)",
}


def new_state(source: str, values: dict[str, Any] | None = None, version_id: str | None = None,
              dataset_id: str | None = None, name: str = "") -> dict[str, Any]:
    for key in [k for k in st.session_state if str(k).startswith("wz_")]:
        del st.session_state[key]
    values, override, pretrained_source = start_values(values)
    return {"source": source, "step": 0, "values": values, "version_id": version_id, "dataset_id": dataset_id,
            "override": override, "pretrained_source": pretrained_source, "name": name, "description": ""}


def state_for(source: str) -> dict[str, Any]:
    """The wizard state of `source` ("new" or "clone:<run id>"), made fresh when the URL changed."""
    state = st.session_state.get(STATE)
    if state is None or state["source"] != source:
        state = new_state(source) if source == "new" else _clone_state(source)
        st.session_state[STATE] = state
    return state


def _clone_state(source: str) -> dict[str, Any]:
    with session_scope() as session:
        clone = clone_values(session=session, run_id=source.removeprefix("clone:"))
    return new_state(source, clone["values"], clone["version_id"], clone["dataset_id"], name=clone["name"])


# ---------------------------------------------------------------- steps


def _versions(dataset_id: str) -> list[dict[str, Any]]:
    with session_scope() as session:
        return [version_summary(v) for v in list_versions(session=session, dataset_id=uuid.UUID(dataset_id))]


def step_data(state: dict[str, Any], user) -> dict[str, Any] | None:
    with session_scope() as session:
        datasets = {str(d.id): (d.name, d.task_type, d.labeled_image_count, d.class_count)
                    for d in list_datasets(session=session)}
    if not datasets:
        st.info("No datasets yet. Create one on the Datasets page, label some images, then come back.")
        return None
    if state["dataset_id"] not in datasets:
        state["dataset_id"] = next(iter(datasets))
    bind_state(st.selectbox, "Dataset", "dataset_id", state, options=list(datasets),
                format_func=lambda i: f"{datasets[i][0]} · {datasets[i][1].replace('_', '-')} · "
                                      f"{datasets[i][2]} labeled · {datasets[i][3]} classes")
    versions = _versions(state["dataset_id"])
    by_id = {v["id"]: v for v in versions}
    left, right = st.columns([3, 1])
    if right.button("Create a version now", help="Snapshot the dataset's current labels and splits as a new "
                    "version (training always reads a frozen version)."):
        made = act(lambda session, actor: create_version(session=session, actor=actor, storage=get_storage(),
                                                         dataset_id=uuid.UUID(state["dataset_id"])).id)
        if made is not None:
            state["version_id"] = str(made)
            st.session_state.pop("wz__version_id", None)
            st.rerun()
    if not versions:
        left.info("This dataset has no version yet: create one from its current labels.")
        return None
    if state["version_id"] not in by_id:
        state["version_id"] = versions[0]["id"]
        st.session_state.pop("wz__version_id", None)
    with left:
        bind_state(st.selectbox, "Version", "version_id", state, options=list(by_id),
                    format_func=lambda i: f"v{by_id[i]['version_number']} · {by_id[i]['labeled_image_count']} "
                                          f"labeled images · {by_id[i]['class_count']} classes · "
                                          f"{by_id[i]['created_at']:%Y-%m-%d %H:%M}")
    version = by_id[state["version_id"]]
    _fit_batch_size(state, version)
    counts = version["split_counts"] or {}
    cols = st.columns(4)
    for col, split in zip(cols, TRAINING_SPLITS, strict=False):
        col.metric(f"{split} images", counts.get(split, 0))
    cols[3].metric("classes", version["class_count"])
    per_class = pd.DataFrame([{"class": name, **{s: n.get(s, 0) for s in TRAINING_SPLITS}}
                              for name, n in (version["per_class_counts"] or {}).items()])
    if not per_class.empty:
        st.dataframe(per_class, hide_index=True, width="stretch")
    eval_warnings(version)
    return version


def eval_warnings(version: dict[str, Any]) -> None:
    """Classes of the version without val or test images, said before a run is started."""
    for line in warning_lines({"missing_eval": version_missing_eval(version)}):
        st.warning(line[0].upper() + line[1:] + "; fix the splits and make a new version to measure it.")


def _fit_batch_size(state: dict[str, Any], version: dict[str, Any]) -> None:
    if state.get("batch_fitted_for") == version["id"]:
        return
    fitted = fitted_batch_size(state["values"]["batch_size"], (version["split_counts"] or {}).get("train", 0))
    if fitted != state["values"]["batch_size"]:
        state["values"]["batch_size"] = fitted
        state["batch_fitted_for"] = version["id"]
        st.session_state.pop("wz_batch_size", None)


def step_model(state: dict[str, Any], recipe: dict[str, Any] | None = None) -> None:
    table = pd.DataFrame(catalogue()).rename(columns={"params_m": "params (M)", "use_case": "use case",
                                                      "timm_name": "timm model"})
    st.dataframe(table, hide_index=True, width="stretch", height=260)
    left, right = st.columns(2)
    with left:
        bind(st.selectbox, "Model family", "model_type", state, options=list(FAMILIES))
    sizes = list(FAMILIES[state["values"]["model_type"]])
    if state["values"]["model_size"] not in sizes:
        state["values"]["model_size"] = sizes[0]
        st.session_state.pop("wz_model_size", None)
    with right:
        bind(st.selectbox, "Size", "model_size", state, options=sizes,
              format_func=lambda s: f"{s} ({FAMILIES[state['values']['model_type']][s].params_m:g} M params)")
    source = bind_state(st.radio, "Pretrained weights", "pretrained_source", state,
                         options=list(PRETRAINED_SOURCES), format_func=PRETRAINED_SOURCES.get,
                         help="Pretrained weights learn far faster than training from scratch.")
    state["values"]["pretrained"] = source != "scratch"
    if source in ("hub", "scratch"):
        state["values"]["pretrained_weights"] = None
        return
    current = state["values"].get("pretrained_weights") or ""
    current = current.split(":", 1)[1] if current.startswith(f"{source}:") else ""
    if source == "model":
        spec = FAMILIES[state["values"]["model_type"]][state["values"]["model_size"]]
        with session_scope() as session:
            models = {str(m["id"]): m["name"] for m in list_models(session=session) if m["timm_name"] == spec.timm_name}
        if not models:
            st.warning(f"No trained {spec.family}/{spec.size} model yet to fine-tune from.")
            state["values"]["pretrained_weights"] = "model:"
            return
        chosen = st.selectbox("Model to fine-tune", list(models), format_func=models.get,
                              index=list(models).index(current) if current in models else 0, key="wz__finetune")
    else:
        label = "Path on the worker" if source == "file" else "Storage key"
        chosen = st.text_input(label, value=current, key=f"wz__weights_{source}").strip()
    state["values"]["pretrained_weights"] = f"{source}:{chosen}"


def step_review(state: dict[str, Any], version: dict[str, Any], parsed) -> None:
    st.markdown("**Recipe** (who chose each setting, and why)")
    wizard_recipe.table(parsed.model_dump(mode="json"))
    config = parsed.model_dump(mode="json")
    estimate = estimate_training_seconds(parsed, version["split_counts"] or {})
    a, b, c = st.columns(3)
    a.metric("Estimated time (2-core CPU worker)", format_duration(estimate["cpu_s"]),
             help="From throughput measured on this CPU, the image size, the preset's time factor and the "
                  "split sizes; early stopping can end the run sooner.")
    b.metric("On a GPU worker (rough)", format_duration(estimate["gpu_s"]))
    c.metric("Model", f"{parsed.model_type}/{parsed.model_size}", help=parsed.timm_name)
    eval_warnings(version)
    bind_state(st.text_input, "Run name", "name", state,
                placeholder=f"{parsed.model_type}-{parsed.model_size} v{version['version_number']}")
    bind_state(st.text_area, "Description (optional)", "description", state, height=68)
    st.markdown("**Config** (copy it with the button in the corner; the CLI takes the same keys with `--set`)")
    st.code(json.dumps(config, indent=2), language="json")


# ---------------------------------------------------------------- the wizard


def stepper(step: int) -> None:
    st.progress((step + 1) / len(STEPS))
    def mark(i: int, name: str) -> str:
        label = f"{i + 1}\\. {name}"  # "1\\." keeps Markdown from reading the line as a numbered list
        return f"**{label}**" if i == step else (f"{label} ✓" if i < step else label)

    marks = [mark(i, name) for i, name in enumerate(STEPS)]
    st.markdown(" → ".join(marks))


STEP_RENDERERS = {1: step_model, 2: step_training, 3: step_augmentation, 4: step_advanced}


def _load_version(state: dict[str, Any]) -> dict[str, Any] | None:
    if not state["version_id"]:
        return None
    with session_scope() as session:
        return version_by_id(session=session, version_id=state["version_id"])


def render(source: str, user, on_started, on_leave) -> None:
    """Draw the wizard; on_started(run_id) after Start, on_leave() when the user cancels."""
    state = state_for(source)
    step = state["step"]
    st.subheader("New training run" if source == "new" else "New training run (cloned)")
    stepper(step)
    if step == 0:
        version = step_data(state, user)
    else:
        version = _load_version(state)
        if step < 5:
            STEP_RENDERERS[step](state, recipe_preview(config_values(state["values"], state["override"], version), version))
    found, parsed = problems(state["values"], state["override"], version)
    blocking = [message for at, message in found if at <= step]
    if step == 5 and parsed is not None and not blocking:
        step_review(state, version, parsed)
    for message in blocking:
        st.error(message)
    back, cancel, _, forward = st.columns([1, 1, 3, 1.3])
    if step > 0:
        back.button("← Back", key="wz_back", on_click=_move, args=(state, -1))
    if cancel.button("Cancel", key="wz_cancel"):
        st.session_state.pop(STATE, None)
        on_leave()
    if step < 5:
        forward.button("Next →", type="primary", disabled=bool(blocking), key="wz_next", on_click=_move,
                       args=(state, 1))
    elif forward.button("Start training", type="primary", disabled=bool(blocking) or parsed is None,
                        key="wz_start"):
        _start(state, version, parsed, user, on_started)


def _move(state: dict[str, Any], delta: int) -> None:
    """Back/Next as callbacks: the step changes before the rerun, so one run draws the new step."""
    state["step"] = max(0, min(len(STEPS) - 1, state["step"] + delta))


def _start(state: dict[str, Any], version: dict[str, Any], parsed, user, on_started) -> None:
    run_id = act(lambda session, actor: runs.create_run(
        session=session, actor=actor, version_id=version["id"], config=parsed.model_dump(mode="json"),
        name=state["name"] or None, description=state["description"] or None).id)
    if run_id is None:
        return
    error = None
    try:
        runs.start_run(actor=user, run_id=run_id)
    except UserError as exc:  # no worker queue reachable: the run stays pending and can be started later
        error = str(exc)
    st.session_state.pop(STATE, None)
    on_started(run_id, error)
