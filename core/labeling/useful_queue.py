"""The "most useful next" order of a dataset (queue mode `useful`): computed once per dataset, embedding
index and state of the model's predictions, kept per process, and walked by core.labeling.queue like
the seeded random order, so each next image costs one indexed query, not a clustering.

The order covers every image of the dataset (labeled ones too): a save does not change it, the queue
only skips images a person has labeled. It is computed again when the index grows (new vectors),
the dataset gains or loses images, the unreviewed AI labels change (a model predicted again), or the
labels reach the next rescoring step (selection.rescoring_step: every 10 labels, then every 10 % more).
A new step alone does not make a labeler wait: the old order (still right to walk, labeled images are
skipped) is served while the new one is computed in a thread beside it (seconds on a large dataset).
Without AI labels it is TypiClust's typical-and-diverse order over the vectors; with them, each
image's uncertainty is blended in (core.similarity.selection.useful_order). Clusters holding images
a person has labeled (as of the computation) weigh less, so labels keep covering the data; the
clusters grow in number with those labels (selection.queue_cluster_count: few, coarse clusters
while few labels exist), the same rule bench_active_learning.py measures. Images
the index lacks (added since the last embedding run) come last, in the order they were added.

Uncertainty from an AI label: auto-labeling keeps the top class's probability p only; the margin to
the second class is at least 2p − 1, so 1 − max(0, 2p − 1) bounds 1 − margin from above."""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref

import numpy as np
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.labeling.dataset_vectors import ai_predictions, dataset_image_ids, predictions_version, vectors_of
from core.models import ClsDataset
from core.similarity.embeddings import find_index
from core.similarity.selection import rescoring_step, useful_order

_orders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_refreshing: dict[tuple[int, uuid.UUID], threading.Thread] = {}  # (id(engine), dataset) → its rescoring
_lock = threading.Lock()
log = logging.getLogger(__name__)


def _key(session, dataset_id: uuid.UUID) -> tuple[tuple, int]:
    """(what the order's contents depend on, the labels' rescoring step)."""
    try:
        row = find_index(session=session)
        index = (row.id, row.count)
    except NotFound:
        index = (None, 0)
    dataset = session.get(ClsDataset, dataset_id)
    contents = (*index, dataset.image_count if dataset else 0, predictions_version(session, dataset_id))
    return contents, rescoring_step(dataset.labeled_image_count if dataset else 0)


def uncertainty_from_confidence(confidence: float | None) -> float:
    if confidence is None:
        return float("nan")
    return 1.0 - max(0.0, 2.0 * float(confidence) - 1.0)


def compute_order(session, dataset_id: uuid.UUID, *, storage=None, seed: int = 0) -> list[uuid.UUID]:
    """The dataset's image ids in "most useful next" order (no cache; see the module's docstring)."""
    ids = dataset_image_ids(session, dataset_id)
    try:
        _index_id, embedded, vectors = vectors_of(session, ids, storage=storage)
    except NotFound:  # no index yet: the queue is the dataset's order
        return ids
    if not embedded:
        return ids
    predicted = ai_predictions(session, dataset_id)
    uncertainty = None
    if predicted:
        uncertainty = np.array([uncertainty_from_confidence(predicted[i][1]) if i in predicted else np.nan
                                for i in embedded])
    awaiting = set(dataset_image_ids(session, dataset_id, unlabeled_only=True))
    labeled = np.array([i not in awaiting for i in embedded], dtype=bool)
    order = [embedded[p] for p in useful_order(vectors, uncertainty=uncertainty, seed=seed, labeled=labeled)]
    inside = set(embedded)
    return order + [i for i in ids if i not in inside]


def useful_order_ids(session, dataset_id: uuid.UUID, *, storage=None) -> list[uuid.UUID]:
    """The cached order of this dataset in this process (one per database engine), computed again
    when its key changes (see the module's docstring)."""
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    key = _key(session, dataset_id)
    with _lock:
        cached = _orders.setdefault(engine, {}).get(dataset_id)
    if cached is not None and cached[0] == key:
        return cached[1]
    if cached is not None and cached[0][0] == key[0]:  # only the rescoring step moved
        _rescore_beside(engine, dataset_id, key, storage)
        return cached[1]
    started = time.perf_counter()
    order = compute_order(session, dataset_id, storage=storage)
    with _lock:
        _orders[engine][dataset_id] = (key, order, time.perf_counter() - started)
    return order


def _rescore_beside(engine, dataset_id: uuid.UUID, key: tuple, storage) -> None:
    """Compute the order for `key` in a thread with its own session (one at a time per dataset); the
    caller goes on with the old one."""
    def rescore() -> None:
        try:
            started = time.perf_counter()
            with Session(engine) as own:
                order = compute_order(own, dataset_id, storage=storage)
            with _lock:
                _orders.setdefault(engine, {})[dataset_id] = (key, order, time.perf_counter() - started)
        except Exception:  # the old order stays in use; the next look tries again
            log.exception("rescoring the useful-next order of dataset %s failed", dataset_id)
        finally:
            with _lock:
                _refreshing.pop((id(engine), dataset_id), None)

    with _lock:
        if (id(engine), dataset_id) in _refreshing:
            return
        thread = _refreshing[(id(engine), dataset_id)] = threading.Thread(target=rescore, daemon=True,
                                                                          name=f"useful-order-{dataset_id}")
    thread.start()


def settle(timeout: float = 60.0) -> None:
    """Wait for the rescorings under way (tests and benchmarks read the new order after it)."""
    with _lock:
        threads = list(_refreshing.values())
    for thread in threads:
        thread.join(timeout)


def forget(dataset_id: uuid.UUID | None = None) -> None:
    """Drop cached orders (of one dataset, or all): the next look computes them again."""
    with _lock:
        for per_engine in list(_orders.values()):
            for cached in [d for d in per_engine if dataset_id is None or d == dataset_id]:
                del per_engine[cached]
