"""Cluster labeling bench (simulated): a labeler goes through the k-means clusters of unlabeled images
(core.similarity.selection.clusters, as core.labeling.cluster_labels plans them) and presses, for
each, the key of the class most of the cluster's shown (near) images truly have. The press writes
that class on the near images, except those a model predicts otherwise (held back, as the labeling
page does); far images are held back too. Measured: images labeled per key press and the agreement
of the labels written with the true labels (held-back images are not written, so not counted).

Set: the photos set of bench/real_sets.py (10 classes, real photos, grayscale crops). The images to
label are the val + test crops (blocks the model never saw); the embeddings and the model's
predictions come from the small CNN of bench/embeddings_trained_here.py trained on the train crops
(a registered model trained on the labels so far, as a team would have one).

    python3 -m bench.bench_cluster_labeling [--per-cluster 30] [--far 80]
"""

from __future__ import annotations

import argparse

import numpy as np

from core.similarity.selection import cluster_count, clusters


def simulate(vectors, truth, predicted, *, per_cluster: int, far_percentile: float, use_model: bool, seed: int = 0):
    presses = written = agree = held = 0
    for cluster in clusters(vectors, k=cluster_count(len(vectors), per_cluster=per_cluster),
                            far_percentile=far_percentile, seed=seed):
        near = cluster.near
        if not len(near):
            continue
        chosen = np.bincount(truth[near]).argmax()  # what the labeler sees most of on the grid page
        keep = near[predicted[near] == chosen] if use_model else near
        presses += 1
        written += len(keep)
        agree += int(np.sum(truth[keep] == chosen))
        held += len(cluster.members) - len(keep)
    return presses, written, agree, held


def main() -> None:
    from bench.embeddings_trained_here import embeddings

    parser = argparse.ArgumentParser()
    parser.add_argument("--per-cluster", type=int, default=30)
    parser.add_argument("--far", type=float, default=80.0)
    args = parser.parse_args()
    vectors, labels, splits, classes, predicted = embeddings("photos", trained_on="photos")
    unlabeled = splits != "train"
    vectors, truth, predicted = vectors[unlabeled], labels[unlabeled], predicted[unlabeled]
    print(f"photos: {len(classes)} classes, {len(vectors)} unlabeled images; model accuracy on them "
          f"{np.mean(predicted == truth):.3f}")
    for per_cluster in sorted({args.per_cluster, 15, 30, 60}):
        for far in sorted({args.far, 70.0, 80.0, 90.0, 100.0}):
            for use_model in (False, True):
                presses, written, agree, held = simulate(vectors, truth, predicted, per_cluster=per_cluster,
                                                         far_percentile=far, use_model=use_model)
                print(f"  ~{per_cluster:>2}/cluster, far > p{far:.0f}, model check {'on ' if use_model else 'off'}: "
                      f"{presses:>3} presses, {written:>4} labeled ({written / presses:5.1f} per press), "
                      f"agreement {agree / max(written, 1):.3f}, held back {held}")


if __name__ == "__main__":
    main()
