"""Every registered model says what input it expects (``register_model(..., input_spec=...)``)."""

import pytest
from torch import nn

from datamodules.images import NORMALISATIONS as IMAGE_NORMALISATIONS
from datamodules.video import NORMALISATIONS as VIDEO_NORMALISATIONS
from modules import nets
from modules.nets import InputSpec, input_spec, registry

# the papers' clips: X3D (Feichtenhofer, CVPR 2020, Table 3 / SlowFast configs), Slow and I3D (SlowFast configs)
PAPER = {
    "x3d_xs": (4, 12, 160),
    "x3d_s": (13, 6, 160),
    "x3d_m": (16, 5, 224),
    "x3d_l": (16, 5, 312),
    "slow_8x8_r50": (8, 8, 256),
    "i3d_8x8_r50": (8, 8, 224),
    "r2plus1d_18": (16, 2, 112),
    "x3d_tiny": (8, 1, 32),  # configs/experiment/x3d_tiny_moving_digits.yaml
    "conv_stack": (8, 1, 16),  # configs/data/synthetic.yaml
}
TWINS = {
    "cox3d_xs": "x3d_xs",
    "cox3d_s": "x3d_s",
    "cox3d_m": "x3d_m",
    "cox3d_l": "x3d_l",
    "cox3d_tiny": "x3d_tiny",
    "coslow_8x8_r50": "slow_8x8_r50",
    "coi3d_8x8_r50": "i3d_8x8_r50",
    "co_conv_stack": "conv_stack",
}
IMAGES = {"resnet18": 224, "resnet50": 224, "resnet18_cifar": 32, "resnet50_cifar": 32, "vgg16": 224, "vit_b16": 224}


@pytest.mark.parametrize("name", nets.list_models())
def test_every_registered_model_has_input_facts(name):
    spec = input_spec(name)
    if spec.is_features:  # pre-extracted feature windows (B, dim_feature, T): no pixels, no normalisation
        assert spec.crop_size == 1 and spec.clip_length >= 1 and spec.normalisation is None
        assert spec.channels == nets.builder_defaults(name)["dim_feature"]
        return
    assert spec.channels == 3 and spec.crop_size >= 8
    if spec.clip_length is None:  # an image model
        assert spec.normalisation in {*IMAGE_NORMALISATIONS, None}
    else:
        assert spec.normalisation in VIDEO_NORMALISATIONS


def test_the_papers_clips_and_the_demo_inputs():
    for name, (frames, stride, crop) in PAPER.items():
        spec = input_spec(name)
        assert (spec.clip_length, spec.sampling_stride, spec.crop_size) == (frames, stride, crop), name
    for name, crop in IMAGES.items():
        assert input_spec(name) == InputSpec(
            crop_size=crop, clip_length=None, normalisation=input_spec(name).normalisation
        )
    assert input_spec("resnet50_cifar").normalisation == "cifar" and input_spec("vgg16").normalisation == "imagenet"


def test_continual_twins_share_their_offline_nets_facts():
    assert set(TWINS) | set(TWINS.values()) <= set(nets.list_models())
    for twin, offline in TWINS.items():
        assert input_spec(twin) == input_spec(offline), twin


def test_a_model_without_facts_and_an_unknown_model_are_named(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the test's model leaves with the test
    registry.register_model("bare_test_model")(lambda *, depth=1: nn.Identity())
    with pytest.raises(KeyError, match="input_spec="):
        input_spec("bare_test_model")
    with pytest.raises(KeyError, match="registered models"):
        input_spec("no_such_model")


def test_input_spec_rejects_a_half_video_spec():
    with pytest.raises(ValueError, match="sampling_stride"):
        InputSpec(crop_size=32, clip_length=8)
    with pytest.raises(ValueError, match="positive"):
        InputSpec(crop_size=0, clip_length=None)
