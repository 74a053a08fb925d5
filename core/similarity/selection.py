"""Choosing images by their embedding vectors, without database code: k-means clusters, typicality,
the "most useful next" order of the labeling queue, and the clusters labeled with one key.

- **Clusters**: k-means (scikit-learn) on L2-normalised vectors, MiniBatchKMeans past
  MINIBATCH_FROM vectors (full Lloyd iterations cost O(n·k·d) per pass; mini-batches reach a close
  optimum in a fraction of that).
- **Typicality** (TypiClust, Hacohen et al. 2022): the inverse of the mean distance to a point's
  nearest neighbours inside its cluster; dense, typical images teach a classifier more per label
  than outliers when few labels exist.
- **Most useful next**: clusters (as many as the labels so far and the next batch can cover, two
  labels a cluster, down to clusters of ~10 images: `queue_cluster_count`) are visited round-robin
  (largest first), each giving its next most typical image, so the first labels cover every mode of
  the data (diversity) with its most representative images (typicality). With a model's predictions, each image's uncertainty (1 − the
  margin between its two best classes) is blended with its typicality inside each cluster, and the
  clusters the model is least sure of come first: uncertain, yet not outliers, and still spread.
- **Label by cluster**: a cluster's members near its centre take the class the labeler picks with
  one key; those farther than a percentile of the cluster's distances, or past a fixed cosine
  distance, are held back for one-by-one review (so are those a model predicts otherwise, decided
  by the caller, who knows the class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MINIBATCH_FROM = 20_000
"""Vectors from which k-means runs as MiniBatchKMeans."""

FAST_FROM = 5000
"""Vectors from which the queue's clustering runs in its fast form (see `kmeans`)."""

FAST_INIT_SAMPLE = 2048
"""Vectors k-means++ seeds the fast form's centres on."""

NEIGHBOURS = 20
"""Neighbours whose mean distance gives a point's typicality (TypiClust uses 20)."""

TYPICALITY_SAMPLE = 2000
"""Most cluster members a point's neighbours are looked for among: density against a random sample
of a big cluster ranks its points the same way at O(n·sample) instead of O(n²)."""

UNCERTAINTY_WEIGHT = 0.9
"""Share of uncertainty (vs typicality) in the within-cluster rank once a model's scores exist."""

DIVERSITY_WINDOW = 256
"""With a model's scores: the order is cut into windows of this many points by score (most useful
first), and each window is spread round-robin over the clusters (Cluster-Margin, Citovsky et al.
2021): uncertain first, yet never a run of near-identical images. Without scores the whole order is
one window (TypiClust). bench_active_learning.py, 5 seeds (photos / scans, labels to 95 % of full
accuracy vs random 1422 / 118): window 1 → 1874 / 251, 16 → 1521 / 219, 64 → 1415 / 88,
256 → 1309 / 80, 1024 → 1233 / 99."""

LABELS_PER_CLUSTER = 2
"""The queue's clusters grow in number with the labels (TypiClust, Hacohen et al. 2022, re-clusters
into labels-so-far + batch clusters each round; here one cluster per LABELS_PER_CLUSTER of those),
up to clusters of QUEUE_PER_CLUSTER images: few labels, few coarse clusters, so the first batches
spread over the data's modes instead of over 100+ small clusters chosen by size.
bench_active_learning.py, 30 seeds (photos / scans; random order 1508 / 111, fixed clusters of ~20:
880 / 92), up to clusters of ~20: one cluster per label 650 / 73, per 1.5 labels 691 / 72, per 2
labels 736 / 65, per 3 labels scans 96, per 4 scans 106 (a sharp optimum: read it as coarse
clusters help scans, not as a tuned constant)."""

QUEUE_PER_CLUSTER = 10
"""Images per cluster that the queue's growing cluster count stops at (cluster_count's 500 too).
Per 2 labels, 30 seeds, photos: up to clusters of ~20 736, ~10 642, ~5 631 (scans never gets there)."""

QUEUE_BATCH = 10
"""Labels a person gives between two rescorings of the queue (the bench's batch): counted in the
cluster count, as TypiClust counts the batch to be chosen."""

COVERAGE_POWER = 0.5
"""A cluster's weight is divided by (1 + its labeled images) ** this (TypiClust favours uncovered
clusters). 1 spread the labels too thin where the model stayed unsure; 0 kept drawing from the
same clusters. bench_active_learning.py, 10 seeds (photos / scans; random order 1804 / 102):
power 1 → 1277 / 82, 0.5 → 1160 / 81, 0 → 1096 / 94, covered-or-not (min(labels, 1)) → 1216 / 82."""

FAR_PERCENTILE = 80.0
"""Members of a cluster farther from its centre than this percentile of its distances are held back."""


def normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def cluster_count(n: int, *, per_cluster: int = 30, most: int = 500) -> int:
    """A k giving clusters of about `per_cluster` images (a grid page's worth), at most `most`."""
    return int(max(1, min(most, n, round(n / per_cluster))))


def rescoring_step(labeled: int, *, batch: int = QUEUE_BATCH) -> int:
    """Which rescoring of the queue `labeled` labels call for: a new one after each `batch` labels for
    ten batches, then after each 10 % more (the bench's steps). The queue's order is computed again
    when this changes, so its clusters grow with the labels as the bench measures."""
    labeled, first = max(0, int(labeled)), 10 * batch
    if labeled < first:
        return labeled // batch
    return 10 + int(math.log(labeled / first) / math.log(1.1))


def queue_cluster_count(n: int, labeled: int, *, batch: int = QUEUE_BATCH) -> int:
    """Clusters the "most useful next" order uses once `labeled` images have labels and `batch` more
    are to be chosen: (labeled + batch) / LABELS_PER_CLUSTER, at most clusters of QUEUE_PER_CLUSTER."""
    grown = round((max(0, int(labeled)) + max(1, int(batch))) / LABELS_PER_CLUSTER)
    return int(max(1, min(grown, cluster_count(n, per_cluster=QUEUE_PER_CLUSTER))))


def kmeans(vectors: np.ndarray, k: int, *, seed: int = 0, fast: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(cluster of each vector, unit centres) of k-means on the normalised vectors. `fast` (past
    FAST_FROM vectors): mini-batches seeded by k-means++ on a sample of FAST_INIT_SAMPLE, one run;
    full k-means++ seeding is O(n·k) and was 90 % of the time at k = 250 (the queue's order needs
    many small clusters, not the best ones)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    points = normalised(vectors)
    k = max(1, min(int(k), len(points)))
    if fast and len(points) >= FAST_FROM:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=1,
                                init_size=max(3 * k, FAST_INIT_SAMPLE))
    elif len(points) >= MINIBATCH_FROM:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=3)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=1)
    assignment = model.fit_predict(points)
    return assignment.astype(np.int64), normalised(model.cluster_centers_)


def typicality(vectors: np.ndarray, assignment: np.ndarray, *, neighbours: int = NEIGHBOURS,
               seed: int = 0) -> np.ndarray:
    """Each point's typicality in its cluster: 1 / mean Euclidean distance to its nearest members."""
    points = normalised(vectors)
    rng = np.random.default_rng(seed)
    out = np.zeros(len(points), dtype=np.float64)
    for cluster in np.unique(assignment):
        members = np.flatnonzero(assignment == cluster)
        reference = members if len(members) <= TYPICALITY_SAMPLE else rng.choice(members, TYPICALITY_SAMPLE,
                                                                                 replace=False)
        if len(reference) < 2:
            out[members] = 1.0
            continue
        near = min(neighbours, len(reference) - 1)
        for start in range(0, len(members), 4096):
            chunk = members[start:start + 4096]
            # unit vectors: squared distance = 2 − 2·cosine; the point itself (distance 0) is dropped
            distance = np.sqrt(np.maximum(2.0 - 2.0 * points[chunk] @ points[reference].T, 0.0))
            nearest = np.sort(distance, axis=1)[:, 1:near + 1]
            out[chunk] = 1.0 / (nearest.mean(axis=1) + 1e-6)
    return out


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 − (best − second best class probability): 1 for a coin toss, 0 for a sure prediction."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape[1] < 2:
        return np.zeros(len(probabilities))
    top = np.sort(probabilities, axis=1)[:, -2:]
    return 1.0 - (top[:, 1] - top[:, 0])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to 0..1 (ties broken by position): blends scores on different scales."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values)) / max(1, len(values) - 1)
    return ranks


def useful_order(vectors: np.ndarray, *, uncertainty: np.ndarray | None = None, k: int | None = None,
                 weight: float = UNCERTAINTY_WEIGHT, seed: int = 0, assignment: np.ndarray | None = None,
                 typical: np.ndarray | None = None, labeled_assignment: np.ndarray | None = None,
                 labeled: np.ndarray | None = None) -> np.ndarray:
    """Positions of `vectors` in "most useful next" order (see the module's docstring). `uncertainty`:
    one value per vector in 0..1 (NaN where the model said nothing: read as the median).
    `assignment` and `typical` (clusters and typicality computed before, as a rescoring loop keeps
    them) skip the clustering; `labeled_assignment` (the clusters of images labeled already, same
    numbering) weighs each cluster down by (1 + its labels) ** COVERAGE_POWER, as TypiClust favours
    uncovered clusters: without it a loop that rescores after every batch would draw from the same
    uncertain clusters. `labeled` (one bool per vector: labeled by a person, when the order covers
    them too) gives those clusters from the clustering made here. Without `k` or `assignment`, the
    clusters are queue_cluster_count(n, labels so far): few while few labels exist."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if assignment is None:
        if k is None:
            if labeled is not None:
                done = int(np.count_nonzero(labeled))
            else:
                done = len(labeled_assignment) if labeled_assignment is not None else 0
            k = queue_cluster_count(n, done)
        assignment, _centres = kmeans(vectors, k, seed=seed, fast=True)
    numbers, assignment = np.unique(assignment, return_inverse=True)  # clusters numbered 0..c-1
    assignment = assignment.reshape(-1)
    if typical is None:
        typical = typicality(vectors, assignment, seed=seed)
    score = _ranks(typical)
    cluster_weight = np.bincount(assignment).astype(np.float64)
    if uncertainty is not None:
        uncertainty = np.asarray(uncertainty, dtype=np.float64)
        known = ~np.isnan(uncertainty)
        filled = np.where(known, uncertainty, np.median(uncertainty[known]) if known.any() else 0.5)
        score = (1.0 - weight) * score + weight * _ranks(filled)
        cluster_weight *= np.bincount(assignment, weights=filled) / np.maximum(np.bincount(assignment), 1)
    if labeled is not None:
        labeled_assignment = numbers[assignment[np.asarray(labeled, dtype=bool)]]
    if labeled_assignment is not None and len(labeled_assignment):
        inside = labeled_assignment[np.isin(labeled_assignment, numbers)]
        covered = np.bincount(np.searchsorted(numbers, inside), minlength=len(numbers))
        cluster_weight /= (1.0 + covered) ** COVERAGE_POWER
    window = n if uncertainty is None else DIVERSITY_WINDOW
    return _round_robin(assignment, score, cluster_weight, window)


def _round_robin(assignment: np.ndarray, score: np.ndarray, cluster_weight: np.ndarray, window: int) -> np.ndarray:
    """Points cut by score into windows of `window` (best first); inside a window, round r takes each
    cluster's r-th best point, clusters by weight (heaviest first)."""
    n = len(score)
    ranked_clusters = np.argsort(-cluster_weight, kind="stable")
    cluster_rank = np.empty(len(cluster_weight), dtype=np.int64)
    cluster_rank[ranked_clusters] = np.arange(len(cluster_weight))
    windows = np.empty(n, dtype=np.int64)
    windows[np.argsort(-score, kind="stable")] = np.arange(n) // max(1, window)
    group = windows * len(cluster_weight) + assignment
    # place inside its (window, cluster) group (0 = best), by descending score
    order = np.lexsort((-score, group))
    grouped = group[order]
    place = np.empty(n, dtype=np.int64)
    place[order] = np.arange(n) - np.searchsorted(grouped, grouped)
    return np.lexsort((cluster_rank[assignment], place, windows)).astype(np.int64)


@dataclass(frozen=True)
class Cluster:
    """Members (positions in the vectors given) nearest the centre first, with their cosine distance;
    `near` are labeled by the cluster's key, `far` are held back."""

    number: int
    members: np.ndarray
    distances: np.ndarray
    near: np.ndarray
    far: np.ndarray


def clusters(vectors: np.ndarray, *, k: int | None = None, far_percentile: float = FAR_PERCENTILE,
             max_distance: float | None = None, seed: int = 0) -> list[Cluster]:
    """The vectors' k-means clusters, biggest first, each split into near and far members."""
    if not 0.0 < far_percentile <= 100.0:
        raise ValueError(f"far percentile must be in (0, 100], got {far_percentile!r}")
    if len(vectors) == 0:
        return []
    points = normalised(vectors)
    assignment, centres = kmeans(points, k or cluster_count(len(points)), seed=seed)
    distance = 1.0 - np.einsum("nd,nd->n", points, centres[assignment])
    found = []
    for number in np.unique(assignment):
        members = np.flatnonzero(assignment == number)
        members = members[np.argsort(distance[members], kind="stable")]
        limit = np.percentile(distance[members], far_percentile) if far_percentile < 100 else np.inf
        if max_distance is not None:
            limit = min(limit, max_distance)
        keep = distance[members] <= limit
        found.append(Cluster(number=int(number), members=members, distances=distance[members],
                             near=members[keep], far=members[~keep]))
    found.sort(key=lambda c: (-len(c.members), c.number))
    return [Cluster(number=i, members=c.members, distances=c.distances, near=c.near, far=c.far)
            for i, c in enumerate(found)]
