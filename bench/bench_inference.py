"""Inference speed: ONNX Runtime vs torch eager on the same model and images, for every family at
its smallest size, batch 1 and 32, 1 and 2 threads, on this CPU; plus top-1 agreement and the max
logit difference between the two on real images (scikit-learn's sample photos and digits,
preprocessed by the model's eval transform). Models are random-initialised (pretrained=False: no
downloads); speed does not depend on the weights.

Both sides run through core.ml.inference.Predictor, i.e. the platform's own settings: the same
deliberate thread count for torch (torch.set_num_threads) and ONNX Runtime (intra-op threads, one
inter-op thread, sequential, ORT_ENABLE_ALL, workers that do not spin). With 2 threads the previous
setting (spinning workers) is measured too, as `ort-spin`, A/B in the same process.

The CPU is shared (2 cores, other jobs): each figure is the best of interleaved short rounds
(torch, onnxruntime, ... in turn, --rounds times), so a burst of other work hurts every variant
alike instead of whichever ran during it; `paired` is the median of the per-round ratios. With one
thread, the calling thread's CPU time gives a figure no other process can disturb (`cpu`). The load
average is printed beside each line.

    python bench/bench_inference.py --seconds 2
    python bench/bench_inference.py --families convnext,vit --size 64
"""

from __future__ import annotations

import argparse
import io
import os
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
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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


def measure(runs: dict, batch: np.ndarray, seconds: float, rounds: int) -> dict[str, dict[str, float]]:
    """Interleaved rounds: every variant runs `seconds / rounds` per round, in turn. Per variant: the
    best round's images/s (wall), the best round's images per CPU-second of the calling thread, and
    the per-round wall figures (for paired ratios)."""
    for run in runs.values():
        run(batch)  # warm-up (first-run allocations, oneDNN kernels for this shape)
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    window = seconds / rounds
    for _ in range(rounds):
        for name, run in runs.items():
            done, start, cpu = 0, time.perf_counter(), time.thread_time()
            while time.perf_counter() - start < window:
                run(batch)
                done += len(batch)
            walls[name].append(done / (time.perf_counter() - start))
            cpus[name].append(done / max(time.thread_time() - cpu, 1e-9))
    return {name: {"wall": max(walls[name]), "cpu": max(cpus[name]), "rounds": walls[name]} for name in runs}


def bench_family(family: str, size: int, seconds: float, rounds: int) -> list[dict]:
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
    names = [str(i) for i in range(10)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "model.onnx", image_size=size, in_chans=3)[0]
        print(f"{family:12s} export {time.perf_counter() - started:.0f} s", flush=True)
        images = real_images(32)
        for threads in (1, 2):
            predictors = {
                "torch": Predictor(preprocessing=prep, class_names=names, multi_label=False, torch_model=model,
                                   threads=threads),
                "onnxruntime": Predictor(preprocessing=prep, class_names=names, multi_label=False, onnx_path=path,
                                         threads=threads)}
            if threads > 1:  # one intra-op thread has no worker pool: spinning changes nothing there
                predictors["ort-spin"] = Predictor(preprocessing=prep, class_names=names, multi_label=False,
                                                   onnx_path=path, threads=threads, spin=True)
            batch32 = predictors["torch"].preprocess(images)
            reference = predictors["torch"].logits(batch32)
            output = predictors["onnxruntime"].logits(batch32)
            agree = float((output.argmax(1) == reference.argmax(1)).mean())
            diff = float(np.abs(output - reference).max())
            for batch in (1, 32):
                runs = {name: predictor.logits for name, predictor in predictors.items()}
                result = measure(runs, batch32[:batch], seconds, rounds)
                t, o = result["torch"], result["onnxruntime"]
                paired = float(np.median(np.array(o["rounds"]) / np.array(t["rounds"])))
                line = (f"{family:12s} {spec.timm_name:26s} {size:3d}px threads={threads} batch={batch:2d}  "
                        f"torch {t['wall']:7.1f}  onnxruntime {o['wall']:7.1f} img/s  ratio {o['wall'] / t['wall']:5.2f}x "
                        f"(paired {paired:4.2f}x)")
                if "ort-spin" in result:
                    line += f"  ort-spin {result['ort-spin']['wall']:7.1f} img/s"
                if threads == 1:
                    line += f"  cpu ratio {o['cpu'] / t['cpu']:4.2f}x"
                line += f"  top-1 agree {agree:.0%} max|dlogit| {diff:.1e} (n={len(batch32)})  load {load()}"
                print(line, flush=True)
                rows.append({"family": family, "threads": threads, "batch": batch, "ratio": o["wall"] / t["wall"],
                             "torch": t["wall"], "onnx": o["wall"], "spin": result.get("ort-spin", {}).get("wall"),
                             "paired": paired, "cpu_ratio": o["cpu"] / t["cpu"] if threads == 1 else None,
                             "agree": agree, "diff": diff})
    return rows


def verdict(rows: list[dict]) -> list[str]:
    """The issue's targets: ONNX ≥ 1.4x torch at batch 1 for ConvNeXt-V2 atto; never slower for any
    family (by the best-of figure); top-1 agreement 100%, logits within 1e-4."""
    out = []
    for row in rows:
        where = f"{row['family']} threads={row['threads']} batch={row['batch']}"
        if row["family"] == "convnext" and row["batch"] == 1:
            out.append(f"target convnext batch 1 >= 1.4x: {where} {row['ratio']:.2f}x "
                       f"{'met' if row['ratio'] >= 1.4 else 'NOT met'}")
        if row["ratio"] < 1:
            why = ("; the paired rounds and the contention-free CPU-time ratio say ONNX Runtime is faster: "
                   "the CPU was busy while torch's best round ran" if row["paired"] >= 1 and
                   (row["cpu_ratio"] or 1) >= 1 else "")
            out.append(f"slower than torch: {where} {row['ratio']:.2f}x (paired {row['paired']:.2f}x){why}")
        if row["agree"] < 1 or row["diff"] > 1e-4:
            out.append(f"outputs differ: {where} top-1 agree {row['agree']:.0%} max|dlogit| {row['diff']:.1e}")
    one = {(r["family"], r["batch"]): r for r in rows if r["threads"] == 1}
    for row in rows:
        single = one.get((row["family"], row["batch"]))
        if row["threads"] == 2 and single is not None and row["torch"] < 0.9 * single["torch"]:
            out.append(f"note: {row['family']} batch={row['batch']}: torch with 2 threads {row['torch']:.1f} img/s < "
                       f"with 1 {single['torch']:.1f}: its OpenMP threads wait for each other at every operator "
                       "when other processes hold a core (ONNX Runtime's calling thread carries on alone)")
        if row["spin"] and row["spin"] < 0.9 * row["onnx"]:
            out.append(f"note: {row['family']} threads=2 batch={row['batch']}: spinning workers {row['spin']:.1f} "
                       f"img/s vs sleeping {row['onnx']:.1f}: spinning fights the other processes for the cores")
    return out


def main() -> None:
    import onnxruntime
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(SMALLEST))
    parser.add_argument("--size", type=int, default=64, help="input size (dinov2 uses 56)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per figure and variant, all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per figure")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs; "
          f"start load {load()}", flush=True)
    rows: list[dict] = []
    for family in args.families.split(","):
        try:
            rows += bench_family(family.strip(), args.size, args.seconds, max(1, args.rounds))
        except Exception as exc:  # one family failing (export, size) must not hide the others
            print(f"{family:12s} failed: {type(exc).__name__}: {exc}", flush=True)
    for line in verdict(rows) or ["all families: ONNX Runtime at least as fast as torch, outputs identical"]:
        print(line, flush=True)
    print(f"end load {load()}", flush=True)


if __name__ == "__main__":
    main()
