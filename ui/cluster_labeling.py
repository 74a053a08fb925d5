"""The Labeling page's "Label by cluster" view: the dataset's images no person has labeled, grouped by
k-means on their embedding vectors (core.labeling.cluster_labels), one cluster at a time as a page of
thumbnails (the dataset grid's tile component); a class's number key labels the cluster's images near
its centre. Far images, and those a model predicts otherwise, are held back: listed below, each a link
to label it alone. Keys are native `st.button(shortcut=…)` (ignored while typing in an input); this
view replaces the one-image panel, so its keys are the only ones listening.

The plan (clusters) is computed on request and kept for the session: clusters do not move under the
labeler. A press carries its cluster; core re-reads which images still await a person, so a late or
repeated press writes nothing twice.
"""

from __future__ import annotations

import uuid

import streamlit as st

from core.db import session_scope
from core.errors import UserError
from core.labeling import actions
from core.labeling import queue as labeling
from core.labeling.cluster_labels import ClusterView, label_cluster, plan_clusters
from core.similarity.selection import FAR_PERCENTILE
from ui.actions import act
from ui.components.thumbnail_grid import Selection, thumbnail_grid, tile
from ui.dataset_grid import tile_chips
from ui.shared import plain, refusal, storage_urls

SHOWN = 48
"""Thumbnails shown of one cluster (the rest are labeled with it all the same)."""


def _key(dataset_id: uuid.UUID) -> str:
    return f"clusters_{dataset_id}"


def _state(dataset_id: uuid.UUID) -> dict:
    return st.session_state.setdefault(_key(dataset_id), {"plan": None, "at": 0, "held": [], "last": None})


def _find(dataset_id: uuid.UUID) -> None:
    state = _state(dataset_id)
    per = st.session_state.get(f"{_key(dataset_id)}_count") or None
    far = float(st.session_state.get(f"{_key(dataset_id)}_far", FAR_PERCENTILE))
    try:
        with session_scope() as session:
            state["plan"] = plan_clusters(session=session, dataset_id=dataset_id, k=int(per) if per else None,
                                          far_percentile=far)
    except UserError as exc:
        state["plan"], state["last"] = None, ("error", str(exc))
        return
    state["at"], state["last"] = 0, None


def _press(dataset_id: uuid.UUID, cluster: ClusterView, class_id: uuid.UUID, name: str) -> None:
    """A class key on the cluster shown when the button was drawn (a late press finds nothing to write)."""
    state = _state(dataset_id)
    result = act(lambda session, actor: label_cluster(session=session, actor=actor, dataset_id=dataset_id,
                                                      cluster=cluster, class_id=class_id))
    if result is None:
        return
    state["held"] += [(image, reason) for image, reason in result.held_back
                      if image not in {held for held, _ in state["held"]}]
    state["last"] = ("success", f"Cluster {cluster.number + 1}: {len(result.labeled):,} images labeled {name}; "
                     f"{len(result.held_back):,} held back for review.")
    if state["at"] == cluster.number:
        state["at"] += 1


def _skip(dataset_id: uuid.UUID, number: int) -> None:
    state = _state(dataset_id)
    if state["at"] == number:
        state["at"] += 1


def _tiles(dataset_id: uuid.UUID, key: str, ids: list[uuid.UUID], classes_by_id: dict) -> None:
    with session_scope() as session:
        cards = labeling.image_cards(session=session, dataset_id=dataset_id, image_ids=ids[:SHOWN])
    urls = storage_urls([card.thumbnail_path or card.storage_path for card in cards])
    thumbnail_grid(key=key, selection=Selection(), per_row=8, tiles=[
        tile(card.image_id, url, card.filename, chips=tile_chips(card.labels, classes_by_id, None, card.status)
             [:len(card.labels)]) for card, url in zip(cards, urls, strict=True)])


def _key_bar(dataset_id: uuid.UUID, cluster: ClusterView, classes: list, refused: str | None) -> None:
    keyed = [c for c in classes if c.key]
    if not keyed:
        st.caption("This dataset has no classes yet: an admin adds them on the dataset's Settings tab.")
        return
    with st.container(horizontal=True, gap="small"):
        for c in keyed:
            st.button(f"{c.key} · {plain(c.name)}", key=f"cluster_key_{c.key}", shortcut=c.key,
                      disabled=refused is not None, help=refused or f"Label this cluster {plain(c.name)}",
                      on_click=_press, args=(dataset_id, cluster, c.class_id, c.name))
        st.button("Next cluster →", key="cluster_skip", on_click=_skip, args=(dataset_id, cluster.number),
                  shortcut="right")


def _held_back(dataset_id: uuid.UUID, held: list) -> None:
    if not held:
        return
    with st.expander(f"Held back for one-by-one review ({len(held):,})", expanded=False):
        with session_scope() as session:
            cards = {c.image_id: c for c in labeling.image_cards(session=session, dataset_id=dataset_id,
                                                                  image_ids=[i for i, _ in held])}
        for image_id, reason in held:
            card = cards.get(image_id)
            if card is not None and all(lbl.is_ai_generated and not lbl.is_reviewed for lbl in card.labels):
                st.markdown(f"[{plain(card.filename)}](labeling?dataset={dataset_id}&image={image_id}&mode=all)"
                            f" · {reason}")


def cluster_view(dataset_id: uuid.UUID, user_id: uuid.UUID) -> None:
    state = _state(dataset_id)
    cols = st.columns([2, 3, 2], vertical_alignment="bottom")
    cols[0].number_input("Clusters (0: about 30 images each)", min_value=0, max_value=500, value=0, step=1,
                         key=f"{_key(dataset_id)}_count")
    cols[1].slider("Hold back images farther from the centre than this percentile", min_value=50, max_value=100,
                   value=int(FAR_PERCENTILE), key=f"{_key(dataset_id)}_far")
    cols[2].button("Find clusters", key="cluster_find", on_click=_find, args=(dataset_id,), type="primary",
                   width="stretch")
    if state["last"]:
        kind, text = state["last"]
        getattr(st, kind)(text)
    plan = state["plan"]
    if plan is None:
        st.caption("Groups the images no one has labeled yet by their embedding vectors (run the embedding "
                   "job first). One number key labels a whole cluster.")
        return
    if plan.not_embedded:
        st.caption(f"{plan.not_embedded:,} unlabeled images are not in the embedding index yet (run the "
                   "embedding job again to include them).")
    if state["at"] >= len(plan.clusters):
        st.info(f"All {len(plan.clusters):,} clusters done. Find clusters again for what is left.")
        _held_back(dataset_id, state["held"])
        return
    cluster = plan.clusters[state["at"]]
    with session_scope() as session:
        classes = actions.classes_for_labeling(session=session, dataset_id=dataset_id, user_id=user_id)
    by_id = {c.class_id: {"name": c.name, "color": c.color} for c in classes}
    st.markdown(f"**Cluster {cluster.number + 1} of {len(plan.clusters):,}** · {len(cluster.near):,} images "
                f"near its centre take the key's class · {len(cluster.far):,} far ones are held back"
                + (f" · {len(cluster.predicted):,} have a model's prediction" if cluster.predicted else ""))
    _key_bar(dataset_id, cluster, classes, refusal("labeler", "labeling"))
    _tiles(dataset_id, f"cluster_near_{dataset_id}_{cluster.number}", list(cluster.near), by_id)
    if cluster.far:
        st.caption("Far from the centre (held back):")
        _tiles(dataset_id, f"cluster_far_{dataset_id}_{cluster.number}", list(cluster.far), by_id)
    _held_back(dataset_id, state["held"])
