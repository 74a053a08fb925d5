"""The training wizard's setting steps (Training, Augmentation, Advanced) and the helpers that bind
widgets to the wizard's state; settings the recipe decides go through ui.wizard_recipe."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.training.wizard import PRESETS
from ui import wizard_recipe


def bind(widget, label: str, field: str, state: dict[str, Any], **kwargs):
    key = f"wz_{field}"
    if key not in st.session_state:
        st.session_state[key] = state["values"][field]
    state["values"][field] = widget(label, key=key, **kwargs)
    return state["values"][field]


def bind_state(widget, label: str, name: str, state: dict[str, Any], **kwargs):
    key = f"wz__{name}"
    if key not in st.session_state:
        st.session_state[key] = state[name]
    state[name] = widget(label, key=key, **kwargs)
    return state[name]


def step_training(state: dict[str, Any], recipe: dict[str, Any] | None) -> None:
    st.caption("Settings marked *auto* are chosen from the data (pretrained or not, images per class, image "
               "size, optimizer steps, device); each says why. Override any of them.")
    bind(st.radio, "Recipe", "recipe", state, options=["auto", "full"], horizontal=True,
          format_func={"auto": "Chosen from the data", "full": "Full fine-tuning recipe (pretrained, GPU, long)"}.get)
    a, b = st.columns(2)
    with a:
        bind(st.number_input, "Epochs", "epochs", state, min_value=1, max_value=10_000, step=1)
        bind(st.selectbox, "Optimizer", "optimizer", state, options=["adamw", "sgd", "lamb"])
        if bind(st.toggle, "Automatic learning rate (LR range test)", "auto_lr", state,
                 help="A short test before training raises the rate until the loss stops falling."):
            state["values"]["learning_rate"] = None
        else:
            wizard_recipe.field(bind, st.number_input, "Learning rate", "learning_rate", state, recipe,
                                min_value=1e-7, max_value=10.0, step=1e-5, format="%.1e")
        wizard_recipe.field(bind, st.number_input, "Weight decay", "weight_decay", state, recipe, min_value=0.0,
                            max_value=10.0, step=0.01)
    with b:
        bind(st.number_input, "Batch size", "batch_size", state, min_value=1, max_value=4096, step=2)
        bind(st.selectbox, "LR schedule", "lr_scheduler", state, options=["cosine", "step", "plateau", "one_cycle"])
        wizard_recipe.field(bind, st.number_input, "Warmup epochs", "warmup_epochs", state, recipe, min_value=0.0,
                            step=0.1)
        wizard_recipe.field(bind, st.number_input, "Layer-wise LR decay", "llrd_decay", state, recipe,
                            min_value=0.01, max_value=1.0, step=0.05,
                            help="Earlier layers learn with smaller rates (1 turns it off).")
    budget = st.number_input("Time budget (minutes, 0 = none)", min_value=0.0, max_value=10080.0, step=5.0,
                             value=float(state["values"].get("time_budget_min") or 0.0), key="wz__time_budget",
                             help="Training stops when it is spent; with no epochs of your own, the epochs "
                                  "are fitted to it from the throughput the worker measures.")
    state["values"]["time_budget_min"] = budget or None


def step_augmentation(state: dict[str, Any], recipe: dict[str, Any] | None) -> None:
    presets = ["auto", *PRESETS]
    chosen = (recipe or {}).get("augmentation_preset")
    why = (recipe or {}).get("recipe_notes", {}).get("augmentation_preset", "")
    if state["values"].get("augmentation_preset") is None:
        state["values"]["augmentation_preset"] = "auto"
    picked = bind(st.radio, "Augmentation preset", "augmentation_preset", state, options=presets,
                   format_func=lambda k: f"Auto: {PRESETS[chosen].name if chosen else 'chosen from the data'}"
                   if k == "auto" else PRESETS[k].name,
                   captions=[why or "chosen from the data"] + [
                       f"{PRESETS[k].description} · time ×{PRESETS[k].training_time_factor:g} · "
                       f"expected gain {PRESETS[k].accuracy_boost}" for k in PRESETS])
    if picked == "auto":
        state["values"]["augmentation_preset"] = None
    bind(st.number_input, "Image size (px)", "image_size", state, min_value=16, max_value=2048, step=16,
          help="Images are resized to this square size. Larger sees more detail and trains slower.")


def step_advanced(state: dict[str, Any], recipe: dict[str, Any] | None) -> None:
    values = state["values"]
    a, b, c = st.columns(3)
    with a:
        st.markdown("**Speed and stability**")
        if wizard_recipe.field(bind, st.toggle, "EMA of weights", "use_ema", state, recipe):
            wizard_recipe.field(bind, st.number_input, "EMA decay", "ema_decay", state, recipe, min_value=0.5,
                                max_value=0.99999, step=0.0001, format="%.5f")
        wizard_recipe.field(bind, st.toggle, "Mixed precision", "mixed_precision", state, recipe)
        bind(st.number_input, "Gradient accumulation steps", "gradient_accumulation_steps", state,
              min_value=1, max_value=1024, step=1)
        bind(st.number_input, "Freeze backbone for epochs", "freeze_backbone_epochs", state, min_value=0, step=1)
    with b:
        st.markdown("**Regularisation**")
        wizard_recipe.field(bind, st.number_input, "Drop path rate", "drop_path_rate", state, recipe,
                            min_value=0.0, max_value=0.95, step=0.05)
        preset = PRESETS[values["augmentation_preset"] or (recipe or {}).get("augmentation_preset") or "light"].settings
        if bind_state(st.toggle, "Override the preset's smoothing and mixing", "override", state):
            for key, label in (("label_smoothing", "Label smoothing"), ("mixup_alpha", "MixUp alpha"),
                               ("cutmix_alpha", "CutMix alpha")):
                if values.get(key) is None:
                    values[key] = preset[key]
                bind(st.number_input, label, key, state, min_value=0.0, max_value=10.0, step=0.05)
        else:
            st.caption(f"From the preset: label smoothing {preset['label_smoothing']}, MixUp "
                       f"{preset['mixup_alpha']}, CutMix {preset['cutmix_alpha']}.")
    with c:
        st.markdown("**Imbalance and stopping**")
        bind(st.selectbox, "Class weights", "class_weights", state, options=["balanced", "sqrt", "none"])
        bind(st.number_input, "Focal loss gamma", "focal_loss_gamma", state, min_value=0.0, max_value=10.0,
              step=0.5, help="0 is plain cross-entropy; 2 focuses on hard examples.")
        bind(st.toggle, "Early stopping", "early_stopping", state)
        if values["early_stopping"]:
            wizard_recipe.field(bind, st.number_input, "Patience (epochs)", "early_stopping_patience", state, recipe,
                                min_value=1, step=1)
            bind(st.selectbox, "Metric", "early_stopping_metric", state,
                  options=["val_f1", "val_accuracy", "val_top5", "val_loss", "val_map"])
