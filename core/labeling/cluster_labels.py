"""Label by cluster: a dataset's images that no person has labeled, grouped by k-means on their
embedding vectors (core.similarity.selection), shown a cluster at a time; one class key labels the
cluster's near members at once. Held back, to be labeled one by one, are the members far from the
cluster's centre (past a percentile of its distances, or a cosine distance) and those a registered
model predicts otherwise (their unreviewed AI label names another class): they stay unlabeled and
are listed with the reason.

Here, not in core.similarity, because it is a labeling workflow: it decides what a key press writes
and writes it through core.labeling.bulk_labels (labeler role, row locks, counts, change history);
the vector maths it needs is core.similarity.selection's, with no database code.

A plan is computed once (clusters do not move under the labeler's feet) and each key press re-reads
which of the cluster's images still await a person, so a repeated or late press writes nothing twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select

from core.errors import InvalidInput
from core.labeling.bulk_labels import check_bulk_label, set_label_batch
from core.labeling.dataset_vectors import ai_predictions, awaiting_person, dataset_image_ids, vectors_of
from core.labeling.labels import mark_reviewed
from core.models import ClsDatasetImage, ClsLabel
from core.permissions import audit, requires
from core.similarity.selection import FAR_PERCENTILE, clusters
from core.users import User

MAX_CLUSTER_IMAGES = 2000
"""Most images one key press labels (a bulk write in one transaction)."""


@dataclass(frozen=True)
class ClusterView:
    """One cluster to label: `near` (nearest the centre first) take the key's class; `far` are held back."""

    number: int
    near: tuple[uuid.UUID, ...]
    far: tuple[uuid.UUID, ...]
    predicted: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # image → AI label's class

    @property
    def size(self) -> int:
        return len(self.near) + len(self.far)


@dataclass(frozen=True)
class ClusterPlan:
    dataset_id: uuid.UUID
    index_id: uuid.UUID | None
    clusters: tuple[ClusterView, ...]
    not_embedded: int  # unlabeled images the index lacks (run the embedding job again)


@dataclass(frozen=True)
class ClusterResult:
    labeled: tuple[uuid.UUID, ...]
    held_back: tuple[tuple[uuid.UUID, str], ...]  # (image, reason)


def plan_clusters(*, session, dataset_id: uuid.UUID, k: int | None = None, far_percentile: float = FAR_PERCENTILE,
                  max_distance: float | None = None, source: str | None = None, storage=None,
                  seed: int = 0) -> ClusterPlan:
    """The clusters of the dataset's images awaiting a person, biggest first."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InvalidInput(f"the number of clusters must be a whole number ≥ 1, got {k!r}")
    if not 0.0 < float(far_percentile) <= 100.0:
        raise InvalidInput(f"the far percentile must be above 0 and at most 100, got {far_percentile!r}")
    if max_distance is not None and not 0.0 <= float(max_distance) <= 2.0:
        raise InvalidInput(f"the far distance is a cosine distance from 0 to 2, got {max_distance!r}")
    ids = dataset_image_ids(session, dataset_id, unlabeled_only=True)
    index_id, embedded, vectors = vectors_of(session, ids, source=source, storage=storage)
    predicted = {image: cls for image, (cls, _conf) in ai_predictions(session, dataset_id, embedded).items()}
    views = []
    for cluster in clusters(vectors, k=k, far_percentile=far_percentile, max_distance=max_distance, seed=seed):
        near = tuple(embedded[p] for p in cluster.near)
        far = tuple(embedded[p] for p in cluster.far)
        views.append(ClusterView(number=cluster.number, near=near, far=far,
                                 predicted={i: predicted[i] for i in (*near, *far) if i in predicted}))
    return ClusterPlan(dataset_id=dataset_id, index_id=index_id, clusters=tuple(views),
                       not_embedded=len(ids) - len(embedded))


def held_back_reasons(cluster: ClusterView, class_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """Which of the cluster's images a press of `class_id` leaves for one-by-one review, and why."""
    reasons = {image: "far from the cluster's centre" for image in cluster.far}
    for image in cluster.near:
        if image in cluster.predicted and cluster.predicted[image] != class_id:
            reasons[image] = "the model predicts another class"
    return reasons


@requires("labeler", "labeling a cluster")
def label_cluster(*, session, actor: User, dataset_id: uuid.UUID, cluster: ClusterView,
                  class_id: uuid.UUID) -> ClusterResult:
    """One key press: `class_id` on the cluster's near images that still await a person and that the
    model does not predict otherwise; the rest is held back (reasons returned), nothing written to it."""
    if cluster.size > MAX_CLUSTER_IMAGES:
        raise InvalidInput(f"a cluster of {cluster.size:,} images is more than one key press labels "
                           f"({MAX_CLUSTER_IMAGES:,}); ask for more clusters")
    check_bulk_label(session=session, dataset_id=dataset_id, class_id=class_id, mode="replace")
    reasons = held_back_reasons(cluster, class_id)
    wanted = [image for image in cluster.near if image not in reasons]
    still = set(session.scalars(select(ClsDatasetImage.image_id).where(
        ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(wanted), awaiting_person()))) \
        if wanted else set()
    labeled = [image for image in wanted if image in still]
    if labeled:
        set_label_batch(session=session, actor=actor, dataset_id=dataset_id, image_ids=labeled, class_id=class_id,
                        mode="replace")
        # where the model had already said exactly this class, nothing changed: the press accepts it
        for image_id in set(session.scalars(select(ClsLabel.image_id).where(
                ClsLabel.dataset_id == dataset_id, ClsLabel.image_id.in_(labeled),
                ClsLabel.is_ai_generated.is_(True), ClsLabel.is_reviewed.is_(False)))):
            mark_reviewed(session=session, actor=actor, dataset_id=dataset_id, image_id=image_id)
        audit(session=session, actor=actor, action="label_cluster", target_type="dataset", target_id=dataset_id,
              row_count=len(labeled), details={"class_id": str(class_id), "held_back": len(reasons)})
    return ClusterResult(labeled=tuple(labeled), held_back=tuple(reasons.items()))
