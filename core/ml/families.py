"""The one table mapping the plan's model families and sizes to timm names, and the factory that
builds them. timm is the model registry; this file only names which of its models we offer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InvalidInput


@dataclass(frozen=True)
class ModelSpec:
    family: str
    size: str
    timm_name: str
    params_m: float  # parameters in millions with a 1000-class head (timm's own count)
    use_case: str
    # Transformers with learned position embeddings take the image size at build time; CNNs do not.
    takes_img_size: bool = False
    patch_size: int = 1  # the image size must be a multiple of this


def _specs(family: str, use_case: str, rows: list[tuple[str, str, float]], **common: Any) -> dict[str, ModelSpec]:
    specs = {}
    for size, name, params in rows:
        patch = re.search(r"_patch(\d+)", name)  # ViTs: the image size must be a multiple of the patch
        extra = {"patch_size": int(patch.group(1))} if patch else {}
        specs[size] = ModelSpec(family, size, name, params, use_case, **{**common, **extra})
    return specs


FAMILIES: dict[str, dict[str, ModelSpec]] = {
    "vit": _specs("vit", "General purpose", [
        ("tiny", "vit_tiny_patch16_224", 5.7),
        ("small", "vit_small_patch16_224", 22.1),
        ("base", "vit_base_patch16_224", 86.6),
        ("large", "vit_large_patch16_224", 304.3),
    ], takes_img_size=True),
    "convnext": _specs("convnext", "Production", [
        ("atto", "convnextv2_atto", 3.7),
        ("femto", "convnextv2_femto", 5.2),
        ("pico", "convnextv2_pico", 9.1),
        ("nano", "convnextv2_nano", 15.6),
        ("tiny", "convnextv2_tiny", 28.6),
        ("base", "convnextv2_base", 88.7),
    ]),
    "efficientnet": _specs("efficientnet", "Mobile/Edge", [
        ("s", "tf_efficientnetv2_s", 21.5),
        ("m", "tf_efficientnetv2_m", 54.1),
        ("l", "tf_efficientnetv2_l", 118.5),
    ]),
    "swin": _specs("swin", "Hierarchical", [
        ("tiny", "swinv2_tiny_window8_256", 28.3),
        ("small", "swinv2_small_window8_256", 49.7),
        ("base", "swinv2_base_window8_256", 87.9),
    ], takes_img_size=True, patch_size=32),
    "dinov2": _specs("dinov2", "Transfer learning", [
        ("small", "vit_small_patch14_dinov2", 22.1),
        ("base", "vit_base_patch14_dinov2", 86.6),
        ("large", "vit_large_patch14_dinov2", 304.4),
    ], takes_img_size=True),
    "clip": _specs("clip", "Zero-shot capable", [
        ("ViT-B-16", "vit_base_patch16_clip_224", 86.6),
        ("ViT-L-14", "vit_large_patch14_clip_224", 304.2),
    ], takes_img_size=True),
    # The baseline every comparison uses: plain batch-norm CNNs that train well from scratch.
    "resnet": _specs("resnet", "Baseline", [
        ("18", "resnet18", 11.7),
        ("34", "resnet34", 21.8),
        ("50", "resnet50", 25.6),
    ]),
}


def get_spec(family: str, size: str) -> ModelSpec:
    """The spec of a family/size, or a message listing what exists."""
    if family not in FAMILIES:
        raise InvalidInput(f"unknown model family {family!r}; one of {', '.join(FAMILIES)}")
    sizes = FAMILIES[family]
    if size not in sizes:
        raise InvalidInput(f"model family {family!r} has no size {size!r}; sizes: {', '.join(sizes)}")
    return sizes[size]


def spec_for_timm_name(timm_name: str) -> ModelSpec | None:
    return next((s for sizes in FAMILIES.values() for s in sizes.values() if s.timm_name == timm_name), None)


def check_image_size(spec: ModelSpec, image_size: int) -> None:
    if image_size % spec.patch_size:
        lower = image_size - image_size % spec.patch_size
        raise InvalidInput(
            f"image_size {image_size} does not suit {spec.family}/{spec.size}: it must be a multiple of "
            f"{spec.patch_size} (e.g. {max(lower, spec.patch_size)} or {lower + spec.patch_size})"
        )


def create_model(spec: ModelSpec, *, num_classes: int, image_size: int, pretrained: bool = False,
                 weights_file: str | Path | None = None, drop_path_rate: float = 0.0, in_chans: int = 3):
    """Build through timm. Pretrained weights come from timm's loader: its hub, or `weights_file`
    (a local .safetensors/.pth in timm's layout for that model); timm drops the mismatched head and
    resamples position embeddings to `image_size`."""
    import timm  # deferred: heavy

    kwargs: dict[str, Any] = {"num_classes": num_classes, "drop_path_rate": drop_path_rate, "in_chans": in_chans}
    if spec.takes_img_size:
        kwargs["img_size"] = image_size
    if weights_file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
        pretrained = True
    return timm.create_model(spec.timm_name, pretrained=pretrained, **kwargs)


def catalogue() -> list[dict[str, Any]]:
    """The table as rows for the wizard and the CLI."""
    return [
        {"family": s.family, "size": s.size, "timm_name": s.timm_name, "params_m": s.params_m, "use_case": s.use_case}
        for sizes in FAMILIES.values() for s in sizes.values()
    ]
