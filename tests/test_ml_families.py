"""Every family of the plan's table builds through timm and trains one step on CPU.

The smallest size of each family runs a real forward/backward/step at a tiny image size (batch 2,
one thread). Every size, large ones included, is built from its config on the meta device (no
weights allocated): building ViT-L/DINOv2-L/CLIP-L for real takes minutes and GBs on this CPU.
"""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from core.ml.families import FAMILIES, catalogue, check_image_size, create_model, get_spec

SMALLEST = {family: next(iter(sizes)) for family, sizes in FAMILIES.items()}
TINY_SIZE = {"vit": 32, "convnext": 32, "efficientnet": 32, "swin": 64, "dinov2": 28, "clip": 32, "resnet": 32}


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_smallest_size_of_every_family_trains_one_step(family):
    import torch

    spec = get_spec(family, SMALLEST[family])
    size = TINY_SIZE[family]
    model = create_model(spec, num_classes=3, image_size=size, drop_path_rate=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, targets = torch.randn(2, 3, size, size), torch.tensor([0, 2])
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(images), targets)
    loss.backward()
    optimizer.step()
    assert model(images).shape == (2, 3)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_every_size_builds_from_its_config_with_the_tabled_parameter_count():
    import timm
    import torch

    for row in catalogue():
        with torch.device("meta"):
            model = timm.create_model(row["timm_name"], pretrained=False)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert params == pytest.approx(row["params_m"], abs=0.1), row


def test_grayscale_input_builds_with_one_channel():
    import torch

    model = create_model(get_spec("convnext", "atto"), num_classes=2, image_size=32, in_chans=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 2)


def test_unknown_family_and_size_are_named_with_the_choices():
    with pytest.raises(InvalidInput, match="unknown model family 'resnext'.*vit, convnext"):
        get_spec("resnext", "50")
    with pytest.raises(InvalidInput, match="'convnext' has no size 'huge'; sizes: atto, femto"):
        get_spec("convnext", "huge")


def test_image_size_must_suit_the_patch_size():
    with pytest.raises(InvalidInput, match="multiple of 14"):
        check_image_size(get_spec("dinov2", "small"), 200)
    with pytest.raises(InvalidInput, match="multiple of 32"):
        check_image_size(get_spec("swin", "tiny"), 100)
    check_image_size(get_spec("dinov2", "small"), 224)
    check_image_size(get_spec("convnext", "atto"), 97)
