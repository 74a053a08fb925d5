"""bench/gpu_check.sh is the one script a GPU machine runs; its --tiny mode runs the same code on
this CPU (2 gloo processes under torchrun, ONNX Runtime's CPU provider) so CI proves it works."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu_with_two_ddp_processes():
    result = subprocess.run(["bash", "bench/gpu_check.sh", "--tiny"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    single = re.search(r"train model=convnext:atto devices=1 .* img/s=([0-9.]+)", result.stderr)
    assert single and float(single.group(1)) > 0, result.stderr[-2000:]
    assert re.search(r"ddp model=convnext:atto devices=2 speedup=[0-9.]+x", out), out
    assert re.search(r"onnx model=convnext:atto provider=CPUExecutionProvider .* max_abs_diff_vs_torch=", out)
    assert out.rstrip().endswith("gpu_check: ok")
