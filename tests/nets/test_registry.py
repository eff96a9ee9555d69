"""One test over every registered model: it builds with small overrides, runs a forward pass of the right shape,
and, when it is continual, its stepped output equals its own clip output (``forward_steps(pad_end=True)`` vs
``forward``). A continual twin is compared with itself, not with its offline net: CoX3D's squeeze-excitation pools
the current frame where X3D's pools the clip (each family's tests compare twins with offline nets where equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from modules import continual as co
from modules import nets
from tests.continual.helpers import assert_steps_match
from tests.nets.helpers import randomize

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_CLASSES = 5


@dataclass(frozen=True)
class Small:
    """A cheap configuration of a model: ``overrides`` for ``build`` (besides ``num_classes``) and an input of
    ``frames`` x ``side`` x ``side`` (``frames=None``: an image); ``meta`` runs it on the meta device (shapes only:
    nets whose random initialisation alone takes seconds)."""

    side: int
    frames: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    meta: bool = False


#: Every registered model, made small: crops down to the nets' minimum (X3D: 32), full widths (the registered
#: architecture), continual clips one or two outputs long.
SMALL: dict[str, Small] = {
    "conv_stack": Small(16, 8),
    "co_conv_stack": Small(16, 9),
    **{f"x3d_{s}": Small(32, 4, {"crop": 32, "frames": 4}) for s in ("xs", "s", "m", "l", "tiny")},
    # the default window (the size's clip) + 1 frame: two outputs
    "cox3d_xs": Small(32, 5, {"crop": 32}),
    "cox3d_s": Small(32, 14, {"crop": 32}),
    "cox3d_m": Small(32, 17, {"crop": 32}),
    "cox3d_l": Small(32, 17, {"crop": 32}),
    "cox3d_tiny": Small(32, 9),
    "slow_8x8_r50": Small(16, 8),
    "i3d_8x8_r50": Small(16, 8),
    "coslow_8x8_r50": Small(16, 9),  # window 8 + 1
    "coi3d_8x8_r50": Small(16, 10),  # window 4 pooled frames = 8 frames, + one output every 2 frames
    "r2plus1d_18": Small(16, 4),
    "resnet18": Small(32),
    "resnet50": Small(32),
    "resnet18_cifar": Small(32),
    "resnet50_cifar": Small(32),
    "resnet_tiny": Small(8),
    "vgg16": Small(32, meta=True),
    "vit_b16": Small(32, overrides={"image_size": 32}, meta=True),
}


def test_every_registered_model_has_a_small_configuration() -> None:
    missing = sorted(set(nets.list_models()) - set(SMALL))
    assert not missing, f"add a Small(...) entry to tests/nets/test_registry.py SMALL for {missing}"
    assert not set(SMALL) - set(nets.list_models()), "SMALL names models that are not registered"


def _build(name: str, small: Small) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    device = torch.device("meta" if small.meta else "cpu")
    with device:
        net = nets.build(name, num_classes=NUM_CLASSES, **small.overrides).eval()
    spec = nets.input_spec(name)
    shape = (2, spec.channels, *(() if small.frames is None else (small.frames,)), small.side, small.side)
    assert (small.frames is None) == (spec.clip_length is None), "an image model takes images, a video model clips"
    return net, torch.randn(shape, device=device)


@pytest.mark.parametrize("name", nets.list_models())
def test_every_model_builds_runs_and_steps_like_its_clip(name: str) -> None:
    small = SMALL[name]
    net, clip = _build(name, small)
    continual = isinstance(net, co.CoModule)
    if continual:
        randomize(net)  # live residual branches: the init's zero BN gammas would hide a mis-stepped one
    with torch.no_grad():
        out = net(clip)
    assert out.shape[:2] == (2, NUM_CLASSES), f"{name}: output of shape {tuple(out.shape)}"
    if small.meta:
        return
    assert torch.isfinite(out).all()
    if not continual:
        return
    assert out.dim() >= 3 and out.shape[2] >= 1, f"{name}: a continual clip output is (B, K, T_out, ...)"
    with torch.no_grad():
        net.clean_state()
        stepped = net.forward_steps(clip, pad_end=True)
    assert stepped is not None and stepped.shape == out.shape
    torch.testing.assert_close(stepped, out, atol=1e-4, rtol=1e-4)
    # A stream longer than the warm-up, frame by frame: `forward_steps` runs each layer over the whole clip, so
    # only single steps show whether the branches of a block meet at the same frame.
    stream = torch.randn(1, *clip.shape[1:2], net.delay + 2 * net.stride[0], *clip.shape[3:])
    with torch.no_grad():
        reference = net(stream)
    assert_steps_match(net, stream, reference, atol=1e-4)
