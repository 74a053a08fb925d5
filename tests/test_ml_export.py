"""ONNX (dynamic batch) and TorchScript exports match torch on real images (≤ 1e-4), and the
Predictor gives the same probabilities from ONNX Runtime and from torch."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.training_data import digit_png, digits

PREP = {"size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic",
        "crop_pct": 0.875, "in_chans": 3}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch

    from core.ml.export import export_onnx, export_torchscript
    from core.ml.families import create_model, get_spec

    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("export")
    model = create_model(get_spec("convnext", "atto"), num_classes=3, image_size=32).eval()
    files = export_onnx(model, folder / "model.onnx", image_size=32, in_chans=3)
    script = export_torchscript(model, folder / "model.ts", image_size=32, in_chans=3)
    pixels, _ = digits(5, 2)
    images = [digit_png(p, 48) for p in pixels]  # real scans, 10 images
    return model, files, script, images


def test_exports_match_torch_on_real_images_with_any_batch_size(exported):
    import torch

    from core.ml.augment import eval_transform
    from core.ml.data import decode_image
    from core.ml.export import check_exports

    model, files, script, images = exported
    assert [f.name for f in files] == ["model.onnx"]  # small models: weights inside the one file
    transform = eval_transform(PREP)
    batch = torch.stack([transform(decode_image(png)) for png in images[:7]])  # exported with batch 2
    check = check_exports(model, batch, onnx_path=files[0], torchscript_path=script)
    assert check["images"] == 7
    assert check["onnx_max_abs_diff"] <= 1e-4 and check["torchscript_max_abs_diff"] <= 1e-4


def test_predictor_onnx_and_torch_agree(exported):
    from PIL import Image

    from core.ml.inference import Predictor

    model, files, _, images = exported
    names = ["a", "b", "c"]
    onnx = Predictor(preprocessing=PREP, class_names=names, multi_label=False, onnx_path=files[0])
    torch_backend = Predictor(preprocessing=PREP, class_names=names, multi_label=False, torch_model=model)
    mixed = images[:2] + [Image.open(io.BytesIO(images[2]))]  # bytes and PIL images
    a, b = onnx.predict(mixed, batch_size=2), torch_backend.predict(mixed)
    assert onnx.backend == "onnxruntime" and torch_backend.backend == "torch"
    assert a.shape == (3, 3) and np.allclose(a.sum(axis=1), 1, atol=1e-5)
    assert np.abs(a - b).max() <= 1e-5


def test_predictor_names_a_bad_image(exported):
    from core.errors import InvalidInput
    from core.ml.inference import Predictor

    model, *_ = exported
    predictor = Predictor(preprocessing=PREP, class_names=["a", "b", "c"], multi_label=False, torch_model=model)
    with pytest.raises(InvalidInput, match="image 2: cannot decode image"):
        predictor.predict([exported[3][0], b"garbage"])
    with pytest.raises(InvalidInput, match="image 1: expected image bytes or a PIL image"):
        predictor.predict([42])


def test_session_settings_and_torch_threads_are_deliberate(exported):
    """The predictor's ONNX Runtime settings (bench/bench_inference.py measures them): all graph
    optimizations, sequential, one inter-op thread, the asked intra-op threads, workers that do not
    spin unless asked; the torch fallback runs with the asked thread count and restores the global."""
    import onnxruntime as ort
    import torch

    from core.ml.inference import Predictor, session_options

    options = session_options(2)
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError):  # spin=True leaves ONNX Runtime's default (spinning) in place
        session_options(2, spin=True).get_session_config_entry("session.intra_op.allow_spinning")

    model, files, _, images = exported
    names = ["a", "b", "c"]
    spinning = Predictor(preprocessing=PREP, class_names=names, multi_label=False, onnx_path=files[0], threads=2,
                         spin=True)
    quiet = Predictor(preprocessing=PREP, class_names=names, multi_label=False, onnx_path=files[0], threads=2)
    assert np.array_equal(spinning.predict(images), quiet.predict(images))  # same graph, same numbers

    seen = []
    hook = model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        before = torch.get_num_threads()
        Predictor(preprocessing=PREP, class_names=names, multi_label=False, torch_model=model,
                  threads=before + 1).predict(images[:1])
        assert seen == [before + 1] and torch.get_num_threads() == before
    finally:
        hook.remove()
