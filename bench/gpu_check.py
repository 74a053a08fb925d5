"""One rank of the GPU check (bench/gpu_check.sh starts it, once per device count).

Trains a model of the platform's table (random weights: no downloads) for a fixed number of steps
through the trainer's own multi-device path, core.ml.trainer with core.ml.ranks: the same DDP
wrapper, SyncBatchNorm on several GPUs, timm optimizer, AMP (bf16 where the GPU has it, else fp16
with a scaler) and channels_last rule as a training run with `devices`=N (a run's ranks are started
by core.ml.spawn; here torchrun starts them). NCCL on GPUs, gloo on the CPU. The global batch is
--batch per device x N (a run's batch_size is global). Rank 0 prints one line: images/s over all
ranks. Synthetic batches on purpose: the check measures the devices and the interconnect, not the disk.

    python bench/gpu_check.py --model convnext:atto --steps 50        # one device
    torchrun --nproc_per_node 4 bench/gpu_check.py --model vit:tiny
    python bench/gpu_check.py --onnx --model convnext:atto            # ONNX Runtime, CUDA provider if present
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's core/

# DDP's note on depthwise-conv grad strides and torch's legacy-ONNX-exporter notice: known, not findings
warnings.filterwarnings("ignore", message="Grad strides do not match")
warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convnext:atto", help="family:size of core/ml/families.py")
    parser.add_argument("--steps", type=int, default=50, help="timed optimizer steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="per device")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--onnx", action="store_true", help="time ONNX Runtime inference instead of training")
    return parser.parse_args()


def join_ranks():
    """torchrun's environment → the trainer's Ranks (one process: no group at all)."""
    import torch
    import torch.distributed as dist

    from core.ml.ranks import Ranks

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world == 1:
        return Ranks()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return Ranks(world, rank, dist.new_group(backend="gloo") if cuda else None)


def train(args) -> None:
    import torch
    import torch.distributed as dist

    from core.ml import trainer
    from core.ml.config import parse_config
    from core.ml.families import create_model, get_spec

    ranks = join_ranks()
    cuda = torch.cuda.is_available()
    family, size = args.model.split(":")
    config = parse_config({"model_type": family, "model_size": size, "num_classes": args.classes,
                           "image_size": args.image_size, "pretrained": False, "epochs": 1, "warmup_epochs": 0,
                           "batch_size": args.batch * ranks.world, "devices": ranks.world, "use_ema": False,
                           "augmentation_preset": "none", "mixed_precision": cuda, "llrd_decay": 1.0})
    torch.manual_seed(ranks.rank)
    model = create_model(get_spec(family, size), num_classes=args.classes, image_size=args.image_size)
    parts = trainer.build_parts(model, config, torch.nn.CrossEntropyLoss(), args.warmup + args.steps, ranks=ranks)
    trainer.set_trainable(parts, True)
    if cuda:
        torch.backends.cudnn.benchmark = True
    batch = (torch.randn(args.batch, 3, args.image_size, args.image_size, device=parts.device),
             torch.randint(0, args.classes, (args.batch,), device=parts.device))

    def run(steps: int) -> tuple[float, int]:
        loss, seen, _ = trainer.train_one_epoch(
            parts.step_model, [batch] * steps, parts.optimizer, parts.loss_fn, device=parts.device, amp=parts.amp,
            schedule=parts.schedule, num_updates=0, scaler=parts.scaler, channels_last=parts.channels_last,
            ranks=ranks)
        if cuda:
            torch.cuda.synchronize()
        return loss, seen

    run(args.warmup)
    started = time.perf_counter()
    loss, seen = run(args.steps)
    seconds = ranks.max(time.perf_counter() - started)
    if ranks.main:
        name = torch.cuda.get_device_name(parts.device) if cuda else "cpu"
        print(f"train model={args.model} devices={ranks.world} device={name} batch/device={args.batch} "
              f"size={args.image_size} amp={parts.amp or 'off'} channels_last={parts.channels_last} "
              f"img/s={seen / seconds:.1f} mean_loss={loss:.3f}", flush=True)
    if ranks.many:
        dist.destroy_process_group()


def onnx(args) -> None:
    import numpy as np
    import onnxruntime
    import torch

    from core.ml.families import create_model, get_spec

    model = create_model(get_spec(*args.model.split(":")), num_classes=args.classes, image_size=args.image_size).eval()
    sample = torch.randn(args.batch, 3, args.image_size, args.image_size)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        torch.onnx.export(model, sample, path, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}}, dynamo=False)
        available = onnxruntime.get_available_providers()
        provider = "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else "CPUExecutionProvider"
        session = onnxruntime.InferenceSession(path, providers=[provider])
        feed = {"images": sample.numpy()}
        reference = model(sample).detach().numpy()
        for _ in range(3):
            outputs = session.run(None, feed)[0]
        rounds = max(1, args.steps)
        started = time.perf_counter()
        for _ in range(rounds):
            session.run(None, feed)
        seconds = time.perf_counter() - started
    print(f"onnx model={args.model} provider={provider} batch={args.batch} size={args.image_size} "
          f"img/s={args.batch * rounds / seconds:.1f} max_abs_diff_vs_torch={np.abs(outputs - reference).max():.2e}",
          flush=True)


if __name__ == "__main__":
    arguments = parse_args()
    onnx(arguments) if arguments.onnx else train(arguments)
