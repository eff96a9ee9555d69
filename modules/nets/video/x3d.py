"""X3D-XS/S/M/L and their continual twins CoX3D-XS/S/M/L.

* **X3D** (Feichtenhofer, "X3D: Expanding Architectures for Efficient Video Recognition", CVPR 2020): a port of
  facebookresearch/SlowFast's ``X3D`` with its module names, so that a SlowFast ``x3d_{xs,s,m,l}.pyth``
  checkpoint (``model_state``) loads 1:1. Stem ``s1.pathway0_stem`` = ``conv_xy`` 1×3×3 stride (1,2,2) →
  depthwise ``conv`` 5×1×1 → ``bn`` → ReLU. Stages ``s2..s5`` of residual blocks ``pathway0_res{i}``: ``branch2`` =
  ``a`` 1×1×1 → ``a_bn`` → ReLU → ``b`` 3×3×3 depthwise (spatial stride 2 in a stage's first block) → ``b_bn`` →
  [``se`` on even block indices] → Swish → ``c`` 1×1×1 → ``c_bn``; shortcut = identity or ``branch1`` 1×1×1 +
  ``branch1_bn``; ReLU after the sum. Head: ``conv_5`` 1×1×1 → ``conv_5_bn`` → ReLU → AvgPool (T, ⌈S/32⌉, ⌈S/32⌉),
  stride 1 → ``lin_5`` 1×1×1 (no bias, no BN) → ReLU → Dropout → ``projection`` → [softmax in eval] → mean over the
  pooled positions. Returns ``(B, num_classes)`` logits (``softmax=False``, the default: the system applies
  softmax/sigmoid; ``softmax=True`` reproduces SlowFast's eval-time softmax).
* **CoX3D** (Hedegaard & Iosifidis, "Continual 3D Convolutional Neural Networks", arXiv 2106.00050): the same
  weights and ``state_dict`` keys, built from ``modules.continual``. Each temporal padding becomes delay
  (``temporal_fill`` "zeros" or "replicate" stands for the frames before the stream), the global pool averages the
  last ``temporal_window`` frames (default: the size's clip length; it may be extended, e.g. to 64, without
  changing the per-frame cost), and the net emits one prediction per frame (temporal stride 1): ``forward_step``
  gives ``(B, num_classes)``, ``forward(clip)`` / ``forward_steps`` give ``(B, num_classes, T_out)``.
  **CoX3D is not X3D**: its SE blocks pool the current frame only (spatial average), where X3D's pool the whole
  clip (LukasHedegaard/co3d ``models/cox3d/modules/x3d.py``), so outputs differ at equal weights; ``forward(clip)``
  equals CoX3D's own stepping (``forward_steps(clip, pad_end=True)``).

Temporal receptive field of CoX3D (each 3×3×3 conv adds 2 frames and pads 1; the stem's 5×1×1 adds 4 and pads 2;
the pool adds ``temporal_window - 1``), checked in ``tests/nets/video/test_x3d.py`` against the Co3D paper's table:

=========  ======  ============  ===============  =======  ====================================
size       blocks  conv RF       receptive_field  padding  delay (= rf - padding - 1, warm-up)
=========  ======  ============  ===============  =======  ====================================
XS (T=4)   26      5 + 2·26 = 57 60               28       31
S (T=13)   26      57            69               28       40
M (T=16)   26      57            72               28       43
L (T=16)   55      5 + 2·55=115  130              57       72
=========  ======  ============  ===============  =======  ====================================

With ``temporal_window=64``: 120 / 28 / 91 (XS, S, M) and 178 / 57 / 120 (L).

The residual block and its continual twin, the stage builder, the layer constructors and SlowFast's initialisation
are the 3D ResNets' too (``blocks``); the SE blocks, the head and the size table are X3D's own. Checkpoint
converters live in ``x3d_weights``.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules import continual as co
from modules.continual.base import check_fill
from modules.profiling import register_pool_like

from ..registry import InputSpec, register_model
from .blocks import ChannelLinear, CoLayers, Layers, bn3d, init_weights, res_stage

__all__ = [
    "X3D",
    "X3D_SIZES",
    "CoX3D",
    "SqueezeExcitation",
    "X3DSize",
    "cox3d_l",
    "cox3d_m",
    "cox3d_s",
    "cox3d_xs",
    "round_width",
    "x3d_l",
    "x3d_m",
    "x3d_s",
    "x3d_xs",
]


def round_width(width: float, multiplier: float, min_width: int = 1, divisor: int = 1) -> int:
    """SlowFast's ``round_width``: ``width * multiplier`` rounded to a multiple of ``divisor`` (at least
    ``min_width``), rounded up once more if rounding lost over 10%."""
    if not multiplier:
        return int(width)
    width *= multiplier
    min_width = min_width or divisor
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


@dataclass(frozen=True)
class X3DSize:
    """One X3D size: its input (SlowFast ``configs/Kinetics/X3D_*.yaml``, X3D paper Table 3) and its expansion.

    ``frames`` is the clip length T, ``crop`` the square crop side S in pixels and ``sampling_stride`` the number of
    video frames between sampled frames at 30 fps. The registry's input facts (``input_spec``) come from here.
    """

    name: str
    frames: int
    crop: int
    sampling_stride: int
    depth_factor: float
    width_factor: float = 2.0
    bottleneck_factor: float = 2.25
    stem_width: int = 12  # SlowFast X3D.DIM_C1, before the width expansion
    head_width: int = 2048  # X3D.DIM_C5, the width of lin_5
    se_ratio: float = 0.0625
    stem_temporal_kernel: int = 5
    block_temporal_kernel: int = 3

    @property
    def depths(self) -> tuple[int, ...]:
        """Blocks per stage s2..s5: the base (1, 2, 5, 3) times ``depth_factor``, rounded up (SlowFast)."""
        return tuple(math.ceil(self.depth_factor * d) for d in (1, 2, 5, 3))

    @property
    def stem_out(self) -> int:
        return round_width(self.stem_width, self.width_factor)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Output widths of s2..s5: the base widths (12 ×2 per stage, multiples of 8) times ``width_factor``."""
        base = [self.stem_width]
        for _ in range(3):
            base.append(round_width(base[-1], 2.0, divisor=8))
        return tuple(round_width(b, self.width_factor) for b in base)

    @property
    def inner_widths(self) -> tuple[int, ...]:
        """Widths of the depthwise 3×3×3 convs: ``int(bottleneck_factor * out)``."""
        return tuple(int(self.bottleneck_factor * w) for w in self.stage_widths)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """``(C, T, S, S)`` of one clip."""
        return (3, self.frames, self.crop, self.crop)


X3D_SIZES: dict[str, X3DSize] = {
    "xs": X3DSize("xs", frames=4, crop=160, sampling_stride=12, depth_factor=2.2),
    "s": X3DSize("s", frames=13, crop=160, sampling_stride=6, depth_factor=2.2),
    "m": X3DSize("m", frames=16, crop=224, sampling_stride=5, depth_factor=2.2),
    "l": X3DSize("l", frames=16, crop=312, sampling_stride=5, depth_factor=5.0),
    # Not in the paper: a small X3D (blocks 1/1/3/2, half width, a 256-wide head) for CPU demos on small inputs
    # such as Moving Digits (8 consecutive frames of 32 x 32).
    "tiny": X3DSize("tiny", frames=8, crop=32, sampling_stride=1, depth_factor=0.5, width_factor=1.0, head_width=256),
}


def _pool_side(crop: int) -> int:
    # Five stride-2 stages (stem, s2..s5) with "same" padding: ceil(S / 32) positions per side remain.
    return math.ceil(crop / 32)


# --- building blocks: offline ---------------------------------------------------------------------------------
class SqueezeExcitation(nn.Module):
    """SlowFast's SE (``operators.SE``): average pool over (T, H, W) → ``fc1`` → ReLU → ``fc2`` → sigmoid → scale.

    ``fc1`` has ``round_width(channels * ratio, min 8, divisor 8)`` outputs (8/8/16/32 in X3D's four stages).
    """

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        reduced = round_width(channels, ratio, min_width=8, divisor=8)
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc1 = nn.Conv3d(channels, reduced, 1, bias=True)
        self.fc1_act = nn.ReLU()
        self.fc2 = nn.Conv3d(reduced, channels, 1, bias=True)
        self.fc2_sig = nn.Sigmoid()

    def _excite(self, pooled: Tensor) -> Tensor:
        return self.fc2_sig(self.fc2(self.fc1_act(self.fc1(pooled))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self._excite(self.avg_pool(x))


class _Output(nn.Module):
    """Head output of the offline net: ``(B, K, T', H', W')`` scores → [softmax in eval] → mean over positions.

    SlowFast averages the (softmaxed) scores of the pooled positions; at the training clip length and crop there
    is one position.
    """

    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.softmax = softmax

    def _act(self, x: Tensor) -> Tensor:
        return x.softmax(dim=1) if self.softmax and not self.training else x

    def forward(self, x: Tensor) -> Tensor:
        return self._act(x).mean(dim=(2, 3, 4))

    def extra_repr(self) -> str:
        return f"softmax={self.softmax}"


# --- building blocks: continual -------------------------------------------------------------------------------
def _hooked(*modules: nn.Module) -> bool:
    """Whether calling ``modules`` would run forward hooks (their own or global ones)."""
    hooks = nn.modules.module
    if hooks._global_forward_hooks or hooks._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


@register_pool_like  # its per-frame spatial mean is a pooling module call in Co3D: ptflops conventions count it
class CoSqueezeExcitation(co.CoModule, SqueezeExcitation):
    """CoX3D's frame-scoped SE: each frame is pooled over its own spatial dims only, so the block is temporally
    local (no state, no delay). Same weights and keys as ``SqueezeExcitation``, but a different function: X3D's SE
    pools the whole clip, which a stream cannot do without waiting for the clip's end."""

    def forward(self, clip: Tensor) -> Tensor:
        return clip * self._excite(clip.mean(dim=(3, 4), keepdim=True))

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor:
        if _hooked(self.fc1, self.fc2):  # e.g. a FLOP counter watching the fc modules: call them as modules
            pooled = step.mean(dim=(2, 3), keepdim=True).unsqueeze(2)  # (B, C, 1, 1, 1): a one-frame clip
            return step * self._excite(pooled).squeeze(2)
        # The same function in fewer dispatched ops: the 1x1x1 convs of a pooled frame are matrix products with
        # their biases (a step is hundreds of small ops, each with a fixed cost of its own).
        w1, b1, w2, b2 = self._fc_matrices()
        hidden = F.linear(step.mean(dim=(2, 3)), w1, b1).relu_()  # (B, reduced)
        scale = F.linear(hidden, w2, b2).sigmoid_()  # (B, C)
        return step * scale[:, :, None, None]

    def _fc_matrices(self) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """``fc1``/``fc2`` weights as ``(C_out, C_in)`` views with their biases; cached without autograd (the views
        see in-place updates; a replaced weight changes the key)."""
        weights = (self.fc1.weight, self.fc2.weight)
        key = None if torch.is_grad_enabled() or torch.compiler.is_compiling() else tuple(w.data_ptr() for w in weights)
        cached = self.__dict__.get("_fc_cache")
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        w1, w2 = (w.view(w.shape[0], w.shape[1]) for w in weights)
        out = (w1, self.fc1.bias, w2, self.fc2.bias)
        if key is not None:
            self.__dict__["_fc_cache"] = (key, out)
        return out

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor:
        return self.forward(clip)


class WindowAvgPool3d(co.AvgPool3d):
    """CoX3D's global pool ``co.AvgPool3d((temporal_window, s, s), stride=1)``, whose temporal size can be changed
    after construction (``co.set_temporal_window``, e.g. to extend a net trained on 13 frames to 64)."""

    @property
    def temporal_window(self) -> int:
        return int(self.kernel_size[0])

    @temporal_window.setter
    def temporal_window(self, frames: int) -> None:
        if frames < 1:
            raise ValueError(f"temporal_window must be a positive number of frames, got {frames}")
        self.kernel_size = (int(frames), *self.kernel_size[1:])
        self.clean_state()  # the window buffer has the old length


class _CoOutput(co.CoModule, _Output):
    """Head output of CoX3D, per frame: ``(B, K, h, w)`` → [softmax in eval] → spatial mean → ``(B, K)``;
    on clips ``(B, K, T, h, w)`` → ``(B, K, T)``."""

    def forward(self, clip: Tensor) -> Tensor:
        return self._act(clip).mean(dim=(3, 4))

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor:
        return self._act(step).mean(dim=(2, 3))

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor:
        return self.forward(clip)


# --- the two layer sets ------------------------------------------------------------------------------------
class _Layers(Layers):
    """The shared constructors (``blocks.Layers``) plus X3D's own: SE, head pool, classifier, output."""

    def se(self, channels: int, ratio: float) -> nn.Module:
        return SqueezeExcitation(channels, ratio)

    def pool(self, frames: int, side: int) -> nn.Module:
        return nn.AvgPool3d((frames, side, side), stride=1)

    def linear(self, c_in: int, c_out: int) -> nn.Module:
        return ChannelLinear(c_in, c_out)

    def output(self, softmax: bool) -> nn.Module:
        return _Output(softmax)


class _CoLayers(CoLayers, _Layers):
    def se(self, channels: int, ratio: float) -> nn.Module:
        return CoSqueezeExcitation(channels, ratio)

    def pool(self, frames: int, side: int) -> nn.Module:
        return WindowAvgPool3d((frames, side, side), stride=1)

    def linear(self, c_in: int, c_out: int) -> nn.Module:
        return co.Linear(c_in, c_out, channel_dim=1)

    def output(self, softmax: bool) -> nn.Module:
        return _CoOutput(softmax)


def _bottleneck(
    layers: _Layers, size: X3DSize, inner: int, dim_out: int, index: int, c_in: int, stride: int
) -> dict[str, nn.Module]:
    """``branch2`` of X3D's block ``index``: 1×1×1 → depthwise 3×3×3 (the spatial stride: SlowFast STRIDE_1X1 =
    False) → [SE on blocks 0, 2, 4, ...] → Swish → 1×1×1."""
    named = {
        "a": layers.conv(c_in, inner, (1, 1, 1)),
        "a_bn": bn3d(inner),
        "a_relu": nn.ReLU(),
        "b": layers.conv(inner, inner, (size.block_temporal_kernel, 3, 3), (1, stride, stride), groups=inner),
        "b_bn": bn3d(inner),
    }
    if size.se_ratio > 0 and (index + 1) % 2:
        named["se"] = layers.se(inner, size.se_ratio)
    return named | {"b_relu": nn.SiLU(), "c": layers.conv(inner, dim_out, (1, 1, 1)), "c_bn": bn3d(dim_out)}


def _build(
    layers: _Layers, size: X3DSize, *, num_classes: int, dropout: float, frames: int, crop: int, softmax: bool
) -> OrderedDict[str, nn.Module]:
    """``s1``..``s5`` and ``head`` of X3D (SlowFast ``video_model_builder.X3D``), from ``layers``."""
    if crop < 32:
        raise ValueError(f"X3D needs crops of at least 32 pixels (5 stride-2 stages), got crop={crop}")
    kt = size.stem_temporal_kernel
    stem_out = size.stem_out
    stem = layers.seq(
        conv_xy=layers.conv(3, stem_out, (1, 3, 3), (1, 2, 2)),
        conv=layers.conv(stem_out, stem_out, (kt, 1, 1), groups=stem_out),  # depthwise in time
        bn=bn3d(stem_out),
        relu=nn.ReLU(),
    )
    stages: OrderedDict[str, nn.Module] = OrderedDict(s1=layers.seq(pathway0_stem=stem))
    dim_in = stem_out
    for index, (depth, dim_out, inner) in enumerate(zip(size.depths, size.stage_widths, size.inner_widths)):
        branch2 = functools.partial(_bottleneck, layers, size, inner, dim_out)
        stages[f"s{index + 2}"] = res_stage(
            layers, depth=depth, dim_in=dim_in, dim_out=dim_out, spatial_stride=2, branch2=branch2
        )
        dim_in = dim_out
    inner = size.inner_widths[-1]
    stages["head"] = layers.seq(
        conv_5=layers.conv(dim_in, inner, (1, 1, 1)),
        conv_5_bn=bn3d(inner),
        conv_5_relu=nn.ReLU(),
        avg_pool=layers.pool(frames, _pool_side(crop)),
        lin_5=layers.conv(inner, size.head_width, (1, 1, 1)),
        lin_5_relu=nn.ReLU(),
        dropout=nn.Dropout(dropout),
        projection=layers.linear(size.head_width, num_classes),
        output=layers.output(softmax),
    )
    return stages


def _check_clip(net: X3D | CoX3D, clip: Tensor, frames: int, frames_arg: str) -> None:
    """A clear error for clips the head pool cannot take (torch's would only say "output size is too small")."""
    name = type(net).__name__
    if clip.dim() != 5 or clip.shape[1] != 3:
        raise ValueError(f"{name} takes clips (B, 3, T, H, W), got shape {tuple(clip.shape)}")
    side = _pool_side(net.crop)
    if clip.shape[2] < frames or min(clip.shape[3:]) <= (side - 1) * 32:
        raise ValueError(
            f"{name}-{net.size.name.upper()} pools {frames} frames of ⌈{net.crop}/32⌉ = {side} positions per side; "
            f"a clip of shape {tuple(clip.shape)} is too small: build it with {frames_arg}=<T> and crop=<S> of your "
            "clips, or feed longer/larger clips"
        )


# --- the nets ------------------------------------------------------------------------------------------------
class X3D(nn.Sequential):
    """X3D (Feichtenhofer, CVPR 2020) with SlowFast's module names; ``(B, 3, T, S, S)`` → ``(B, num_classes)``.

    The head pool is ``(frames, ⌈crop/32⌉, ⌈crop/32⌉)`` with stride 1, as in SlowFast: clips longer or crops larger
    than that give several pooled positions, whose scores are averaged.
    """

    def __init__(
        self,
        size: X3DSize,
        *,
        num_classes: int = 400,
        dropout: float = 0.5,
        frames: int | None = None,
        crop: int | None = None,
        softmax: bool = False,
    ) -> None:
        frames, crop = frames or size.frames, crop or size.crop
        super().__init__(
            _build(_Layers(), size, num_classes=num_classes, dropout=dropout, frames=frames, crop=crop, softmax=softmax)
        )
        self.size, self.frames, self.crop, self.num_classes = size, frames, crop, num_classes
        init_weights(self)

    def forward(self, clip: Tensor) -> Tensor:
        _check_clip(self, clip, self.frames, "frames")
        return super().forward(clip)


class CoX3D(co.Sequential):
    """CoX3D (Hedegaard & Iosifidis, arXiv 2106.00050): X3D's weights and keys, stepping one frame at a time.

    ``forward_step(frame (B, 3, S, S))`` → ``(B, num_classes)`` (or ``None`` for the first ``delay`` steps);
    ``forward(clip)`` → ``(B, num_classes, T - temporal_window + 1)``. The SE blocks pool the current frame only
    (see the module docstring), so this is not X3D's function at equal weights.
    """

    def __init__(
        self,
        size: X3DSize,
        *,
        num_classes: int = 400,
        dropout: float = 0.5,
        temporal_window: int | None = None,
        temporal_fill: str = "zeros",
        crop: int | None = None,
        softmax: bool = False,
    ) -> None:
        window, crop = temporal_window or size.frames, crop or size.crop
        layers = _CoLayers(check_fill(temporal_fill))
        super().__init__(
            _build(layers, size, num_classes=num_classes, dropout=dropout, frames=window, crop=crop, softmax=softmax)
        )
        self.size, self.crop, self.num_classes, self.temporal_fill = size, crop, num_classes, temporal_fill
        init_weights(self)

    def forward(self, clip: Tensor) -> Tensor:
        _check_clip(self, clip, self.head.avg_pool.temporal_window, "temporal_window")
        return super().forward(clip)


# --- registry ------------------------------------------------------------------------------------------------
def _x3d(name: str, **kw: Any) -> X3D:
    return X3D(X3D_SIZES[name], **kw)


def _cox3d(name: str, **kw: Any) -> CoX3D:
    return CoX3D(X3D_SIZES[name], **kw)


def _input(name: str) -> InputSpec:
    """The size's clip (``X3D_SIZES``), Feichtenhofer-normalised; X3D and its continual twin share it."""
    size = X3D_SIZES[name]
    return InputSpec(
        clip_length=size.frames,
        sampling_stride=size.sampling_stride,
        crop_size=size.crop,
        normalisation="feichtenhofer",
    )


_OFFLINE_DOC = """X3D-{n} ({t} × {s}², Feichtenhofer, CVPR 2020). ``frames``/``crop`` set the head pool (default the
    size's clip); ``softmax`` applies SlowFast's eval-time softmax."""
_CO_DOC = """CoX3D-{n} (Hedegaard & Iosifidis, arXiv 2106.00050): X3D-{n}'s weights, one prediction per frame.
    ``temporal_window`` frames are pooled (default {t}); ``crop`` sets the spatial pool (default {s})."""


@register_model("x3d_xs", input_spec=_input("xs"))
def x3d_xs(
    *,
    num_classes: int = 400,
    dropout: float = 0.5,
    frames: int | None = None,
    crop: int | None = None,
    softmax: bool = False,
) -> X3D:
    return _x3d("xs", num_classes=num_classes, dropout=dropout, frames=frames, crop=crop, softmax=softmax)


@register_model("x3d_s", input_spec=_input("s"))
def x3d_s(
    *,
    num_classes: int = 400,
    dropout: float = 0.5,
    frames: int | None = None,
    crop: int | None = None,
    softmax: bool = False,
) -> X3D:
    return _x3d("s", num_classes=num_classes, dropout=dropout, frames=frames, crop=crop, softmax=softmax)


@register_model("x3d_m", input_spec=_input("m"))
def x3d_m(
    *,
    num_classes: int = 400,
    dropout: float = 0.5,
    frames: int | None = None,
    crop: int | None = None,
    softmax: bool = False,
) -> X3D:
    return _x3d("m", num_classes=num_classes, dropout=dropout, frames=frames, crop=crop, softmax=softmax)


@register_model("x3d_l", input_spec=_input("l"))
def x3d_l(
    *,
    num_classes: int = 400,
    dropout: float = 0.5,
    frames: int | None = None,
    crop: int | None = None,
    softmax: bool = False,
) -> X3D:
    return _x3d("l", num_classes=num_classes, dropout=dropout, frames=frames, crop=crop, softmax=softmax)


@register_model("cox3d_xs", input_spec=_input("xs"))
def cox3d_xs(
    *,
    num_classes: int = 400,
    dropout: float = 0.5,
    temporal_window: int | None = None,
    temporal_fill: str = "zeros",
    crop: int | None = None,
    softmax: bool = False,
) -> CoX3D:
    return _cox3d(
        "xs",
        num_classes=num_classes,
        dropout=dropout,
        temporal_window=temporal_window,
        temporal_fill=temporal_fill,
        crop=crop,
        softmax=softmax,
    )


@register_model("cox3d_s", input_spec=_input("s"))
def cox3d_s(
    *,
    num_classes: int = 400,
    dropout: float = 0.5,
    temporal_window: int | None = None,
    temporal_fill: str = "zeros",
    crop: int | None = None,
    softmax: bool = False,
) -> CoX3D:
    return _cox3d(
        "s",
        num_classes=num_classes,
        dropout=dropout,
        temporal_window=temporal_window,
        temporal_fill=temporal_fill,
        crop=crop,
        softmax=softmax,
    )


@register_model("cox3d_m", input_spec=_input("m"))
def cox3d_m(
    *,
    num_classes: int = 400,
    dropout: float = 0.5,
    temporal_window: int | None = None,
    temporal_fill: str = "zeros",
    crop: int | None = None,
    softmax: bool = False,
) -> CoX3D:
    return _cox3d(
        "m",
        num_classes=num_classes,
        dropout=dropout,
        temporal_window=temporal_window,
        temporal_fill=temporal_fill,
        crop=crop,
        softmax=softmax,
    )


@register_model("cox3d_l", input_spec=_input("l"))
def cox3d_l(
    *,
    num_classes: int = 400,
    dropout: float = 0.5,
    temporal_window: int | None = None,
    temporal_fill: str = "zeros",
    crop: int | None = None,
    softmax: bool = False,
) -> CoX3D:
    return _cox3d(
        "l",
        num_classes=num_classes,
        dropout=dropout,
        temporal_window=temporal_window,
        temporal_fill=temporal_fill,
        crop=crop,
        softmax=softmax,
    )


for _fn, _n in ((x3d_xs, "xs"), (x3d_s, "s"), (x3d_m, "m"), (x3d_l, "l")):
    _fn.__doc__ = _OFFLINE_DOC.format(n=_n.upper(), t=X3D_SIZES[_n].frames, s=X3D_SIZES[_n].crop)
for _fn, _n in ((cox3d_xs, "xs"), (cox3d_s, "s"), (cox3d_m, "m"), (cox3d_l, "l")):
    _fn.__doc__ = _CO_DOC.format(n=_n.upper(), t=X3D_SIZES[_n].frames, s=X3D_SIZES[_n].crop)


@register_model("x3d_tiny", input_spec=_input("tiny"))
def x3d_tiny(*, num_classes: int = 10, dropout: float = 0.2, frames: int | None = None, crop: int | None = None) -> X3D:
    """A small X3D (``X3D_SIZES["tiny"]``, 8 × 32²) for CPU demos; not a paper model."""
    return _x3d("tiny", num_classes=num_classes, dropout=dropout, frames=frames, crop=crop)


@register_model("cox3d_tiny", input_spec=_input("tiny"))
def cox3d_tiny(
    *,
    num_classes: int = 10,
    dropout: float = 0.2,
    temporal_window: int | None = None,
    temporal_fill: str = "zeros",
    crop: int | None = None,
) -> CoX3D:
    """CoX3D of ``x3d_tiny``: its weights and keys, one prediction per frame."""
    return _cox3d(
        "tiny", num_classes=num_classes, dropout=dropout, temporal_window=temporal_window,
        temporal_fill=temporal_fill, crop=crop,
    )  # fmt: skip
