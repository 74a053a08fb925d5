"""Inference speed: ONNX Runtime vs torch eager on the same model and images, for every family at
its smallest size, batch 1 and 32, 1 and 2 threads, on this CPU; plus top-1 agreement between the
two on real images (scikit-learn's sample photos and digits, preprocessed by the model's eval
transform). Models are random-initialised (pretrained=False: no downloads); speed does not depend
on the weights. The load average (`uptime`) is printed beside each figure: others share the CPU.

    python bench/bench_inference.py --families convnext,vit --size 64
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMALLEST = {"convnext": "atto", "vit": "tiny", "efficientnet": "s", "swin": "tiny", "dinov2": "small",
            "clip": "ViT-B-16"}
SIZES = {"dinov2": 56}  # patch 14: a multiple of it


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def real_images(count: int) -> list[bytes]:
    from PIL import Image
    from sklearn.datasets import load_digits, load_sample_images

    out = []
    for photo in load_sample_images().images:
        for left in range(0, 600, 150):  # crops of the two photos
            buffer = io.BytesIO()
            Image.fromarray(photo[:, left:left + 400]).save(buffer, "PNG")
            out.append(buffer.getvalue())
    for pixels in load_digits().data[:count]:
        buffer = io.BytesIO()
        Image.fromarray((pixels.reshape(8, 8) * 16).astype(np.uint8)).convert("RGB").resize((64, 64)).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out[:count]


def images_per_s(run, batch: np.ndarray, seconds: float = 3.0) -> float:
    run(batch)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def bench_family(family: str, size: int, seconds: float) -> list[str]:
    import torch

    from core.ml.export import export_onnx
    from core.ml.families import create_model, get_spec
    from core.ml.inference import Predictor

    spec = get_spec(family, SMALLEST[family])
    size = SIZES.get(family, size)
    torch.manual_seed(0)
    model = create_model(spec, num_classes=10, image_size=size).eval()
    cfg = model.pretrained_cfg
    prep = {"size": size, "mean": list(cfg["mean"]), "std": list(cfg["std"]), "crop_pct": 0.875, "in_chans": 3,
            "interpolation": cfg.get("interpolation", "bicubic") or "bicubic"}
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "model.onnx", image_size=size, in_chans=3)[0]
        export_s = time.perf_counter() - started
        images = real_images(32)
        torch_pred = Predictor(preprocessing=prep, class_names=[str(i) for i in range(10)], multi_label=False,
                               torch_model=model)
        batch32 = torch_pred.preprocess(images)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            onnx_pred = Predictor(preprocessing=prep, class_names=torch_pred.class_names, multi_label=False,
                                  onnx_path=path, threads=threads)
            agree = float((onnx_pred.logits(batch32).argmax(1) == torch_pred.logits(batch32).argmax(1)).mean())
            for batch in (1, 32):
                data = batch32[:batch]
                t = images_per_s(torch_pred.logits, data, seconds)
                o = images_per_s(onnx_pred.logits, data, seconds)
                lines.append(f"{family:12s} {spec.timm_name:28s} {size:4d}px threads={threads} batch={batch:2d}  "
                             f"torch {t:8.1f} img/s  onnxruntime {o:8.1f} img/s  ratio {o / t:5.2f}x  "
                             f"top-1 agreement {agree:.0%} (n={len(batch32)})  load {load()}")
                print(lines[-1], flush=True)
        print(f"{family:12s} export {export_s:.0f} s", flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(SMALLEST))
    parser.add_argument("--size", type=int, default=64, help="input size (dinov2 uses 56)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per figure")
    args = parser.parse_args()
    print(f"start load {load()}", flush=True)
    for family in args.families.split(","):
        try:
            bench_family(family.strip(), args.size, args.seconds)
        except Exception as exc:  # one family failing (export, size) must not hide the others
            print(f"{family:12s} failed: {type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__":
    main()
