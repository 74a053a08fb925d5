"""The tabs of one model on the Models page: per-class table, confusion matrix, misclassified
images, confidence-threshold explorer, files (downloads, ONNX on demand) and management."""

from __future__ import annotations

import uuid
import warnings

import numpy as np
import pandas as pd
import streamlit as st

from core.db import session_scope
from core.errors import UserError
from core.storage import get_storage
from core.training.registry import get_model, start_onnx_export
from core.training.thresholds import (
    DEFAULT_TARGET_ACCURACY,
    SplitPredictions,
    clear_thresholds,
    explorer,
    load_predictions,
    save_thresholds,
    scores_at,
)
from core.training.views import image_thumbs
from ui.actions import act
from ui.shared import refusal, watch_jobs
from ui.training_charts import confusion_figure, threshold_figure

MISCLASSIFIED_SHOWN = 48


@st.cache_data(max_entries=4, show_spinner="Reading the stored predictions…")
def predictions_of(model_id: str, predictions_key: str) -> dict[str, SplitPredictions]:
    """Parsed once per model and file (the key changes when the file does)."""
    with session_scope() as session:
        model = get_model(session=session, model_id=model_id)
        return load_predictions(storage=get_storage(), model=model)


def per_class_tab(detail: dict) -> None:
    rows = [{"class": name, **values} for name, values in (detail["per_class_metrics"] or {}).items()]
    if not rows:
        st.info("No per-class metrics were stored for this model.")
        return
    table = pd.DataFrame(rows)
    sort = st.selectbox("Sort by", ["f1", "precision", "recall", "support", "class"], key="per_class_sort",
                        help="Or click a column header.")
    table = table.sort_values(sort, ascending=sort != "support", kind="stable")  # weakest classes first
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        key: st.column_config.ProgressColumn(key, format="%.3f", min_value=0.0, max_value=1.0)
        for key in ("precision", "recall", "f1")
    })


def confusion_tab(detail: dict) -> None:
    matrix, names = detail["confusion_matrix"], detail["class_names"]
    if not matrix:
        st.info("No confusion matrix was stored for this model.")
        return
    if detail["task_type"] == "multi_label":  # one 2×2 matrix per class: [[TN, FP], [FN, TP]]
        st.caption("Multi-label: each class is its own yes/no decision at threshold 0.5.")
        table = pd.DataFrame([{"class": name, "TP": m[1][1], "FP": m[0][1], "FN": m[1][0], "TN": m[0][0]}
                              for name, m in zip(names, matrix, strict=True)])
        st.dataframe(table, hide_index=True, width="stretch")
        return
    normalized = st.toggle("Row-normalized (share of each true class)", key="cm_normalized")
    st.plotly_chart(confusion_figure(matrix, names, normalized=normalized), key="confusion")


def misclassified_tab(detail: dict, predictions: dict[str, SplitPredictions] | None) -> None:
    if not predictions:
        st.info("This model has no stored predictions, so its mistakes cannot be listed.")
        return
    splits = [s for s in ("test", "val") if s in predictions]
    split = st.radio("Split", splits, horizontal=True, key="wrong_split")
    part, names = predictions[split], detail["class_names"]
    wrong = part.wrong()
    if len(wrong) == 0:
        st.success(f"No misclassified images on the {split} split ({len(part.image_ids)} images).")
        return
    confidence = part.probs[wrong].max(axis=1)
    wrong = wrong[np.argsort(-confidence, kind="stable")][:MISCLASSIFIED_SHOWN]
    st.caption(f"{len(part.wrong())} of {len(part.image_ids)} {split} images are misclassified; the most confident "
               f"mistakes first{' (first ' + str(MISCLASSIFIED_SHOWN) + ')' if len(part.wrong()) > len(wrong) else ''}.")
    with session_scope() as session:
        thumbs = image_thumbs(session=session, image_ids=[part.image_ids[i] for i in wrong])
    storage = get_storage()
    columns = st.columns(6)
    for slot, index in enumerate(wrong):
        image_id = part.image_ids[index]
        key = (thumbs.get(image_id) or {}).get("key") or (part.keys[index] if part.keys else "")
        with columns[slot % 6]:
            try:
                st.image(storage.get(key), width="stretch")
            except (UserError, OSError):
                st.caption("(image no longer in storage)")
            st.caption(_wrong_caption(part, index, names))


def _wrong_caption(part: SplitPredictions, index: int, names: list[str]) -> str:
    probs = part.probs[index]
    if part.multi_label:
        true = [names[c] for c in np.flatnonzero(part.targets[index])]
        predicted = [f"{names[c]} {probs[c]:.0%}" for c in np.flatnonzero(probs >= 0.5)]
        return f"true: {', '.join(true) or '—'}  \npredicted: {', '.join(predicted) or 'none'}"
    predicted = int(probs.argmax())
    return f"true: **{names[int(part.targets[index])]}**  \npredicted: **{names[predicted]}** ({probs[predicted]:.0%})"


def thresholds_tab(detail: dict, predictions: dict[str, SplitPredictions] | None, user) -> None:
    if not predictions or "val" not in predictions:
        st.info("This model has no stored validation probabilities to tune thresholds on.")
        return
    part, names = predictions["val"], detail["class_names"]
    saved = detail["thresholds"]
    st.caption(f"Tuned on the validation split ({len(part.image_ids)} images). Prediction applies the saved "
               "thresholds.")
    if part.multi_label:
        _multi_label_thresholds(detail, part, names, saved, user)
    else:
        _abstain_threshold(detail, part, names, saved, user)


def _abstain_threshold(detail: dict, part: SplitPredictions, names: list[str], saved: dict, user) -> None:
    target = st.slider("Target accuracy on the images it answers", 0.5, 1.0,
                       float(saved.get("target_accuracy", DEFAULT_TARGET_ACCURACY)), 0.01, key="th_target")
    report = explorer(part, names, target_accuracy=target)
    suggested = report["suggested"]["abstain"]
    if suggested is None:
        st.warning(f"No threshold suggested: {report['suggested'].get('reason') or 'none reaches the target'}.")
    else:
        at = int(round(suggested * 100))
        st.write(f"Suggested abstain threshold: **{suggested:.2f}**: the lowest that keeps {target:.0%} of the "
                 f"answered images right; it answers {report['curves']['coverage'][at]:.0%} of the validation "
                 "images.")
    start = float(saved.get("abstain", suggested if suggested is not None else 0.0))
    chosen = st.slider("Abstain below top probability", 0.0, 1.0, round(start, 2), 0.01, key="th_abstain")
    curves, grid = report["curves"], report["grid"]
    at = int(round(chosen * 100))
    a, b = st.columns(2)
    a.metric("Answered", f"{curves['coverage'][at]:.0%}")
    accuracy = curves["accuracy"][at]
    b.metric("Accuracy of answered", "—" if np.isnan(accuracy) else f"{accuracy:.1%}")
    view = st.selectbox("Curves of", ["all classes (macro)", *names], key="th_class")
    if view in names:
        c = names.index(view)
        p, r, f = curves["precision"][c], curves["recall"][c], curves["f1"][c]
    else:
        with warnings.catch_warnings():  # a threshold where no class is predicted has no precision at all
            warnings.simplefilter("ignore", RuntimeWarning)
            p, r, f = (np.nanmean(curves[k], axis=0) for k in ("precision", "recall", "f1"))
    st.plotly_chart(threshold_figure(grid, p, r, f, chosen=chosen, title=view,
                                     extra={"answered": curves["coverage"], "accuracy of answered": curves["accuracy"]}),
                    key="th_chart")
    st.dataframe(pd.DataFrame(scores_at(part, names, {"abstain": chosen})), hide_index=True, width="stretch")
    refused = refusal("admin", "saving thresholds")
    with st.container(horizontal=True):
        if st.button("Save threshold", type="primary", key="th_save", disabled=refused is not None, help=refused):
            _save(detail, {"abstain": chosen, "target_accuracy": target, "split": "val", "method": "abstain"}, user)
        if saved and st.button("Clear saved threshold", key="th_clear", disabled=refused is not None, help=refused):
            _clear(detail, user)
    if saved:
        st.caption(f"Saved: abstain below {saved['abstain']:.2f} ({saved.get('saved_at', '')}).")


def _multi_label_thresholds(detail: dict, part: SplitPredictions, names: list[str], saved: dict, user) -> None:
    report = explorer(part, names)
    optimal = report["suggested"]["per_class"]
    current = saved.get("per_class") or optimal
    if report["untuned_classes"]:
        st.caption(f"No positive validation image for {', '.join(report['untuned_classes'])}: kept at 0.5.")
    table = pd.DataFrame({"class": names, "threshold": [float(current.get(n, 0.5)) for n in names],
                          "F1-optimal": [optimal[n] for n in names]})
    edited = st.data_editor(table, hide_index=True, width="stretch", disabled=["class", "F1-optimal"], key="th_table",
                            column_config={"threshold": st.column_config.NumberColumn(min_value=0.0, max_value=1.0,
                                                                                      step=0.01, format="%.2f")})
    chosen = {row["class"]: float(row["threshold"]) for row in edited.to_dict("records")}
    view = st.selectbox("Curves of", names, key="th_class")
    c = names.index(view)
    curves = report["curves"]
    st.plotly_chart(threshold_figure(report["grid"], curves["precision"][c], curves["recall"][c], curves["f1"][c],
                                     chosen=chosen[view], title=view), key="th_chart")
    st.dataframe(pd.DataFrame(scores_at(part, names, {"per_class": chosen})), hide_index=True, width="stretch")
    refused = refusal("admin", "saving thresholds")
    with st.container(horizontal=True):
        if st.button("Save thresholds", type="primary", key="th_save", disabled=refused is not None, help=refused):
            _save(detail, {"per_class": chosen, "split": "val", "method": "per_class"}, user)
        if st.button("Save the F1-optimal thresholds", key="th_optimal", disabled=refused is not None, help=refused):
            _save(detail, {"per_class": optimal, "split": "val", "method": "f1_optimal"}, user)
        if saved and st.button("Clear saved thresholds", key="th_clear", disabled=refused is not None, help=refused):
            _clear(detail, user)


def _save(detail: dict, thresholds: dict, user) -> None:
    def action(session, actor):
        save_thresholds(session=session, actor=actor, model_id=detail["id"], thresholds=thresholds)
        return True

    if act(action, "Thresholds saved; prediction uses them now"):
        st.rerun()


def _clear(detail: dict, user) -> None:
    def action(session, actor):
        clear_thresholds(session=session, actor=actor, model_id=detail["id"])
        return True

    if act(action, "Saved thresholds cleared"):
        st.rerun()


FILES = (("checkpoint_key", "Checkpoint (PyTorch, best.pt)", "best.pt"),
         ("onnx_key", "ONNX", "model.onnx"),
         ("torchscript_key", "TorchScript", "model.ts"))


def files_tab(detail: dict, user) -> None:
    storage = get_storage()
    for field, label, filename in FILES:
        key = detail[field]
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown(f"**{label}**")
            if key:
                st.download_button("Download", data=lambda key=key: storage.get(key), key=f"dl_{field}",
                                   file_name=f"{detail['name']}-{filename}", icon=":material/download:",
                                   on_click="ignore", mime="application/octet-stream")
                st.caption(key)
            else:
                st.caption("not exported")
        if field == "onnx_key" and key and storage.exists(key + ".data"):
            st.download_button("Download ONNX weights (model.onnx.data)", data=lambda k=key + ".data": storage.get(k),
                               key="dl_onnx_data", file_name="model.onnx.data", on_click="ignore")
    if not detail["onnx_key"]:
        export_onnx_button(detail, user)
    check = {k: v for k, v in detail["export_check"].items() if k.endswith("max_abs_diff")}
    if check:
        st.caption("Exports checked against the torch model on real images: " + ", ".join(
            f"{k.removesuffix('_max_abs_diff')} max abs diff {v:.1e}" for k, v in check.items()))
    with st.expander("Preprocessing saved with the model"):
        st.json(detail["preprocessing"])


def export_onnx_button(detail: dict, user) -> None:
    job_key = f"onnx_job_{detail['id']}"
    refused = refusal("admin", "exporting a model to ONNX")
    if st.button("Export ONNX", icon=":material/output:", disabled=refused is not None,
                 help=refused or "Export and check an ONNX file now (a background job)"):
        job_id = act(lambda _session, actor: start_onnx_export(actor=actor, model_id=detail["id"]))
        if job_id:
            st.session_state[job_key] = job_id
    if job_key in st.session_state:
        watch_jobs([uuid.UUID(str(st.session_state[job_key]))], on_done=lambda jobs: _export_done(job_key, jobs))


def _export_done(job_key: str, jobs) -> None:
    st.session_state.pop(job_key, None)
    if all(job.status == "succeeded" for job in jobs):
        st.rerun(scope="app")


def detail_tabs(detail: dict, user, manage) -> None:
    predictions = None
    error = None
    if detail["predictions_key"]:
        try:
            predictions = predictions_of(str(detail["id"]), detail["predictions_key"])
        except UserError as exc:
            error = str(exc)
    tabs = st.tabs(["Per class", "Confusion matrix", "Misclassified", "Thresholds", "Files", "Manage"])
    with tabs[0]:
        per_class_tab(detail)
    with tabs[1]:
        confusion_tab(detail)
    with tabs[2]:
        if error:
            st.error(error)
        misclassified_tab(detail, predictions)
    with tabs[3]:
        thresholds_tab(detail, predictions, user)
    with tabs[4]:
        files_tab(detail, user)
    with tabs[5]:
        manage(detail, user)
