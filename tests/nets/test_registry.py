"""One test over every registered model: it builds with small overrides, runs a forward pass of the right shape,
and, when it is continual, its stepped output equals its own clip output (``forward_steps(pad_end=True)`` vs
``forward``). A continual twin is compared with itself, not with its offline net: CoX3D's squeeze-excitation pools
the current frame where X3D's pools the clip (each family's tests compare twins with offline nets where equal).
Skeleton nets take ``(N, C, T, V, M)`` clips, feature nets (OadTR, CoOadTR, ...) ``(N, dim_feature, T)``.
CoAGCN's steps compute its adaptive graph from one frame where its clip
``forward`` uses all frames (spec B7), so its frame-by-frame stream is compared with its clip computed per frame
(``net.per_frame_attention()``). With randomised BatchNorms the AGCN family's logits reach ~1e4 (its adaptive
graph starts as all-ones, so every layer sums all joints), and float32 rounding reaches ~2e-4 of that: its
tolerance is 1e-3 of the output's largest magnitude (a mis-stepped block is off by the magnitude itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from modules import continual as co
from modules import nets
from tests.continual.helpers import assert_steps_match
from tests.nets.helpers import randomize
from tests.nets.transformer.helpers import TRANSFORMER_SMALL

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_CLASSES = 5


@dataclass(frozen=True)
class Small:
    """A cheap configuration of a model: ``overrides`` for ``build`` (besides ``num_classes``) and an input of
    ``frames`` x ``side`` x ``side`` (``frames=None``: an image; skeletons: ``frames`` x joints x persons of the
    registered input, ``side`` unused); ``meta`` runs it on the meta device (shapes only: nets whose random
    initialisation alone takes seconds). ``relative_tolerance``: the tolerance as a fraction of the output's largest
    magnitude (else 1e-4 absolute); ``step_reference(net)``: a context in which the clip output is what single
    steps compute."""

    side: int
    frames: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    meta: bool = False
    relative_tolerance: float | None = None
    step_reference: Callable[[nn.Module], AbstractContextManager[Any]] | None = None


#: Continual skeleton nets with a 2-frame pool: the original twins need 8 frames for one output (pool windows of
#: backbone outputs at stride 4) and emit from step 80; the * twins need 82 frames and emit from step 81.
_SKELETON_POOL = {"pool_size": 2, "pool_padding": 0}


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
    **{name: Small(0, 16) for name in ("st_gcn", "agcn", "s_tr")},
    **{f"{name}_mod": Small(0, 84) for name in ("st_gcn", "agcn", "s_tr")},
    "cost_gcn": Small(0, 12, _SKELETON_POOL),
    "cos_tr": Small(0, 12, _SKELETON_POOL),
    "coagcn": Small(0, 12, _SKELETON_POOL, relative_tolerance=1e-3, step_reference=lambda n: n.per_frame_attention()),
    "cost_gcn_mod": Small(0, 83, _SKELETON_POOL),
    "cos_tr_mod": Small(0, 83, _SKELETON_POOL),
    "coagcn_mod": Small(0, 83, _SKELETON_POOL, relative_tolerance=1e-3),
    # feature nets: small widths, windows of a few steps (tests/nets/transformer/helpers.py)
    **{name: Small(**kwargs) for name, kwargs in TRANSFORMER_SMALL.items()},
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
    frame = (spec.joints, spec.persons) if spec.is_skeleton else (small.side, small.side)
    if spec.is_features:  # (N, dim_feature, T): no spatial dims, the width a build argument
        frame = ()
    channels = small.overrides.get("dim_feature", spec.channels) if spec.is_features else spec.channels
    shape = (2, channels, *(() if small.frames is None else (small.frames,)), *frame)
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
    tolerance = small.relative_tolerance * float(out.abs().max()) if small.relative_tolerance else 1e-4
    torch.testing.assert_close(stepped, out, atol=tolerance, rtol=1e-4)
    # A stream longer than the warm-up, frame by frame: `forward_steps` runs each layer over the whole clip, so
    # only single steps show whether the branches of a block meet at the same frame.
    stream = torch.randn(1, *clip.shape[1:2], net.delay + 2 * net.stride[0], *clip.shape[3:])
    context = small.step_reference(net) if small.step_reference else contextlib.nullcontext()
    with torch.no_grad(), context:
        reference = net(stream)
        tolerance = small.relative_tolerance * float(reference.abs().max()) if small.relative_tolerance else 1e-4
        assert_steps_match(net, stream, reference, atol=tolerance)
