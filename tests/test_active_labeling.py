"""Labeling by the embedding vectors, on SQLite and Postgres: the "most useful next" queue mode (order,
cache, AI uncertainty, reservations between two labelers) and label by cluster (one key press, far
images and the model's disagreements held back, repeats writing nothing)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import select

from core.errors import InvalidInput
from core.labeling import actions, labels, useful_queue
from core.labeling import queue as labeling
from core.labeling.cluster_labels import label_cluster, plan_clusters
from core.models import ClsAuditEvent, ClsDatasetImage, ClsLabel
from core.similarity.selection import QUEUE_BATCH, clusters, queue_cluster_count, rescoring_step, useful_order
from tests.clustered_index import cluster_vectors, clustered_dataset, record_index
from tests.factories import ADMIN, make_image_row, person

LABELER = person("labeler@acme.com")
ME, OTHER = uuid.UUID(int=11), uuid.UUID(int=12)


def groups_of(ids, group_of, wanted):
    where = dict(zip(ids, group_of, strict=True))
    return [where[i] for i in wanted]


def ai_label(session, dataset_id, image_id, class_id, confidence):
    labels.set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[class_id],
                      confidence=confidence, is_ai_generated=True, ai_model="m1", reason="ai")


def test_useful_order_is_typical_and_diverse_first():
    vectors, group_of = cluster_vectors(4, 20, outliers=True)
    order = useful_order(vectors, k=4)
    assert sorted(order) == list(range(len(vectors)))
    first = [group_of[p] for p in order[:4]]
    assert sorted(first) == [0, 1, 2, 3]  # one per cluster, none an outlier
    assert all(group_of[p] != -1 for p in order[:len(vectors) - 8])  # outliers are among the last


def test_useful_order_weighs_down_clusters_people_have_labeled():
    vectors, group_of = cluster_vectors(4, 20, outliers=False)
    first = group_of[useful_order(vectors, k=4)[0]]
    labeled = np.array([g == first for g in group_of]) & (np.arange(len(vectors)) % 4 == 0)
    order = useful_order(vectors, k=4, labeled=labeled)
    assert group_of[order[0]] != first  # five labels in that cluster: an uncovered one comes first
    assert sorted(order) == list(range(len(vectors)))


def test_the_queue_is_rescored_every_batch_then_every_ten_percent():
    steps = [rescoring_step(n) for n in range(0, 400)]
    assert steps[:10] == [0] * 10 and steps[10] == 1 and steps[99] == 9 and steps[100] == 10
    changes = [n for n in range(1, 400) if steps[n] != steps[n - 1]]
    assert changes[:10] == list(range(10, 101, 10))
    assert all(b - a >= 0.09 * a for a, b in zip(changes[9:], changes[10:], strict=False))  # then ~10 % apart


def test_the_queue_clusters_grow_with_the_labels_up_to_a_cap():
    assert queue_cluster_count(3200, 0) == 5  # one cluster per two of the first batch's labels
    assert queue_cluster_count(3200, 90) == 50
    assert queue_cluster_count(3200, 3000) == 320  # clusters of ~10 at most
    assert queue_cluster_count(10**6, 10**5) == 500
    assert queue_cluster_count(3, 0) == 1  # fewer than ~10 images: one cluster


def test_clusters_hold_back_their_far_members():
    vectors, group_of = cluster_vectors(3, 8, outliers=True)
    found = clusters(vectors, k=3, far_percentile=90)
    assert sum(len(c.members) for c in found) == len(vectors)
    outliers = {p for p, g in enumerate(group_of) if g == -1}
    assert outliers <= {int(p) for c in found for p in c.far}
    for cluster in found:
        assert len({group_of[p] for p in cluster.near}) == 1
    with pytest.raises(ValueError):
        clusters(vectors, far_percentile=0)


def test_the_useful_queue_walks_the_cached_order_and_skips_labeled_images(db_stack):
    useful_queue.forget()
    with db_stack.session() as s:
        ds, ids, group_of, classes = clustered_dataset(s, db_stack.storage, groups=4, per_group=20)
        first = labeling.queue_ids(session=s, dataset_id=ds, mode="useful", limit=4)
        assert sorted(groups_of(ids, group_of, first)) == [0, 1, 2, 3]
        labels.set_labels(session=s, actor=LABELER, dataset_id=ds, image_id=first[0], class_ids=[classes[0]])
    with db_stack.session() as s:
        again = labeling.queue_ids(session=s, dataset_id=ds, mode="useful", limit=3)
        assert again == first[1:4]  # the same order, the labeled image left out
        assert labeling.queue_size(session=s, dataset_id=ds, mode="useful") == len(ids) - 1
        cached = useful_queue.useful_order_ids(s, ds)
        assert useful_queue.useful_order_ids(s, ds) is cached  # no recomputation per next image
        others = [i for i in ids if i != first[0]]
        for image_id in others[:QUEUE_BATCH - 2]:
            labels.set_labels(session=s, actor=LABELER, dataset_id=ds, image_id=image_id, class_ids=[classes[0]])
    with db_stack.session() as s:
        assert useful_queue.useful_order_ids(s, ds) is cached  # nine labels: the same step
        labels.set_labels(session=s, actor=LABELER, dataset_id=ds, image_id=others[-1], class_ids=[classes[0]])
    with db_stack.session() as s:
        # ten labels, a rescoring step: the old order serves at once while the new one is computed beside
        assert useful_queue.useful_order_ids(s, ds) is cached
        useful_queue.settle()
        rescored = useful_queue.useful_order_ids(s, ds)
        assert rescored is not cached and sorted(map(str, rescored)) == sorted(map(str, cached))
        assert useful_queue.useful_order_ids(s, ds) is rescored
        cached = rescored
        # a new image embedded: the order is computed again and takes it in
        image = make_image_row(s, db_stack.storage, seed=999)
        s.add(ClsDatasetImage(dataset_id=ds, image_id=image.id))
        from core.models import ClsDataset
        s.get(ClsDataset, ds).image_count += 1
        record_index(s, db_stack.storage, [image.id], cluster_vectors(1, 1, outliers=False, seed=5)[0])
        s.flush()
        assert image.id in useful_queue.useful_order_ids(s, ds)
        assert useful_queue.useful_order_ids(s, ds) is not cached


def test_with_ai_labels_the_models_uncertain_cluster_comes_first(db_stack):
    useful_queue.forget()
    with db_stack.session() as s:
        ds, ids, group_of, classes = clustered_dataset(s, db_stack.storage, groups=4, per_group=20)
        first_before = labeling.queue_ids(session=s, dataset_id=ds, mode="useful", limit=1)
        unsure = next(g for g in range(4) if g != groups_of(ids, group_of, first_before)[0])
        for image_id, group in zip(ids, group_of, strict=True):
            ai_label(s, ds, image_id, classes[0], 0.34 if group == unsure else 0.99)
    with db_stack.session() as s:
        first = labeling.queue_ids(session=s, dataset_id=ds, mode="useful", limit=1)
        assert groups_of(ids, group_of, first) == [unsure]
        # AI-labeled images still await a person: all of them are in the queue
        assert labeling.queue_size(session=s, dataset_id=ds, mode="useful") == len(ids)


def test_two_labelers_get_different_images_from_the_useful_queue(db_stack):
    useful_queue.forget()
    with db_stack.session() as s:
        ds, ids, _groups, _classes = clustered_dataset(s, db_stack.storage, groups=4, per_group=20)
    with db_stack.session() as s:
        mine, my_window = actions.next_image_and_upcoming(session=s, actor=LABELER, dataset_id=ds, mode="useful",
                                                          holder=ME)
    with db_stack.session() as s:
        theirs, their_window = actions.next_image_and_upcoming(session=s, actor=LABELER, dataset_id=ds,
                                                               mode="useful", holder=OTHER)
        assert not {mine, *my_window} & {theirs, *their_window}
        assert labeling.queue_held_by_others(session=s, dataset_id=ds, mode="useful", holder=OTHER) == 4


def test_without_an_index_the_useful_queue_is_the_datasets_order(db_stack):
    useful_queue.forget()
    from tests.test_labeling import seed

    with db_stack.session() as s:
        ds, images, _classes = seed(s, db_stack.storage)
        assert labeling.queue_ids(session=s, dataset_id=ds, mode="useful", limit=3) == images[:3]


def test_one_key_labels_a_cluster_and_holds_back_far_images_and_disagreements(db_stack):
    with db_stack.session() as s:
        ds, ids, group_of, classes = clustered_dataset(s, db_stack.storage, groups=3, per_group=8)
        plan = plan_clusters(session=s, dataset_id=ds, k=3, far_percentile=90)
        assert plan.not_embedded == 0 and len(plan.clusters) == 3
        cluster = plan.clusters[0]
        disagree, agree = cluster.near[0], cluster.near[1]
        ai_label(s, ds, disagree, classes[1], 0.9)
        ai_label(s, ds, agree, classes[0], 0.9)
        plan = plan_clusters(session=s, dataset_id=ds, k=3, far_percentile=90)  # the model's say is read
        cluster = next(c for c in plan.clusters if disagree in c.near)
    with db_stack.session() as s:
        result = label_cluster(session=s, actor=LABELER, dataset_id=ds, cluster=cluster, class_id=classes[0])
    reasons = dict(result.held_back)
    assert reasons[disagree] == "the model predicts another class"
    assert all(reasons[i] == "far from the cluster's centre" for i in cluster.far) and cluster.far
    assert set(result.labeled) == set(cluster.near) - {disagree} and agree in result.labeled
    with db_stack.session() as s:
        written = dict(s.execute(select(ClsLabel.image_id, ClsLabel.class_id).where(
            ClsLabel.dataset_id == ds, ClsLabel.is_ai_generated.is_(False) | ClsLabel.is_reviewed.is_(True))).all())
        assert set(written) == set(result.labeled) and set(written.values()) == {classes[0]}
        assert s.scalar(select(ClsLabel.class_id).where(ClsLabel.image_id == disagree)) == classes[1]  # untouched
        for far in cluster.far:
            assert s.scalar(select(ClsDatasetImage.status).where(ClsDatasetImage.image_id == far)) == "pending"
        assert s.scalar(select(ClsAuditEvent.row_count).where(ClsAuditEvent.action == "label_cluster")) == \
            len(result.labeled)
        # a repeated (late) press writes nothing more
        repeat = label_cluster(session=s, actor=LABELER, dataset_id=ds, cluster=cluster, class_id=classes[0])
        assert repeat.labeled == ()
        # the next plan leaves labeled images out
        assert not set(result.labeled) & {i for c in plan_clusters(session=s, dataset_id=ds, k=2).clusters
                                          for i in (*c.near, *c.far)}


def test_bad_cluster_input_is_refused_and_nothing_is_written(db_stack):
    with db_stack.session() as s:
        ds, _ids, _groups, _classes = clustered_dataset(s, db_stack.storage, groups=2, per_group=5)
        for bad in ({"k": 0}, {"far_percentile": 0}, {"far_percentile": 101}, {"max_distance": 3.0}):
            with pytest.raises(InvalidInput):
                plan_clusters(session=s, dataset_id=ds, **bad)
        cluster = plan_clusters(session=s, dataset_id=ds, k=2).clusters[0]
    with db_stack.session() as s, pytest.raises(Exception, match="class"):
        label_cluster(session=s, actor=LABELER, dataset_id=ds, cluster=cluster, class_id=uuid.uuid4())
    with db_stack.session() as s:
        assert s.scalar(select(ClsLabel.image_id).where(ClsLabel.dataset_id == ds)) is None
        assert np.all([st == "pending" for st in s.scalars(select(ClsDatasetImage.status))])
