"""The trainer's parts on a tiny model and in-memory real digits: every scheduler and optimizer,
backbone freezing, mixup + EMA, and a checkpoint round trip that resumes where it stopped."""

from __future__ import annotations

import io

import pytest

from core.ml.config import parse_config
from tests.training_data import digits

BASE = {"model_type": "convnext", "model_size": "atto", "num_classes": 3, "image_size": 32, "pretrained": False,
        "epochs": 2, "batch_size": 4, "warmup_epochs": 1, "augmentation_preset": "none", "mixed_precision": False}


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def loaders():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    data, target = digits(3, 8)
    images = torch.nn.functional.interpolate(torch.tensor(data, dtype=torch.float32).view(-1, 1, 8, 8) / 16, size=32)
    dataset = TensorDataset(images.repeat(1, 3, 1, 1), torch.tensor(target))
    return {"train": DataLoader(dataset, batch_size=4, shuffle=True, drop_last=True),
            "val": DataLoader(dataset, batch_size=8)}


def parts_for(config):
    import torch

    from core.ml import trainer
    from core.ml.families import create_model, get_spec

    torch.manual_seed(0)
    model = create_model(get_spec("convnext", "atto"), num_classes=3, image_size=32)
    loss = torch.nn.CrossEntropyLoss()
    return trainer.build_parts(model, config, loss, updates_per_epoch=6)


@pytest.mark.parametrize(("scheduler", "optimizer"), [("cosine", "adamw"), ("step", "sgd"), ("plateau", "lamb"),
                                                      ("one_cycle", "adamw")])
def test_every_scheduler_and_optimizer_trains_and_records_history(scheduler, optimizer):
    from core.ml import trainer

    config = parse_config({**BASE, "lr_scheduler": scheduler, "optimizer": optimizer})
    parts = parts_for(config)
    state = trainer.fit(parts, loaders(), config, trainer.FitState())
    assert [h["epoch"] for h in state.history] == [1, 2] and state.best_state is not None
    assert state.num_updates == 12 and state.best_source in ("model", "ema")


def test_frozen_backbone_only_trains_the_head_first():
    import torch

    from core.ml import trainer

    config = parse_config({**BASE, "freeze_backbone_epochs": 1, "epochs": 2, "use_ema": False})
    parts = parts_for(config)
    stem = parts.model.stem[0].weight.detach().clone()
    head = parts.model.get_classifier().weight.detach().clone()
    config_one = config.model_copy(update={"epochs": 1})
    trainer.fit(parts, loaders(), config_one, trainer.FitState())
    assert torch.equal(stem, parts.model.stem[0].weight) and not torch.equal(head, parts.model.get_classifier().weight)


def test_mixup_ema_accumulation_and_clipping_run():
    from core.ml import trainer

    config = parse_config({**BASE, "augmentation_preset": "sota", "gradient_accumulation_steps": 2,
                           "grad_clip_norm": 1.0, "ema_decay": 0.9})
    parts = parts_for(config)
    assert parts.mixup is not None and parts.ema is not None
    state = trainer.fit(parts, loaders(), config, trainer.FitState())
    assert state.num_updates == 6  # 6 batches per epoch, an update every 2


def test_checkpoint_round_trip_resumes_after_the_saved_epoch():
    import torch

    from core.ml import trainer

    config = parse_config({**BASE, "epochs": 3})
    parts = parts_for(config)
    saved = {}
    trainer.fit(parts, loaders(), config.model_copy(update={"epochs": 1}), trainer.FitState(),
                on_epoch=lambda s: saved.update(payload=trainer.state_to_save(parts, s)))
    buffer = io.BytesIO()
    torch.save(saved["payload"], buffer)
    payload = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    fresh = parts_for(config)
    state = trainer.restore(fresh, payload)
    assert state.epoch == 1 and len(state.history) == 1
    assert all(torch.equal(a, b) for a, b in zip(fresh.model.state_dict().values(),
                                                 parts.model.state_dict().values(), strict=True))
    state = trainer.fit(fresh, loaders(), config, state)
    assert [h["epoch"] for h in state.history] == [1, 2, 3]


def test_early_stopping_stops_after_patience():
    from core.ml import trainer

    config = parse_config({**BASE, "epochs": 6, "early_stopping_patience": 1, "learning_rate": 1e-9,
                           "early_stopping_metric": "val_accuracy", "use_ema": False})
    state = trainer.fit(parts_for(config), loaders(), config, trainer.FitState())
    assert len(state.history) < 6 and state.bad_epochs == 1


def test_training_on_train_and_val_keeps_the_last_weights_and_validates_nothing():
    """A search's refit (train_on_val): no split is held out, so no epoch is scored; the weights kept
    are the last epoch's (the EMA's once it is past its early weights), and a plateau schedule, which
    steps on a val score, is refused."""
    import torch

    from core.errors import InvalidInput
    from core.ml import data, trainer

    config = parse_config({**BASE, "epochs": 3, "train_on_val": True, "use_ema": False})
    parts = parts_for(config)
    state = trainer.fit(parts, {"train": loaders()["train"]}, config, trainer.FitState())
    assert [h["epoch"] for h in state.history] == [1, 2, 3]
    assert not any(k.startswith("val_") for h in state.history for k in h), state.history
    assert state.best_epoch == 3 and state.best_source == "model" and state.best_score is None
    assert all(torch.equal(state.best_state[k], v) for k, v in parts.model.state_dict().items())
    with pytest.raises(InvalidInput, match="plateau"):
        parse_config({**BASE, "train_on_val": True, "lr_scheduler": "plateau"})

    records = [data.Record(f"i{n}", f"k{n}", "", (n % 3,), split) for n, split in
               enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2)]
    held_out = data.split_records(records)
    folded = data.split_records(records, train_on_val=True)
    assert [len(held_out[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    assert [len(folded[s]) for s in ("train", "val", "test")] == [6, 0, 2]
