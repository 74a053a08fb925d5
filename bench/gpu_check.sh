#!/usr/bin/env bash
# One prepared check for a machine with GPUs: trains convnext, vit and resnet (random weights, AMP,
# the trainer's channels_last rule) for a fixed number of steps on 1 and on all N GPUs through the
# trainer's DDP path (core.ml.trainer + core.ml.ranks, ranks started by torchrun), prints
# img/s and the DDP speed-up, then times ONNX Runtime (its CUDA provider when installed).
#
#   bash bench/gpu_check.sh            # full sizes on the GPUs present
#   bash bench/gpu_check.sh --tiny     # CPU-sized run (2 gloo processes): what CI runs to prove the script works
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--tiny" ]]; then
  sizes=(--steps 3 --warmup 1 --batch 4 --image-size 32)
  models=(convnext:atto)
  devices=2            # two CPU processes on gloo
  export OMP_NUM_THREADS=1  # one thread per process, as torchrun gives each rank: a fair 1-vs-2 comparison
else
  sizes=(--steps 50 --warmup 5 --batch 64 --image-size 224)
  models=(convnext:atto vit:tiny resnet:18)   # resnet: batch norm, SyncBatchNorm under DDP
  devices=$($PYTHON -c "import torch; print(torch.cuda.device_count())")
  if [[ "$devices" -lt 1 ]]; then
    echo "no CUDA device: run with --tiny for the CPU check" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
$PYTHON -c "import torch, timm, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'timm', timm.__version__, 'onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"

rate() { sed -n 's/.*img\/s=\([0-9.]*\).*/\1/p' | tail -1; }

for model in "${models[@]}"; do
  one=$($PYTHON bench/gpu_check.py --model "$model" "${sizes[@]}" | tee /dev/stderr | rate)
  if [[ "$devices" -gt 1 ]]; then
    many=$($PYTHON -m torch.distributed.run --standalone --nproc_per_node "$devices" \
             bench/gpu_check.py --model "$model" "${sizes[@]}" | tee /dev/stderr | rate)
    $PYTHON -c "print(f'ddp model=$model devices=$devices speedup={float($many) / float($one):.2f}x (ideal $devices.00x)')"
  fi
  $PYTHON bench/gpu_check.py --onnx --model "$model" "${sizes[@]}"
done
echo "gpu_check: ok"
