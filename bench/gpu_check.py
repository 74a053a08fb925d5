"""One rank of the GPU check (bench/gpu_check.sh starts it, once per device count).

Trains a timm model from random weights (pretrained=False: no downloads) for a fixed number of
steps on synthetic batches, with AMP (bf16 where the GPU supports it, else fp16 with a scaler) and
channels_last on CUDA, under DistributedDataParallel when started by torchrun with several
processes (NCCL on GPUs, gloo on CPU). Rank 0 prints one line: images/s summed over ranks.
Synthetic data on purpose: the check measures the devices and the interconnect, not the disk.

    python bench/gpu_check.py --model convnext_atto --steps 50        # one device
    torchrun --nproc_per_node 4 bench/gpu_check.py --model vit_tiny_patch16_224
    python bench/gpu_check.py --onnx --model convnext_atto            # ONNX Runtime, CUDA provider if present
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

# DDP's note on depthwise-conv grad strides and torch's legacy-ONNX-exporter notice: known, not findings
warnings.filterwarnings("ignore", message="Grad strides do not match")
warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convnext_atto")
    parser.add_argument("--steps", type=int, default=50, help="timed optimizer steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="per device")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--onnx", action="store_true", help="time ONNX Runtime inference instead of training")
    return parser.parse_args()


def train(args) -> None:
    import timm
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    torch.manual_seed(rank)

    model = timm.create_model(args.model, pretrained=False, num_classes=args.classes,
                              **({"img_size": args.image_size} if "vit" in args.model else {}))
    model = model.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, args.classes, (args.batch,), device=device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    rate = torch.tensor([args.batch * args.steps / seconds], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(rate)  # gloo and NCCL both reduce a CPU/GPU tensor of the backend's device
    if rank == 0:
        name = torch.cuda.get_device_name(device) if cuda else "cpu"
        print(f"train model={args.model} devices={world} device={name} batch/device={args.batch} "
              f"size={args.image_size} amp={amp_dtype if cuda else 'off'} img/s={rate.item():.1f} "
              f"last_loss={loss:.3f}", flush=True)
    if world > 1:
        dist.destroy_process_group()


def onnx(args) -> None:
    import numpy as np
    import onnxruntime
    import timm
    import torch

    model = timm.create_model(args.model, pretrained=False, num_classes=args.classes).eval()
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
