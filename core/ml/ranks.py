"""One training run's place among its processes under DDP (core.ml.spawn starts them): the
collectives the trainer needs, the data shards and the model wrapper. With one device (`SINGLE`)
every helper is the identity, so the one-device path runs exactly as before.

The rules that keep N processes in step (a rank that decides otherwise than the others waits forever
in DDP's gradient all-reduce):
- every decision taken from a clock (the deadline, the validation cadence, the LR clock) is agreed by
  a collective (`any`, `max`);
- validation is sharded (every world-th image) and the shards' probabilities gathered back in order,
  so every rank computes the metrics one device would (not an average of per-shard metrics), and
  early stopping ends every rank at the same epoch;
- `batch_size` stays the global batch (images per optimizer update), split evenly over the devices,
  so the learning rate, its schedule and the epochs mean the same on 1 or N devices: no LR scaling
  (more devices train the same recipe faster; a larger batch is the user's choice, with its LR);
- BatchNorm becomes SyncBatchNorm on CUDA only (each device's layers see batch/N images; gloo cannot
  run SyncBatchNorm, and CPU DDP is for tests); LayerNorm families (ConvNeXt, ViT) are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Ranks:
    world: int = 1
    rank: int = 0
    group: Any = None  # a gloo group for the small CPU collectives when the main backend is NCCL

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.world > 1

    def _reduce(self, values: list[float], op) -> list[float]:
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, op=op, group=self.group)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one."""
        import torch.distributed as dist

        return flag if not self.many else self._reduce([float(flag)], dist.ReduceOp.MAX)[0] > 0

    def max(self, value: float) -> float:
        import torch.distributed as dist

        return value if not self.many else self._reduce([value], dist.ReduceOp.MAX)[0]

    def sum(self, *values: float) -> list[float]:
        import torch.distributed as dist

        return list(values) if not self.many else self._reduce(list(values), dist.ReduceOp.SUM)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's value, in rank order, on every rank."""
        if not self.many:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value, group=self.group)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank."""
        if not self.many:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]


SINGLE = Ranks()


def shard(dataset, ranks: Ranks):
    """Every world-th item from this rank's index: shards differ in size by one at most, and no item
    is padded in twice (DistributedSampler's padding would count some val images twice)."""
    if not ranks.many:
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, range(ranks.rank, len(dataset), ranks.world))


def unshard(shards: list[np.ndarray]) -> np.ndarray:
    """The gathered outputs of `shard`'s pieces back in the dataset's order."""
    world = len(shards)
    whole = np.empty((sum(len(s) for s in shards), *shards[0].shape[1:]), dtype=shards[0].dtype)
    for rank, piece in enumerate(shards):
        whole[rank::world] = piece
    return whole


def train_sampler(dataset, ranks: Ranks, seed: int, weights: list[float] | None = None):
    """Each rank's share of an epoch: DistributedSampler (reshuffled by set_epoch), or, with a
    weighted sampler, independent weighted draws of len/world images (draws with replacement are
    independent anyway, so N ranks drawing apart equal one drawing N times as many)."""
    from torch.utils.data import DistributedSampler, WeightedRandomSampler

    if weights is not None:
        generator = torch.Generator().manual_seed(seed + ranks.rank)
        return WeightedRandomSampler(weights, len(dataset) // ranks.world, generator=generator)
    return DistributedSampler(dataset, num_replicas=ranks.world, rank=ranks.rank, shuffle=True, seed=seed)


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per rank (cuda:<rank>); the CPU is shared."""
    return torch.device("cuda", ranks.rank) if device.type == "cuda" and ranks.many else device


def uses_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def prepare_model(model: nn.Module, device: torch.device, ranks: Ranks) -> nn.Module:
    """SyncBatchNorm on several GPUs (timm's converter keeps BatchNormAct2d's activation); the
    state_dict keys do not change, so checkpoints load into a plain model."""
    if ranks.many and device.type == "cuda" and uses_batchnorm(model):
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model)
    return model


def wrap(model: nn.Module, device: torch.device, ranks: Ranks) -> nn.Module:
    """The module the train step runs: DDP over `model` (whose parameters it shares) or `model` itself.
    Built again when the trainable parameters change (a frozen backbone thawing): DDP registers only
    the parameters that require grad when it is built."""
    if not ranks.many:
        return model
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # depthwise convs' grads (ConvNeXt) come in other strides than DDP's buckets: a copy, not an error
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrapped(model: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def agreed_clock(clock: Callable[[], float] | None, ranks: Ranks) -> Callable[[], float] | None:
    """A time budget's clock read the same on every rank (the slowest rank's), so every rank steps
    its optimizer with the same learning rate and the replicas stay identical."""
    if clock is None or not ranks.many:
        return clock

    def agreed() -> float:
        return ranks.max(clock())

    return agreed
