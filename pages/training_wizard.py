"""The six-step training wizard of the Training page (?new=1, or ?clone=<run id> prefilled).

Values live in st.session_state["wizard"] (widgets are seeded from it, since Streamlit drops the
state of widgets a step does not draw). Every step is checked with the engine's TrainingConfig and
check_fits_dataset; a problem blocks Next at the step its fields belong to.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from core.db import session_scope
from core.errors import UserError
from core.ml.augment import PRESET_SETTINGS, PRESETS
from core.ml.config import TrainingConfig, check_fits_dataset
from core.ml.families import FAMILIES, catalogue
from core.ml.recipe import RECIPE_FIELDS
from core.storage import get_storage
from core.training.views import estimate_training_seconds, format_duration
from pages import wizard_recipe
from pages.wizard_steps import bind, bind_state, step_advanced, step_augmentation, step_training

STATE = "wizard"
STEPS = ("Data", "Model", "Training", "Augmentation", "Advanced", "Review")
STEP_FIELDS: tuple[tuple[str, ...], ...] = (
    (),
    ("model_type", "model_size", "pretrained", "pretrained_weights"),
    ("epochs", "batch_size", "optimizer", "learning_rate", "weight_decay", "lr_scheduler", "warmup_epochs",
     "llrd_decay", "recipe", "auto_lr", "time_budget_min"),
    ("augmentation_preset", "image_size"),
    ("use_ema", "ema_decay", "mixed_precision", "gradient_accumulation_steps", "label_smoothing", "mixup_alpha",
     "cutmix_alpha", "drop_path_rate", "class_weights", "focal_loss_gamma", "early_stopping",
     "early_stopping_patience", "early_stopping_metric", "freeze_backbone_epochs"),
    (),
)
# Defaults a newcomer can accept: the config's own, with the smallest production model and a
# schedule that finishes in reasonable time; early stopping ends it sooner when val F1 stalls.
WIZARD_DEFAULTS = {"model_type": "convnext", "model_size": "atto", "epochs": 30}
REGULARISATION = ("label_smoothing", "mixup_alpha", "cutmix_alpha")
PRETRAINED_SOURCES = {
    "hub": "ImageNet weights from timm's hub",
    "scratch": "None: train from scratch",
    "file": "A weights file on the worker",
    "storage": "A weights file in storage",
    "model": "An earlier model of this platform (fine-tune)",
}


def default_values() -> dict[str, Any]:
    values = {name: field.default for name, field in TrainingConfig.model_fields.items() if not field.is_required()}
    return {**values, **WIZARD_DEFAULTS, **dict.fromkeys(RECIPE_FIELDS)}  # None: the recipe chooses


def new_state(source: str, values: dict[str, Any] | None = None, version_id: str | None = None,
              dataset_id: str | None = None, name: str = "") -> dict[str, Any]:
    for key in [k for k in st.session_state if str(k).startswith("wz_")]:
        del st.session_state[key]
    values = {**default_values(), **(values or {})}
    for key in values.pop("recipe_auto", None) or []:  # a clone lets the recipe choose what it chose
        values[key] = None
    for key in ("recipe_notes", "lr_range_test"):
        values.pop(key, None)
    if values.get("warmup_epochs") is not None:
        values["warmup_epochs"] = float(values["warmup_epochs"])
    preset_key = values["augmentation_preset"] or "light"
    override = any(values.get(k) not in (None, PRESETS[preset_key].settings[k]) for k in REGULARISATION)
    for key in PRESET_SETTINGS:  # a clone's preset-filled values go back to "the preset's value"
        if values.get(key) == PRESETS[preset_key].settings[key] and not (
                override and key in REGULARISATION):
            values[key] = None
    source_kind = "scratch" if not values.get("pretrained") else (
        (values.get("pretrained_weights") or "hub:").split(":", 1)[0])
    return {"source": source, "step": 0, "values": values, "version_id": version_id, "dataset_id": dataset_id,
            "override": override, "pretrained_source": source_kind, "name": name, "description": ""}


def state_for(source: str) -> dict[str, Any]:
    """The wizard state of `source` ("new" or "clone:<run id>"), made fresh when the URL changed."""
    state = st.session_state.get(STATE)
    if state is None or state["source"] != source:
        state = new_state(source) if source == "new" else _clone_state(source)
        st.session_state[STATE] = state
    return state


def _clone_state(source: str) -> dict[str, Any]:
    from core.training.runs import get_run

    with session_scope() as session:
        run = get_run(session=session, run_id=source.removeprefix("clone:"))
        values = {k: v for k, v in (run.config or {}).items() if k in TrainingConfig.model_fields}
        return new_state(source, values, str(run.dataset_version_id) if run.dataset_version_id else None,
                         str(run.dataset_id) if run.dataset_id else None, name=f"{run.name} (copy)")


# ---------------------------------------------------------------- validation


def config_values(state: dict[str, Any], version: dict[str, Any] | None) -> dict[str, Any]:
    values = dict(state["values"])
    for key in RECIPE_FIELDS:  # unset: the recipe chooses
        if values.get(key) is None:
            values.pop(key, None)
    for key in PRESET_SETTINGS:
        if values.get(key) is None or (key in REGULARISATION and not state["override"]):
            values.pop(key, None)
    if version is not None:
        values["task_type"], values["num_classes"] = version["task_type"], version["class_count"]
    return values


def _step_of(field: str | None, text: str) -> int:
    """The step a problem belongs to: its field's, else the last step whose fields it names."""
    for index, fields in enumerate(STEP_FIELDS):
        if field in fields:
            return index
    named = [index for index, fields in enumerate(STEP_FIELDS) if any(f in text for f in fields)]
    return max(named) if named else 1


def problems(state: dict[str, Any], version: dict[str, Any] | None) -> tuple[list[tuple[int, str]], Any]:
    """(step, message) for everything wrong with the config so far, and the parsed config if valid."""
    if version is None:
        return [(0, "Choose a dataset version to train on (or create one from the current labels).")], None
    from core.training.runs import recipe_values

    try:
        parsed = TrainingConfig(**recipe_values(config_values(state, version),
                                                split_counts=version["split_counts"] or {}))
    except ValidationError as exc:
        found = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or None
            message = error["msg"].removeprefix("Value error, ")
            found.append((_step_of(field, message), f"{field}: {message}" if field else message))
        return found, None
    except UserError as exc:  # an unknown size or an image size that does not suit the model
        return [(_step_of(None, str(exc)), str(exc))], None
    try:
        check_fits_dataset(parsed, split_counts=version["split_counts"] or {})
    except UserError as exc:
        return [(2 if "batch_size" in str(exc) else 0, str(exc))], parsed
    return [], parsed


# ---------------------------------------------------------------- steps


def _versions(dataset_id: str) -> list[dict[str, Any]]:
    from core.datasets.versions import list_versions, version_summary

    with session_scope() as session:
        return [version_summary(v) for v in list_versions(session=session, dataset_id=uuid.UUID(dataset_id))]


def step_data(state: dict[str, Any], user) -> dict[str, Any] | None:
    from core.datasets.dataset import list_datasets

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
        from core.datasets.versions import create_version

        try:
            with session_scope() as session:
                made = create_version(session=session, actor=user, storage=get_storage(),
                                      dataset_id=uuid.UUID(state["dataset_id"]))
                state["version_id"] = str(made.id)
            st.session_state.pop("wz__version_id", None)
            st.rerun()
        except UserError as exc:
            st.error(str(exc))
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
    for col, split in zip(cols, ("train", "val", "test"), strict=False):
        col.metric(f"{split} images", counts.get(split, 0))
    cols[3].metric("classes", version["class_count"])
    per_class = pd.DataFrame([{"class": name, **{s: n.get(s, 0) for s in ("train", "val", "test")}}
                              for name, n in (version["per_class_counts"] or {}).items()])
    if not per_class.empty:
        st.dataframe(per_class, hide_index=True, width="stretch")
    eval_warnings(version)
    return version


def eval_warnings(version: dict[str, Any]) -> None:
    """Classes of the version without val or test images, said before a run is started."""
    from core.datasets.split_checks import version_missing_eval, warning_lines

    for line in warning_lines({"missing_eval": version_missing_eval(version)}):
        st.warning(line[0].upper() + line[1:] + "; fix the splits and make a new version to measure it.")


def _fit_batch_size(state: dict[str, Any], version: dict[str, Any]) -> None:
    """A newcomer's default batch must fit a small train split (even, for mixup pairs)."""
    train = (version["split_counts"] or {}).get("train", 0)
    if train >= 2 and state["values"]["batch_size"] > train and state.get("batch_fitted_for") != version["id"]:
        state["values"]["batch_size"] = max(2, train - train % 2)
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
        from core.training.views import list_models

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
    from core.datasets.versions import version_summary
    from core.models import ClsDatasetVersion

    if not state["version_id"]:
        return None
    with session_scope() as session:
        row = session.get(ClsDatasetVersion, uuid.UUID(state["version_id"]))
        return version_summary(row) if row is not None else None


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
            STEP_RENDERERS[step](state, wizard_recipe.preview(config_values(state, version), version))
    found, parsed = problems(state, version)
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
    from core.training.runs import create_run, start_run

    try:
        with session_scope() as session:
            run = create_run(session=session, actor=user, version_id=version["id"],
                             config=parsed.model_dump(mode="json"), name=state["name"] or None,
                             description=state["description"] or None)
            run_id = run.id
    except UserError as exc:
        st.error(str(exc))
        return
    error = None
    try:
        start_run(actor=user, run_id=run_id)
    except UserError as exc:  # no worker queue reachable: the run stays pending and can be started later
        error = str(exc)
    st.session_state.pop(STATE, None)
    on_started(run_id, error)
