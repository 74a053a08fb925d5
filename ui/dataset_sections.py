"""Tabs of the dataset detail page: Splits, Versions, Health, Export. Each `render_*(dataset_id)`
reads the state it needs through core and renders; no SQL here."""

from __future__ import annotations

import uuid

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.datasets.export import EXPORT_FORMATS, list_exports, start_export
from core.datasets.health import MIN_IMAGES_PER_CLASS, health_check
from core.datasets.split_checks import join_straddling, straddling_duplicates, version_warnings, warning_lines
from core.datasets.split_facts import resolve_threshold
from core.datasets.splits import assign_split, auto_split, split_stats
from core.datasets.versions import compare_versions, create_version, list_versions, unassigned_labeled_count
from core.db import session_scope
from core.errors import UserError
from core.storage import get_storage
from core.vocabulary import SPLITS, TRAINING_SPLITS
from ui.actions import act
from ui.freshness import dataset_revision
from ui.shared import SPLIT_COLORS, allowed, plain, refusal, watch_jobs

SEVERITY_ICONS = {"error": ":material/error:", "warning": ":material/warning:", "info": ":material/info:"}
FORMAT_HELP = {
    "imagefolder": "train/<class>/<file> folders (single-label)",
    "csv": "filename,label,split per split folder (single-label)",
    "multilabel-csv": "filename + one 0/1 column per class per split folder (Roboflow _classes.csv)",
}
MAX_DISTANCE = 12  # core.library.duplicates.MAX_THRESHOLD: beyond it 64-bit pHash matches unrelated images
LINKS_SHOWN = 60
THUMBS_SHOWN = 8


def image_links(image_ids: list[str], limit: int = LINKS_SHOWN) -> None:
    """Short ids linking to the image on the Images page (its detail dialog opens)."""
    links = [f"[`{image_id[:8]}`](./images?image={image_id})" for image_id in image_ids[:limit]]
    more = f" … and {len(image_ids) - limit} more" if len(image_ids) > limit else ""
    st.markdown(" ".join(links) + more)


def thumbnails(image_ids: list[str], limit: int = THUMBS_SHOWN) -> None:
    storage = get_storage()
    shown = []
    for image_id in image_ids[:limit]:
        try:
            shown.append((image_id, storage.get(f"thumbs/{image_id}.jpg")))
        except UserError:  # no thumbnail (made without the ingest pipeline): the link still works
            continue
    if shown:
        columns = st.columns(len(shown))
        for column, (image_id, data) in zip(columns, shown, strict=True):
            column.image(data, caption=image_id[:8], width=96)


def split_chart(per_class: list[dict], title: str) -> go.Figure:
    figure = go.Figure()
    names = [row["name"] for row in per_class]
    for split, color in SPLIT_COLORS.items():
        counts = [row.get(split, 0) for row in per_class]
        if any(counts):
            figure.add_bar(name=split, x=names, y=counts, marker_color=color)
    figure.update_layout(barmode="stack", title=title, height=320, margin={"t": 40, "b": 20, "l": 20, "r": 20})
    return figure


# ---------------------------------------------------------------- splits


def render_splits(dataset_id: uuid.UUID) -> None:
    with session_scope() as session:
        stats = act(lambda session, _actor: split_stats(session=session, dataset_id=dataset_id), session=session)
    if stats is None:
        return
    if not sum(stats["labeled"].values()):
        st.info("No labeled images yet: label some (the Label button above) before splitting; images keep the "
                "split an import gave them.")
    columns = st.columns(4)
    for column, split in zip(columns, SPLITS, strict=True):
        wanted = stats["ratios"].get(split)
        column.metric(f"{split} (labeled)", stats["labeled"][split],
                      help=f"target {wanted:.0%}" if wanted is not None else "labeled images with no split")
    if stats["per_class"]:
        st.plotly_chart(split_chart(stats["per_class"], "Labeled images per class and split"),
                        width="stretch", key=f"split-chart-{dataset_id}")
        table = pd.DataFrame(stats["per_class"]).set_index("name")[[*SPLITS, "total"]]
        st.dataframe(table, width="stretch")
    straddling_section(dataset_id)  # everyone sees it; joining is an admin's
    if not allowed("admin"):
        st.caption(refusal("admin", "changing splits"))
        return
    _auto_split_form(dataset_id, stats["ratios"])
    _split_summary(dataset_id)
    _manual_split_form(dataset_id)


def _auto_split_form(dataset_id: uuid.UUID, ratios_now: dict[str, float]) -> None:
    with st.form(f"auto-split-{dataset_id}"):
        st.markdown("**Auto-split** the labeled images, stratified by class; duplicates stay together.")
        ratio_columns = st.columns(3)
        ratios = {split: column.number_input(split, min_value=0.0, max_value=1.0, step=0.05,
                                             value=float(ratios_now[split]), key=f"ratio-{split}-{dataset_id}")
                  for column, split in zip(ratio_columns, TRAINING_SPLITS, strict=True)}
        options = st.columns(4)
        seed = options[0].number_input("seed", min_value=0, value=0, step=1)
        minimum = options[1].number_input("min per class in val/test", min_value=0, value=1, step=1)
        threshold = options[2].number_input("near-duplicate distance (0 = exact copies only)", min_value=0,
                                            max_value=MAX_DISTANCE, value=resolve_threshold(None), step=1)
        keep = options[3].checkbox("keep images already in val/test")
        if st.form_submit_button("Split", type="primary"):
            summary = act(lambda session, actor: auto_split(
                session=session, actor=actor, dataset_id=dataset_id, ratios=ratios, seed=int(seed),
                keep_existing_val_test=keep, min_per_class=int(minimum),
                near_duplicate_threshold=int(threshold)))
            if summary is not None:
                st.session_state[f"split-summary-{dataset_id}"] = summary
                st.rerun()


def _split_summary(dataset_id: uuid.UUID) -> None:
    summary = st.session_state.get(f"split-summary-{dataset_id}")
    if summary:
        assigned = " · ".join(f"{split} {count}" for split, count in summary["assigned"].items())
        st.success(f"Split {summary['labeled']} labeled images: {assigned} "
                   f"({summary['changed']} changed, {summary['duplicate_groups']} duplicate groups kept together).")
        for item in summary["unmet_minimums"]:
            st.warning(plain(f"Class {item['class']!r} has {item['have']} {item['split']} images; wanted {item['want']}."))


def _manual_split_form(dataset_id: uuid.UUID) -> None:
    with st.expander("Assign a split by hand"):
        with st.form(f"manual-split-{dataset_id}"):
            text = st.text_area("image ids (one per line or comma separated)")
            split = st.radio("split", SPLITS, horizontal=True)
            if st.form_submit_button("Assign"):
                try:
                    ids = [uuid.UUID(part) for part in text.replace(",", "\n").split() if part.strip()]
                except ValueError as exc:
                    st.error(f"not an image id: {exc}")
                else:
                    act(lambda session, actor: assign_split(session=session, actor=actor, dataset_id=dataset_id,
                                                            image_ids=ids, split=split),
                        success=f"{len(ids)} images → {split}")


def _by_revision(dataset_id: uuid.UUID, name: str, read):
    """A slow read (duplicate search) kept in session state until the dataset's revision moves
    (ui.freshness)."""
    key = f"{name}-{dataset_id}"
    revision = dataset_revision(dataset_id)
    cached = st.session_state.get(key)
    if cached is None or cached[0] != revision:
        cached = st.session_state[key] = (revision, act(lambda session, _actor: read(session)))
    return cached[1]


def _join(dataset_id: uuid.UUID, how: str) -> None:
    def change(session, actor):
        return join_straddling(session=session, actor=actor, dataset_id=dataset_id, how=how,
                               storage=get_storage())

    done = act(change)
    if done is not None:
        st.session_state[f"split-joined-{dataset_id}"] = done


def straddling_section(dataset_id: uuid.UUID) -> None:
    """Near-duplicate groups across splits: reported, and joined only when asked (splits are the user's)."""
    report = _by_revision(dataset_id, "straddling", lambda session: straddling_duplicates(
        session=session, dataset_id=dataset_id, storage=get_storage()))
    if joined := st.session_state.pop(f"split-joined-{dataset_id}", None):
        st.success(f"Joined {joined['groups']} groups: {joined['moved_to_train']} images moved to train, "
                   f"{joined['removed_from_dataset']} removed from the dataset.")
    if not report or not report["count"]:
        st.caption("No near-duplicate group sits in more than one split.")
        return
    with st.container(border=True):
        st.warning(f"{report['count']} near-duplicate groups ({report['images']} images) sit in more than one split: "
                   "a copy of a training image in val or test inflates the scores. Splits are yours, so nothing "
                   "moved them; join them here.")
        for number, group in enumerate(report["examples"], start=1):
            st.caption(plain(f"{number}. " + " · ".join(f"{m['filename']} ({m['split']}, {m['image_id'][:8]})"
                                                        for m in group)))
        if len(report["examples"]) < report["count"]:
            st.caption(f"… and {report['count'] - len(report['examples'])} more groups.")
        admin = allowed("admin")
        cols = st.columns(2)
        cols[0].button("Join them into train", key=f"join-train-{dataset_id}", disabled=not admin,
                       on_click=_join, args=(dataset_id, "train"), help="Every member of these groups goes to train")
        cols[1].button("Drop the copies", key=f"join-drop-{dataset_id}", disabled=not admin,
                       on_click=_join, args=(dataset_id, "drop"),
                       help="Keep each group's members in its first split (train, then val, then test); remove "
                            "the others from this dataset (they stay in the library)")


# ---------------------------------------------------------------- versions


def render_versions(dataset_id: uuid.UUID) -> None:
    with session_scope() as session:
        versions = act(lambda session, _actor: [
            {"version": v.version_number, "created": v.created_at, "labeled": v.labeled_image_count,
             "classes": v.class_count, **v.split_counts, "notes": v.notes or ""}
            for v in list_versions(session=session, dataset_id=dataset_id)], session=session)
        unsplit = unassigned_labeled_count(session=session, dataset_id=dataset_id)
    if versions is None:
        return
    if allowed("admin"):
        _new_version_form(dataset_id, unsplit)
    else:
        st.caption(refusal("admin", "creating a version"))
    if not versions:
        st.info("No versions yet: create one above. Training reads a version (its labels and splits frozen).")
        return
    _versions_table(dataset_id, versions)


def _new_version_form(dataset_id: uuid.UUID, unsplit: int) -> None:
    warnings = _by_revision(dataset_id, "version-warnings", lambda session: version_warnings(
        session=session, dataset_id=dataset_id, storage=get_storage()))
    with st.form(f"new-version-{dataset_id}"):
        st.markdown("**Create a version**: freezes the class mapping (the dataset's classes in order), labels and "
                    "splits of every labeled image.")
        if unsplit:
            st.caption(f"{unsplit} labeled images have no split: the version assigns them by the dataset's "
                       "ratios first (stratified; assigned images stay where they are).")
        for line in warning_lines(warnings or {}):
            st.warning(plain(line[0].upper() + line[1:] + "."))
        notes = st.text_input("notes", max_chars=2000)
        if st.form_submit_button("Create version", type="primary"):
            version = act(lambda session, actor: create_version(
                session=session, actor=actor, storage=get_storage(), dataset_id=dataset_id,
                notes=notes or None).version_number)
            if version is not None:
                st.toast(f"Version {version} created")
                st.rerun()


def _versions_table(dataset_id: uuid.UUID, versions: list[dict]) -> None:
    st.dataframe(pd.DataFrame(versions).set_index("version"), width="stretch")
    if len(versions) < 2:
        return
    numbers = [v["version"] for v in versions]
    left, right = st.columns(2)
    a = left.selectbox("compare", numbers, index=1, key=f"cmp-a-{dataset_id}")
    b = right.selectbox("with", numbers, index=0, key=f"cmp-b-{dataset_id}")
    diff = act(lambda session, _actor: compare_versions(session=session, storage=get_storage(),
                                                        dataset_id=dataset_id, number_a=a, number_b=b))
    if diff is None:
        return
    rows = [{"class": r["class"], f"v{a}": r["total_a"], f"v{b}": r["total_b"], "change": r["delta"]}
            for r in diff["per_class"]]
    st.dataframe(pd.DataFrame(rows).set_index("class"), width="stretch")
    for key, label in (("images_added", "added"), ("images_removed", "removed"),
                       ("images_relabeled", "relabeled"), ("images_moved", "moved to another split")):
        if diff[key]:
            with st.expander(f"{len(diff[key])} images {label}"):
                image_links(diff[key])


# ---------------------------------------------------------------- health


def render_health(dataset_id: uuid.UUID) -> None:
    state_key = f"health-{dataset_id}"
    controls = st.columns([1, 1, 2])
    minimum = controls[0].number_input("min images per class", min_value=1, value=MIN_IMAGES_PER_CLASS,
                                       key=f"health-min-{dataset_id}")
    threshold = controls[1].number_input("near-duplicate distance (0 = exact copies only)", min_value=0,
                                         max_value=MAX_DISTANCE, value=resolve_threshold(None),
                                         key=f"health-dist-{dataset_id}")
    if controls[2].button("Run health check", type="primary", key=f"health-run-{dataset_id}"):
        st.session_state[state_key] = act(lambda session, _actor: health_check(
            session=session, dataset_id=dataset_id, min_images_per_class=int(minimum),
            near_duplicate_threshold=int(threshold)))
    report = st.session_state.get(state_key)
    if not report:
        st.caption("Checks class balance, small classes, duplicates across splits, missing splits and odd images.")
        return
    metrics = st.columns(5)
    metrics[0].metric("images", report["images"])
    metrics[1].metric("labeled", report["labeled"])
    metrics[2].metric("unlabeled", report["unlabeled"])
    metrics[3].metric("skipped", report["skipped"])
    ratio = report["imbalance_ratio"]
    metrics[4].metric("imbalance", f"{ratio:.1f} : 1" if ratio else "–")
    if report["per_class"]:
        left, right = st.columns([2, 1])
        counts = go.Figure(go.Bar(x=[r["name"] for r in report["per_class"]], y=[r["count"] for r in report["per_class"]],
                                  marker_color=[r["color"] for r in report["per_class"]]))
        counts.update_layout(title="Class distribution", height=320, margin={"t": 40, "b": 20, "l": 20, "r": 20})
        left.plotly_chart(counts, width="stretch", key=f"health-classes-{dataset_id}")
        splits = report["split_counts"]
        pie = go.Figure(go.Pie(labels=list(splits), values=list(splits.values()), hole=0.4,
                               marker_colors=[SPLIT_COLORS.get(s, SPLIT_COLORS["unassigned"]) for s in splits]))
        pie.update_layout(title="Split distribution", height=320, margin={"t": 40, "b": 20, "l": 20, "r": 20})
        right.plotly_chart(pie, width="stretch", key=f"health-splits-{dataset_id}")
    if not report["findings"]:
        st.success("No problems found.")
    for finding in report["findings"]:
        icon = SEVERITY_ICONS[finding["severity"]]
        with st.expander(plain(f"{finding['title']} ({finding['count']} images)"), icon=icon):
            st.markdown(plain(finding["detail"]))
            thumbnails(finding["image_ids"])
            image_links(finding["image_ids"])


# ---------------------------------------------------------------- export


def render_export(dataset_id: uuid.UUID) -> None:
    numbers = act(lambda session, _actor: [v.version_number for v in list_versions(session=session,
                                                                                     dataset_id=dataset_id)])
    if numbers is None:
        return
    job_key = f"export-job-{dataset_id}"
    if allowed("admin"):
        with st.form(f"export-{dataset_id}"):
            fmt = st.radio("format", EXPORT_FORMATS, format_func=lambda f: f"{f}: {FORMAT_HELP[f]}")
            source = st.selectbox("from", [None, *numbers],
                                  format_func=lambda n: "the current labels" if n is None else f"version {n}")
            if st.form_submit_button("Export", type="primary"):
                job_id = act(lambda _session, actor: start_export(actor=actor, dataset_id=dataset_id, fmt=fmt,
                                                                  version_number=source))
                if job_id is not None:
                    st.session_state[job_key] = job_id
    else:
        st.caption(refusal("admin", "making an export (existing ones can be downloaded)"))
    if st.session_state.get(job_key) is not None:
        def finished(_jobs):  # once: forget the job and redraw the list with its download
            st.session_state.pop(job_key, None)
            st.rerun(scope="app")

        watch_jobs([st.session_state[job_key]], on_done=finished)
    with session_scope() as session:
        exports = [(job.id, job.status, job.created_at, dict(job.params or {}), dict(job.result or {}), job.error)
                   for job in list_exports(session=session, dataset_id=dataset_id)]
    if exports:
        st.markdown("**Recent exports**")
    storage = get_storage()
    for export_id, status, created, params, result, error in exports:
        columns = st.columns([3, 1])
        origin = f"version {params['version_number']}" if params.get("version_number") else "current labels"
        label = f"{created:%Y-%m-%d %H:%M} · {params.get('fmt')} · {origin} · {status}"
        if result.get("images") is not None:
            label += f" · {result['images']} images"
        columns[0].write(label)
        if status == "succeeded" and result.get("key"):
            columns[1].download_button("Download", data=lambda key=result["key"]: storage.get(key),
                                       file_name=result.get("filename", "export.zip"), mime="application/zip",
                                       key=f"download-{export_id}")
        elif error:
            columns[1].caption(f":red[{plain(error[:200])}]")
