"""Cluster labeling bench (simulated): a labeler goes through the k-means clusters of unlabeled images
(core.similarity.selection.clusters, as core.labeling.cluster_labels plans them) and presses, for
each, the key of the class most of the cluster's shown (near) images truly have. The press writes
that class on the near images, except those a model predicts otherwise (held back, as the labeling
page does); far images are held back too. Measured: images labeled per key press and the agreement
of the labels written with the true labels (held-back images are not written, so not counted).

Sets (10 classes each, real): scikit-learn's handwritten digits (1,797 scans) and the photos set of
bench/real_sets.py (grayscale crops of 10 photos). The images to label are the val + test part
(for photos, blocks the model never saw); the embeddings and the model's predictions come from the
small CNN of bench/embeddings_trained_here.py trained on the train part (a registered model trained
on the labels so far, as a team would have one). The simulated labeler presses the majority class
of the page, or → when the page looks mixed (below a share of one class; 0 %: never skips).

    python3 -m bench.bench_cluster_labeling [--sets digits,photos]
"""

from __future__ import annotations

import argparse

import numpy as np

from core.similarity.selection import cluster_count, clusters


def simulate(found, truth, predicted, *, use_model: bool, skip_below: float):
    """(presses, written, agreeing, held back) over the clusters `found`. A cluster whose shown images
    are less than `skip_below` one class looks mixed: the labeler presses → (a press, nothing written)."""
    presses = written = agree = held = 0
    for cluster in found:
        near = cluster.near
        if not len(near):
            continue
        counts = np.bincount(truth[near])
        chosen = counts.argmax()  # what the labeler sees most of on the grid page
        if counts[chosen] / len(near) < skip_below:
            presses += 1
            continue
        keep = near[predicted[near] == chosen] if use_model else near
        presses += 1
        written += len(keep)
        agree += int(np.sum(truth[keep] == chosen))
        held += len(cluster.members) - len(keep)
    return presses, written, agree, held


def run_set(kind: str, per_clusters, fars, skips) -> None:
    from bench.embeddings_trained_here import embeddings

    vectors, labels, splits, classes, predicted = embeddings(kind, trained_on=kind)
    unlabeled = splits != "train"
    vectors, truth, predicted = vectors[unlabeled], labels[unlabeled], predicted[unlabeled]
    print(f"\n{kind}: {len(classes)} classes, {len(vectors)} unlabeled images; model accuracy on them "
          f"{np.mean(predicted == truth):.3f}")
    for per_cluster in per_clusters:
        for far in fars:
            found = clusters(vectors, k=cluster_count(len(vectors), per_cluster=per_cluster), far_percentile=far)
            for skip_below in skips:
                for use_model in (False, True):
                    presses, written, agree, held = simulate(found, truth, predicted, use_model=use_model,
                                                             skip_below=skip_below)
                    print(f"  ~{per_cluster:>2}/cluster, far > p{far:.0f}, model check {'on ' if use_model else 'off'}, "
                          f"mixed pages skipped below {skip_below:.0%}: {presses:>3} presses, {written:>4} labeled "
                          f"({written / presses:5.1f} per press), agreement {agree / max(written, 1):.3f}, "
                          f"held back {held}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default="digits,photos")
    args = parser.parse_args()
    for kind in args.sets.split(","):
        run_set(kind, (8, 15, 30), (60.0, 80.0, 100.0), (0.0, 0.8))


if __name__ == "__main__":
    main()
