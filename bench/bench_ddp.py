"""One process vs N DDP processes (gloo, on this CPU) on the same real data: test accuracy per seed,
so "within noise" has a measured noise to be within, and the wall time of each run.

Data: scikit-learn's digits (real 8x8 scans), upscaled to --px PNGs in a local store, a fixed 60/20/20
split (tests/test_ml_ddp.py's). Both sides run core.ml.pipeline.run_training with the same config
(global batch --batch, the same LR); the N-process side goes through core.ml.spawn, as a job with
`devices`=N does. Wall times on a shared 2-core machine are not a speed-up figure (bench/gpu_check.sh is).

    python bench/bench_ddp.py --classes 10 --per-class 40 --epochs 5 --seeds 0 1 2 [--devices 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--px", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--port", type=int, default=29616)
    args = parser.parse_args()

    import numpy as np
    import torch

    from core.ml import pipeline, spawn
    from core.ml.config import parse_config
    from core.storage import LocalStorage
    from tests.test_ml_ddp import BASE, digit_records

    torch.set_num_threads(1)  # one thread per process (ranks too): oversubscribed OpenMP threads stall on 2 shared cores
    workdir = Path(tempfile.mkdtemp(prefix="bench-ddp-"))
    os.environ.update(CLS_CACHE_DIR=str(workdir / "cache"), MASTER_PORT=str(args.port))
    storage = LocalStorage(workdir / "store")
    records = digit_records(storage, classes=args.classes, per_class=args.per_class, size=args.px)
    names = [str(i) for i in range(args.classes)]
    print(f"digits: {args.classes} classes, {len(records)} images at {args.px} px "
          f"({sum(r.split == 'train' for r in records)} train), convnextv2_atto from scratch, {args.epochs} epochs, "
          f"global batch {args.batch}", flush=True)
    results: dict[int, list[float]] = {1: [], args.devices: []}
    for seed in args.seeds:
        for devices in (1, args.devices):
            config = parse_config({**BASE, "num_classes": args.classes, "image_size": args.px, "epochs": args.epochs,
                                   "batch_size": args.batch, "devices": devices, "seed": seed})
            folder = workdir / f"run-{seed}-{devices}"
            folder.mkdir()
            run = pipeline.run_training if devices == 1 else spawn.run_training_on_devices
            started = time.perf_counter()
            artifacts = run(config, records, storage=storage, workdir=folder, class_names=names, exports=())
            seconds = time.perf_counter() - started
            results[devices].append(artifacts.report["accuracy"])
            print(f"seed={seed} processes={devices} test_accuracy={artifacts.report['accuracy']:.3f} "
                  f"best_epoch={artifacts.state.best_epoch} wall_s={seconds:.1f} load={load()}", flush=True)
    for devices, accuracies in results.items():
        print(f"processes={devices} test_accuracy mean={np.mean(accuracies):.3f} sd={np.std(accuracies):.3f} "
              f"over seeds {args.seeds}")
    print(f"difference of means (N - 1): {np.mean(results[args.devices]) - np.mean(results[1]):+.3f}")


if __name__ == "__main__":
    main()
