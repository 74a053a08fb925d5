"""Active learning bench: how many labels a simulated labeler (who answers with the true class) must
give before a classifier on the embeddings reaches 95 % of the accuracy it has with every label,
when images come in "most useful next" order (core.similarity.selection.useful_order: typical and
diverse first, then margin uncertainty blended with diversity, rescored after every batch) versus in
random order.

Real sets (bench/real_sets.py): photos (10 classes) and scans (8 classes) of grayscale crops. The
embeddings come from a model trained here (bench/embeddings_trained_here.py: resnet10t, random
init, trained on CPU) on the *other* set, so the vectors know nothing of these classes' labels.
Pool: the train + val crops; accuracy measured on the test crops (blocks no pool crop overlaps).
Classifier: scikit-learn's logistic regression, refitted after each batch of labels: batches of
`--batch` labels, then of 10 % of the labels so far once that is more (counts are exact to ±10 %).

    python3 -m bench.bench_active_learning [--seeds 3] [--batch 10]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

from core.similarity.selection import (
    UNCERTAINTY_WEIGHT,
    cluster_count,
    kmeans,
    margin_uncertainty,
    typicality,
    useful_order,
)

TARGET = 0.95


def accuracy(vectors, labels, chosen, test_x, test_y, classes: int):
    """Test accuracy of logistic regression on the chosen pool images (and its probabilities on the pool)."""
    present = np.unique(labels[chosen])
    if len(present) < 2:
        return float(np.mean(test_y == present[0])), None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(max_iter=300, C=1.0).fit(vectors[chosen], labels[chosen])
    probs = np.zeros((len(vectors), classes))
    probs[:, model.classes_] = model.predict_proba(vectors)
    return float(np.mean(model.predict(test_x) == test_y)), probs


def labels_needed(strategy: str, vectors, labels, test_x, test_y, classes: int, goal: float, *, batch: int,
                  seed: int, weight: float = UNCERTAINTY_WEIGHT) -> tuple[int, list[tuple[int, float]]]:
    """Labels given when test accuracy first reaches `goal`, and the curve (labels, accuracy)."""
    rng = np.random.default_rng(seed)
    n = len(vectors)
    random_order = rng.permutation(n)
    assignment = typical = None
    if strategy == "useful":
        assignment, _ = kmeans(vectors, cluster_count(n, per_cluster=20), seed=seed)
        typical = typicality(vectors, assignment, seed=seed)
    chosen: list[int] = []
    labeled = np.zeros(n, dtype=bool)
    probs, curve = None, []
    while len(chosen) < n:
        size = max(batch, len(chosen) // 10)  # steps of 10 % past 10 batches: the count is known to ±10 %
        if strategy == "random":
            step = [int(i) for i in random_order[len(chosen):len(chosen) + size]]
        else:
            left = np.flatnonzero(~labeled)
            uncertainty = margin_uncertainty(probs[left]) if probs is not None else None
            order = useful_order(vectors[left], uncertainty=uncertainty, assignment=assignment[left],
                                 typical=typical[left], seed=seed, weight=weight,
                                 labeled_assignment=assignment[labeled])
            step = [int(left[p]) for p in order[:size]]
        chosen += step
        labeled[step] = True
        score, probs = accuracy(vectors, labels, chosen, test_x, test_y, classes)
        curve.append((len(chosen), score))
        if score >= goal:
            return len(chosen), curve
    return n, curve


def run_set(kind: str, trained_on: str, seeds: int, batch: int, weight: float = UNCERTAINTY_WEIGHT) -> dict:
    from bench.embeddings_trained_here import embeddings

    vectors, labels, splits, classes, _ = embeddings(kind, trained_on=trained_on)
    pool, test = splits != "test", splits == "test"
    px, py, tx, ty = vectors[pool], labels[pool], vectors[test], labels[test]
    full, _ = accuracy(px, py, np.arange(len(px)), tx, ty, len(classes))
    goal = TARGET * full
    print(f"\n{kind} ({len(classes)} classes; pool {len(px)}, test {len(tx)}), embedded by a model trained on "
          f"{trained_on}: full-data accuracy {full:.3f}, goal {goal:.3f}")
    result = {}
    for strategy in ("random", "useful"):
        needed = []
        started = time.perf_counter()
        for seed in range(seeds):
            count, _curve = labels_needed(strategy, px, py, tx, ty, len(classes), goal, batch=batch, seed=seed,
                                          weight=weight)
            needed.append(count)
        result[strategy] = needed
        print(f"  {strategy:>7}: labels to reach goal per seed {needed}, mean {np.mean(needed):.0f} "
              f"({np.mean(needed) / len(px):.1%} of the pool; {time.perf_counter() - started:.0f} s)")
    saving = 1 - np.mean(result["useful"]) / np.mean(result["random"])
    print(f"  most useful next needs {saving:.0%} fewer labels than random order")
    return {"set": kind, "full": full, **result, "saving": saving}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--weight", type=float, default=UNCERTAINTY_WEIGHT, help="uncertainty's share once a model exists")
    parser.add_argument("--sets", default="photos:scans,scans:photos", help="set:trained_on pairs")
    args = parser.parse_args()
    results = [run_set(*pair.split(":"), args.seeds, args.batch, args.weight) for pair in args.sets.split(",")]
    print("\nsummary: " + "; ".join(f"{r['set']}: random {np.mean(r['random']):.0f}, useful "
                                     f"{np.mean(r['useful']):.0f} labels ({r['saving']:.0%} fewer)" for r in results))


if __name__ == "__main__":
    main()
