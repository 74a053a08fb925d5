"""Predict page: predict uploaded images or a URL with a trained model (top-k bars, Grad-CAM with a
class selector), batch prediction over a dataset, a selection (folders, tags, pasted image ids) or
the library (AI labels and/or CSV, with a live progress bar), and the label-error review (given vs
suggested label or label set; accept, keep or skip)."""

from __future__ import annotations

import streamlit as st

from core.datasets.dataset import list_datasets
from core.db import session_scope
from core.prediction.auto_label import parse_image_ids, selection_ids, start_batch_prediction
from core.prediction.label_errors import decide, pending, start_find, stored_issues
from core.prediction.predict import Item, grad_cam, predict_items, read_inputs, resolve_model
from core.storage import get_storage
from core.training.registry import list_models
from ui.actions import act, user_errors
from ui.shared import current_user, library_filter_options, refusal, watch_jobs
from ui.similar_view import upload_section

st.title("Predict")
st.caption("Predict classes for new images with a trained model, with Grad-CAM.")

user = current_user()
storage = get_storage()


def model_choices() -> tuple[list[tuple[str, str]], int]:
    """(id, label) of the active models and the index to preselect: ?model=, else the default."""
    with session_scope() as session:
        rows = list_models(session=session, active_only=True)
        choices = [(str(r.id), f"{r.name} · {r.model_type}/{r.model_size}" + (" · default" if r.is_default else ""))
                   for r in rows]
        wanted = st.query_params.get("model")
        if not wanted:
            try:
                wanted = str(resolve_model(session=session, model="default", user_id=user.id).id)
            except Exception:  # no default model: the first one is preselected
                wanted = None
    ids = [c[0] for c in choices]
    return choices, ids.index(wanted) if wanted in ids else 0


def choose_model(key: str) -> str | None:
    choices, index = model_choices()
    if not choices:
        st.info("No trained model yet: train one on the Training page.")
        return None
    labels = dict(choices)
    return st.selectbox("Model", [c[0] for c in choices], index=index, format_func=labels.get, key=key)


def top_k_chart(result: dict) -> None:
    import plotly.graph_objects as go

    rows = list(reversed(result["top_k"]))
    figure = go.Figure(go.Bar(x=[r["probability"] for r in rows], y=[r["class"] for r in rows], orientation="h",
                              text=[f"{r['probability']:.1%}" for r in rows], textposition="auto"))
    figure.update_layout(height=60 + 32 * len(rows), margin={"l": 0, "r": 0, "t": 10, "b": 0},
                         xaxis={"range": [0, 1], "tickformat": ".0%"})
    st.plotly_chart(figure, key=f"chart_{result['image']}_{id(result)}")


def predict_tab() -> None:
    model_id = choose_model("predict_model")
    if model_id is None:
        return
    files = st.file_uploader("Images", accept_multiple_files=True, type=["jpg", "jpeg", "png", "webp", "bmp", "gif",
                                                                         "tif", "tiff"])
    url = st.text_input("…or an image URL", placeholder="https://example.com/image.jpg")
    top_k = st.slider("Top-k", 1, 10, 5)
    if st.button("Predict", type="primary", disabled=not files and not url.strip()):
        items = [Item(f.name, f.getvalue()) for f in files or []]
        if url.strip():
            items += read_inputs([url.strip()])

        def run(session, actor):
            return predict_items(session=session, storage=storage, model=model_id, items=items, top_k=top_k,
                                 user_id=user.id)

        result = act(run)
        if result is not None:
            st.session_state["predict_result"] = result
            st.session_state["predict_images"] = {item.name: item.data for item in items}
    result = st.session_state.get("predict_result")
    if not result or result["model"]["id"] != model_id:
        return
    st.caption(f"{result['model']['name']} · {result['model']['backend']}")
    images = st.session_state.get("predict_images", {})
    for number, item in enumerate(result["results"]):
        with st.container(border=True):
            if "error" in item:
                st.error(f"{item['image']}: {item['error']}")
                continue
            left, right = st.columns([1, 2])
            left.image(images.get(item["image"]), caption=item["image"], width="stretch")
            with right:
                predicted = ", ".join(item["predicted"]) or "no class above its threshold"
                st.markdown(f"**Prediction:** {predicted}" if not item.get("abstained") else
                            "**Abstained:** the top probability is below the model's threshold")
                top_k_chart(item)
                grad_cam_view(model_id, item, images.get(item["image"]), number)
            if images.get(item["image"]) is not None:
                upload_section(images[item["image"]], number)


def grad_cam_view(model_id: str, item: dict, image: bytes | None, number: int) -> None:
    if image is None or not st.toggle("Grad-CAM", key=f"cam_on_{number}"):
        return
    options = {r["class"]: r["index"] for r in item["top_k"]}
    chosen = st.selectbox("Explain class", list(options), key=f"cam_class_{number}")

    def run(session, actor):
        return grad_cam(session=session, storage=storage, model=model_id, image=image,
                        class_index=options[chosen], user_id=user.id)

    cam = act(run)
    if cam is not None:
        st.image(cam["overlay"], caption=f"Grad-CAM for {cam['class']} ({cam['probability']:.1%})", width=320)


def batch_tab() -> None:
    model_id = choose_model("batch_model")
    if model_id is None:
        return
    with session_scope() as session:
        datasets = {str(d.id): d.name for d in list_datasets(session=session)}
    scope = st.radio("Predict", ["dataset", "selection", "library"], horizontal=True, key="batch_scope",
                     format_func={"dataset": "a dataset", "selection": "a selection of images",
                                  "library": "the whole library"}.get)
    dataset_id, image_ids = None, None
    if scope == "dataset":
        if not datasets:
            st.info("No dataset yet: create one on the Datasets page (or predict a selection or the library).")
            return
        dataset_id = st.selectbox("Dataset", list(datasets), format_func=datasets.get, key="batch_dataset")
    elif scope == "selection":
        image_ids = selection_inputs()
        if image_ids is None:
            return
        within = st.selectbox("Within dataset", ["", *datasets], format_func=lambda d: datasets.get(d, "(none)"),
                              key="batch_selection_dataset",
                              help="Keep the selected images that are in this dataset; AI labels are written there.")
        dataset_id = within or None
    can_write = dataset_id is not None
    write = st.checkbox("Write predictions as AI labels", value=scope == "dataset", disabled=not can_write,
                        help="Labels marked AI-generated with their confidence; they appear in the labeling "
                             "page's review and low-confidence queues." + ("" if can_write else
                                                                           " Choose a dataset to write labels."))
    no_overwrite = refusal("admin", "replacing labels people set")
    overwrite = st.checkbox("Also replace manual and reviewed labels", value=False,
                            disabled=not write or no_overwrite is not None, help=no_overwrite)
    export = st.checkbox("Export predictions as CSV", value=scope != "dataset")
    refused = refusal("labeler", "batch prediction")
    if st.button("Start batch prediction", type="primary", disabled=refused is not None, help=refused):
        job_id = act(lambda _session, actor: start_batch_prediction(
            actor=actor, model_id=model_id, scope=scope, dataset_id=dataset_id, image_ids=image_ids,
            write_labels=write and can_write, overwrite=overwrite, export_csv=export),
            "Batch prediction queued")
        if job_id is not None:
            st.session_state["batch_job"] = job_id
    job_id = st.session_state.get("batch_job")
    if job_id is not None:
        watch_jobs([job_id], on_done=batch_done)


def selection_inputs() -> list | None:
    """A selection: the library's images in chosen folders / with chosen tags, plus pasted image ids
    (e.g. copied from the Images page). None (with the reason shown) when ids do not parse."""
    options = library_filter_options()
    left, right = st.columns(2)
    folders = left.multiselect("Images in folders", options["folders"], key="batch_folders")
    tags = right.multiselect("…with any of the tags", options["tags"], key="batch_tags")
    pasted = st.text_area("…and these image ids", key="batch_image_ids", height=80,
                          placeholder="one per line, or separated by commas")
    with user_errors():
        ids = parse_image_ids(pasted)
        with session_scope() as session:
            chosen = selection_ids(session=session, image_ids=ids, folders=folders, tags=tags)
        st.caption(f"{len(chosen)} images selected")
        return chosen
    return None


def batch_done(jobs) -> None:
    result = jobs[0].result or {}
    if jobs[0].status == "succeeded":
        st.write(f"{result.get('predicted', 0)} predicted · {result.get('labeled', 0)} labeled · "
                 f"{result.get('kept', 0)} kept (a person's labels) · {result.get('abstained', 0)} abstained · "
                 f"{result.get('failed', 0)} failed")
        for failure in result.get("failures", [])[:10]:
            st.caption(f"{failure['filename'] or failure['image_id']}: {failure['error']}")
        if result.get("csv_key"):
            st.download_button("Download CSV", storage.get(result["csv_key"]), file_name="predictions.csv",
                               mime="text/csv")


def label_errors_tab() -> None:
    with session_scope() as session:
        datasets = {str(d.id): d.name + (" (multi-label)" if d.task_type == "multi_label" else "")
                    for d in list_datasets(session=session)}
    if not datasets:
        st.info("No dataset yet: label errors are found in a labeled dataset; create one on the Datasets page.")
        return
    dataset_id = st.selectbox("Dataset", list(datasets), format_func=datasets.get, key="issues_dataset")
    method = st.radio("Out-of-sample probabilities from", ["cv", "model"], horizontal=True,
                      format_func={"cv": "cross-validation on the train split (fast)",
                                   "model": "a trained model (images it did not train on)"}.get)
    model_id = choose_model("issues_model") if method == "model" else None
    refused = refusal("admin", "finding label errors")
    if st.button("Find label errors", disabled=refused is not None,
                 help=refused or "Ranks likely mistakes; nothing changes until you click accept."):
        job_id = act(lambda _session, actor: start_find(actor=actor, dataset_id=dataset_id, model_id=model_id))
        if job_id is not None:
            st.session_state["issues_job"] = job_id
    if st.session_state.get("issues_job") is not None:
        watch_jobs([st.session_state["issues_job"]])
    with user_errors():
        result = stored_issues(storage=storage, dataset_id=dataset_id)
    if not result:
        return
    skipped = st.session_state.setdefault(f"issues_skipped_{dataset_id}", set())
    todo = [issue for issue in pending(result) if issue["image_id"] not in skipped]
    st.caption(f"{result['method']} · version {result['version']} · {result['checked']} checked · "
               f"{result['found']} suspected · {len(todo)} to review")
    if not todo:
        st.success("Every suggestion has been reviewed.")
        return
    _issue_card(todo[0], dataset_id, skipped)


def _issue_card(issue: dict, dataset_id: str, skipped: set) -> None:
    """One suggestion: the image, given and suggested labels, and accept / keep / skip."""
    with st.container(border=True):
        left, right = st.columns([1, 2])
        left.image(storage.get(issue["key"]), caption=issue["filename"] or issue["image_id"], width="stretch")
        with right:
            st.markdown(f"**Given:** `{issue['given']}` ({issue['given_probability']:.1%})  \n"
                        f"**Suggested:** `{issue['suggested']}` ({issue['suggested_probability']:.1%})  \n"
                        f"Rank {issue['rank']} · split {issue['split']}")
            confirm = False
            if issue["split"] == "test":
                st.warning("Test split: changing test labels from model output inflates test scores.")
                confirm = st.checkbox("Change this test label anyway", key=f"confirm_{issue['image_id']}")
            accept, keep, skip = st.columns(3)

            def click(action: str):
                return lambda session, actor: decide(session=session, actor=actor, storage=storage,
                                                     dataset_id=dataset_id, image_id=issue["image_id"],
                                                     action=action, confirm_test=confirm)

            undecidable = refusal("labeler", "deciding a label-error suggestion")
            if undecidable:
                st.caption(undecidable)
            if accept.button("Accept suggestion", type="primary", key=f"accept_{issue['image_id']}",
                             disabled=undecidable is not None):
                if act(click("accept"), f"Relabeled as {issue['suggested']}") is not None:
                    st.rerun()
            if keep.button("Keep given label", key=f"keep_{issue['image_id']}", disabled=undecidable is not None):
                if act(click("keep"), "Kept") is not None:
                    st.rerun()
            if skip.button("Skip", key=f"skip_{issue['image_id']}"):
                skipped.add(issue["image_id"])
                st.rerun()


predict, batch, issues = st.tabs(["Predict", "Batch prediction", "Label errors"])
with predict:
    predict_tab()
with batch:
    batch_tab()
with issues:
    label_errors_tab()
