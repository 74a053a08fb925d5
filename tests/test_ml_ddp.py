"""DDP on the CPU (gloo, 2 processes), on real digits: the ranks stay identical and agree on every
metric (which equals one device's on the whole val split), a run trains through core.ml.spawn,
checkpoints in the one-device format and resumes (on two devices or one), and its accuracy is within
noise of one process on the same data.

Ports: MASTER_PORT from 29610-29619 (this branch's range)."""

from __future__ import annotations

import numpy as np
import pytest

from core.ml.config import parse_config
from tests.model_factory import small_torch_settings
from tests.training_data import digit_png, digits

BASE = {"model_type": "convnext", "model_size": "atto", "num_classes": 3, "image_size": 32, "pretrained": False,
        "epochs": 2, "batch_size": 8, "warmup_epochs": 0, "augmentation_preset": "none", "mixed_precision": False,
        "use_ema": False, "learning_rate": 2e-3, "export_formats": []}


@pytest.fixture(autouse=True)
def small_torch(tmp_path, monkeypatch):
    yield from small_torch_settings(tmp_path, monkeypatch)


def tensor_sets():
    import torch
    from torch.utils.data import TensorDataset

    data, target = digits(3, 24)
    images = torch.nn.functional.interpolate(torch.tensor(data, dtype=torch.float32).view(-1, 1, 8, 8) / 16, size=32)
    images, target = images.repeat(1, 3, 1, 1), torch.tensor(target)
    return TensorDataset(images[0::2], target[0::2]), TensorDataset(images[1::2], target[1::2])


def one_rank_fit(rank: int, port: int, folder: str) -> None:
    """One of two gloo ranks: fit with a sharded train sampler and val shard, save what it saw."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from core.ml import ranks as ranks_module
    from core.ml import trainer
    from core.ml.families import create_model, get_spec

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=rank)
    ranks = ranks_module.Ranks(2, rank)
    config = parse_config({**BASE, "devices": 2})
    train, val = tensor_sets()
    loaders = {"train": DataLoader(train, batch_size=4, sampler=ranks_module.train_sampler(train, ranks, 0),
                                   drop_last=True),
               "val": DataLoader(ranks_module.shard(val, ranks), batch_size=8)}
    torch.manual_seed(rank)  # different first weights: DDP must broadcast rank 0's
    model = create_model(get_spec("convnext", "atto"), num_classes=3, image_size=32)
    parts = trainer.build_parts(model, config, torch.nn.CrossEntropyLoss(), len(loaders["train"]), ranks=ranks)
    state = trainer.fit(parts, loaders, config, trainer.FitState())
    torch.save({"history": state.history, "weights": parts.model.state_dict(), "batches": len(loaders["train"])},
               f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_stay_identical_and_agree_on_whole_set_metrics(tmp_path):
    import torch
    import torch.multiprocessing as mp
    from torch.utils.data import DataLoader

    from core.ml import trainer
    from core.ml.families import create_model, get_spec
    from core.ml.metrics import epoch_metrics

    mp.start_processes(one_rank_fit, args=(29611, str(tmp_path)), nprocs=2, start_method="spawn")
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert first["batches"] == 36 // 2 // 4  # each rank: half the train split, batch_size 8 / 2 devices
    assert first["history"] == [{**row, "seconds": first["history"][i]["seconds"],
                                 "train_images_per_s": first["history"][i]["train_images_per_s"]}
                                for i, row in enumerate(second["history"])]  # identical but for timings
    assert all(torch.equal(first["weights"][k], second["weights"][k]) for k in first["weights"])
    assert not any(k.startswith("module.") for k in first["weights"])
    assert [row["epoch"] for row in first["history"]] == [1, 2]
    assert first["history"][0]["train_images_per_s"] > 0

    model = create_model(get_spec("convnext", "atto"), num_classes=3, image_size=32)
    model.load_state_dict(first["weights"])
    _, val = tensor_sets()
    probs, targets, loss = trainer.predict_probs(model, DataLoader(val, batch_size=8), device=torch.device("cpu"),
                                                 amp=None, multi_label=False, loss_fn=torch.nn.CrossEntropyLoss())
    whole = epoch_metrics(probs, targets, multi_label=False)
    last = first["history"][-1]
    assert last["val_accuracy"] == pytest.approx(whole["accuracy"]) and last["val_f1"] == pytest.approx(whole["f1"])
    assert last["val_loss"] == pytest.approx(loss, rel=1e-5)


def digit_records(storage, classes: int, per_class: int | None, size: int = 16):
    """Digits as PNGs in `storage`, split 60/20/20 per class (the same split for every run)."""
    import hashlib

    from core.ml.data import Record

    data, target = digits(classes, per_class)
    records = []
    for index, (pixels, label) in enumerate(zip(data, target, strict=True)):
        png = digit_png(pixels, size)
        key = f"digits/{index}.png"
        storage.put(key, png)
        share = (index * 7919) % 10  # a fixed interleaving: every split holds every class
        split = "train" if share < 6 else "val" if share < 8 else "test"
        records.append(Record(str(index), key, hashlib.sha256(png).hexdigest(), (int(label),), split))
    return records


def test_spawned_run_checkpoints_resumes_and_matches_one_device(tmp_path, monkeypatch):
    """devices=2 through core.ml.spawn (what the job runs): rank 0's callbacks arrive here, the
    checkpoint has no "module." prefix and resumes on 2 devices and on 1; its test accuracy is within
    noise of one process trained on the same data."""
    import torch

    from core.ml import pipeline, spawn
    from core.storage import LocalStorage

    monkeypatch.setenv("MASTER_PORT", "29612")
    storage = LocalStorage(tmp_path / "store")
    records = digit_records(storage, classes=4, per_class=50, size=32)
    config = parse_config({**BASE, "num_classes": 4, "epochs": 4, "batch_size": 16, "devices": 2})
    names = [str(i) for i in range(4)]
    epochs, batches, configs = [], [], []
    (tmp_path / "two").mkdir()
    two = spawn.run_training_on_devices(
        config, records, storage=storage, workdir=tmp_path / "two", class_names=names, exports=(),
        on_epoch=lambda state, payload: epochs.append((state.epoch, payload)),
        on_batch=lambda epoch, done, total: batches.append((epoch, done, total)), on_config=configs.append)
    assert [e for e, _ in epochs] == [1, 2, 3, 4] and configs and configs[0].devices == 2
    train = sum(r.split == "train" for r in records)
    assert batches[-1][0] == 3 and batches[-1][1] == batches[-1][2] == train // 2 // 8  # each rank: 8 of 16
    checkpoint = epochs[1][1]
    assert not any(k.startswith("module.") for k in checkpoint["model"])
    assert (tmp_path / "two" / "best.pt").exists()

    (tmp_path / "one").mkdir()
    one = pipeline.run_training(config.model_copy(update={"devices": 1}), records, storage=storage,
                                workdir=tmp_path / "one", class_names=names, exports=())
    print(f"test accuracy: 1 process {one.report['accuracy']:.3f}, 2 gloo processes {two.report['accuracy']:.3f}")
    assert two.report["accuracy"] > 0.7 and abs(two.report["accuracy"] - one.report["accuracy"]) <= 0.06

    resumed_epochs = []
    (tmp_path / "resumed").mkdir()
    resumed = spawn.run_training_on_devices(
        config.model_copy(update={"epochs": 3}), records, storage=storage, workdir=tmp_path / "resumed",
        class_names=names, exports=(), resume_payload=torch.load(_saved(tmp_path, checkpoint), weights_only=True),
        on_epoch=lambda state, payload: resumed_epochs.append(state.epoch))
    assert resumed_epochs == [3] and [h["epoch"] for h in resumed.state.history] == [1, 2, 3]
    (tmp_path / "on-one").mkdir()
    on_one = pipeline.run_training(config.model_copy(update={"epochs": 3, "devices": 1}), records, storage=storage,
                                   workdir=tmp_path / "on-one", class_names=names, exports=(),
                                   resume_payload=checkpoint)
    assert [h["epoch"] for h in on_one.state.history] == [1, 2, 3]
    assert np.isfinite(on_one.report["accuracy"])


def _saved(tmp_path, payload):
    import torch

    path = tmp_path / "checkpoint.pt"
    torch.save(payload, path)
    return path


class Cancelled(Exception):
    pass


def test_an_error_in_the_job_process_ends_every_rank(tmp_path, monkeypatch):
    """A cancel (or a removed role, a pruned trial) raised by a callback in the job's process ends
    the run at once: the ranks are terminated, none is left waiting in a collective."""
    import multiprocessing

    from core.ml import spawn
    from core.storage import LocalStorage

    monkeypatch.setenv("MASTER_PORT", "29613")
    storage = LocalStorage(tmp_path / "store")
    records = digit_records(storage, classes=3, per_class=20, size=32)
    config = parse_config({**BASE, "epochs": 50, "devices": 2})

    def cancel_in_second_epoch(epoch, done, total):
        if epoch == 1:
            raise Cancelled()

    with pytest.raises(Cancelled):
        spawn.run_training_on_devices(config, records, storage=storage, workdir=tmp_path, class_names=["a", "b", "c"],
                                      exports=(), on_batch=cancel_in_second_epoch)
    assert multiprocessing.active_children() == []


def test_shards_cover_val_once_and_come_back_in_order_and_train_samplers_split_the_epoch():
    from core.ml.ranks import Ranks, shard, train_sampler, unshard

    items = list(range(11))
    pieces = [np.array(list(shard(items, Ranks(3, rank)))) for rank in range(3)]
    assert sorted(np.concatenate(pieces).tolist()) == items and unshard(pieces).tolist() == items
    assert shard(items, Ranks()) is items
    samplers = [train_sampler(items, Ranks(2, rank), seed=0) for rank in range(2)]
    assert len(samplers[0]) == len(samplers[1]) == 6  # equal step counts: 11 padded to 12
    weighted = [list(train_sampler(items, Ranks(2, rank), 0, weights=[1.0] * 11)) for rank in range(2)]
    assert len(weighted[0]) == len(weighted[1]) == 5 and weighted[0] != weighted[1]
