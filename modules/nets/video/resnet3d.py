"""3D ResNet-50 clip models (Slow-8×8, I3D-8×8), their continual twins (CoSlow, CoI3D) and R(2+1)D-18.

* **Slow-8×8-R50**: the Slow pathway of SlowFast (Feichtenhofer, Fan, Malik & He, "SlowFast Networks for Video
  Recognition", ICCV 2019): a ResNet-50 whose temporal kernels are 1 up to res3 and 3 in res4/res5.
* **I3D-8×8-R50**: a ResNet-50 inflated to 3D (Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model
  and the Kinetics Dataset", CVPR 2017) in SlowFast's variant: temporal kernels 5 in conv1, 3 in res2, alternating
  [3, 1] in res3/res4 and [1, 3] in res5, and a temporal max pool (2, stride 2) after res2.
* **CoSlow / CoI3D**: the same networks rebuilt from the continual core (Hedegaard & Iosifidis, "Continual 3D
  Convolutional Neural Networks for Real-time Processing of Videos", arXiv 2106.00050). Identical ``state_dict``
  keys (SlowFast's: ``s1.pathway0_stem.conv.weight``, ``s2.pathway0_res0.branch2.a_bn.weight``,
  ``head.projection.weight``, ...), so clip weights load 1:1. Temporal padding becomes delay; the global average
  pool slides over the last ``temporal_window`` frames. CoI3D's temporal max pool makes it emit one prediction
  per 2 frames (``net.stride == (2,)``).
* **R(2+1)D-18**: torchvision's ``r2plus1d_18`` (Tran et al., "A Closer Look at Spatiotemporal Convolutions for
  Action Recognition", CVPR 2018), a clip baseline without continual twin.

Offline nets return logits ``(B, num_classes)`` (no softmax: the system applies softmax or sigmoid). Continual
twins return ``(B, num_classes, T_out)`` from ``forward`` (``T_out == 1`` for a clip of ``temporal_window`` pooled
frames, i.e. 8 input frames) and ``(B, num_classes)`` from ``forward_step``.

The residual block and its continual twin, the stage builder, the layer constructors and SlowFast's initialisation
are X3D's too (``blocks``). Checkpoint converters (SlowFast ``.pyth``, pytorchvideo hub, Caffe2 ``.pkl``) live in
``resnet3d_weights``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from modules import continual as co

from ..registry import InputSpec, register_model
from .blocks import CoLayers, Layers, bn3d, init_weights, res_stage

__all__ = [
    "CoResNet3D",
    "ResNet3D",
    "coi3d_8x8_r50",
    "coslow_8x8_r50",
    "i3d_8x8_r50",
    "r2plus1d_18",
    "slow_8x8_r50",
]


# --- input specs (also ``net.input_spec``; a centre crop after scaling the short side to the crop) -----------
# SlowFast configs/Kinetics/SLOW_8x8_R50.yaml: tested at 256² (Co3D profiles Slow at 256² too)
_SLOW_INPUT = InputSpec(clip_length=8, sampling_stride=8, crop_size=256, normalisation="feichtenhofer")
# SlowFast configs/Kinetics/c2/I3D_8x8_R50.yaml
_I3D_INPUT = InputSpec(clip_length=8, sampling_stride=8, crop_size=224, normalisation="feichtenhofer")
# torchvision's video_classification reference trains on 16-frame clips of 15 fps video (every 2nd frame of
# 30 fps video) at 112², normalised with its Kinetics statistics; Co3D's table has 8- and 16-frame rows.
_R2PLUS1D_INPUT = InputSpec(clip_length=16, sampling_stride=2, crop_size=112, normalisation="torchvision_kinetics")

_ARCH_INPUT = {"slow": _SLOW_INPUT, "i3d": _I3D_INPUT}


# --- architecture tables (SlowFast slowfast/models/video_model_builder.py) -----------------------------
_STAGE_DEPTHS = (3, 4, 6, 3)  # ResNet-50
_SPATIAL_STRIDES = (1, 2, 2, 2)

#: Temporal kernel of conv1 and the pattern of `a` (Tk×1×1) kernels in res2..res5, repeated over each stage's
#: blocks (SlowFast's _TEMPORAL_KERNEL_BASIS, NUM_BLOCK_TEMP_KERNEL = depths).
_TEMPORAL_KERNELS: dict[str, tuple[int, tuple[tuple[int, ...], ...]]] = {
    "slow": (1, ((1,), (1,), (3,), (3,))),
    "i3d": (5, ((3,), (3, 1), (3, 1), (1, 3))),
}
#: Temporal size (= stride) of the max pool after res2 (SlowFast's _POOL1); 1 means no pool.
_POOL1_T = {"slow": 1, "i3d": 2}


def _stage_kernels(pattern: Sequence[int], depth: int) -> list[int]:
    return [pattern[i % len(pattern)] for i in range(depth)]


def _check_arch(arch: str) -> str:
    if arch not in _TEMPORAL_KERNELS:
        raise ValueError(f"arch must be one of {sorted(_TEMPORAL_KERNELS)}, got {arch!r}")
    return arch


def _flatten_step(x: Tensor) -> Tensor:
    """``(B, C, 1, 1)`` pooled step → ``(B, C)``."""
    return x.flatten(1)


# --- the networks ---------------------------------------------------------------------------------
def _bottleneck(
    layers: Layers, dim_inner: int, dim_out: int, kernels: Sequence[int], index: int, c_in: int, stride: int
) -> dict[str, nn.Module]:
    """``branch2`` of block ``index``: a (Tk×1×1, Tk from the stage's kernel pattern) → b (1×3×3, the spatial
    stride: SlowFast's STRIDE_1X1 = False) → c (1×1×1)."""
    tk = kernels[index]
    return {
        "a": layers.conv(c_in, dim_inner, (tk, 1, 1)),
        "a_bn": bn3d(dim_inner),
        "a_relu": nn.ReLU(),
        "b": layers.conv(dim_inner, dim_inner, (1, 3, 3), (1, stride, stride)),
        "b_bn": bn3d(dim_inner),
        "b_relu": nn.ReLU(),
        "c": layers.conv(dim_inner, dim_out, (1, 1, 1)),
        "c_bn": bn3d(dim_out),
    }


def _build_layers(
    arch: str,
    layers: Layers,
    num_classes: int,
    dropout: float,
    width_per_group: int,
    in_channels: int,
    temporal_window: int | None,
) -> OrderedDict[str, nn.Module]:
    """SlowFast's ``ResNet`` (single pathway) as ``s1, s2, [pathway0_pool], s3, s4, s5, head``."""
    conv1_t, stage_patterns = _TEMPORAL_KERNELS[arch]
    w = width_per_group
    stem = layers.seq(
        conv=layers.conv(in_channels, w, (conv1_t, 7, 7), (1, 2, 2)),
        bn=bn3d(w),
        relu=nn.ReLU(),
        pool=layers.max_pool((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    )
    modules: OrderedDict[str, nn.Module] = OrderedDict(s1=layers.seq(pathway0_stem=stem))

    dim_in = w
    for i, (depth, pattern, stride) in enumerate(zip(_STAGE_DEPTHS, stage_patterns, _SPATIAL_STRIDES)):
        dim_inner, dim_out = w * 2**i, w * 4 * 2**i
        branch2 = functools.partial(_bottleneck, layers, dim_inner, dim_out, _stage_kernels(pattern, depth))
        modules[f"s{i + 2}"] = res_stage(
            layers, depth=depth, dim_in=dim_in, dim_out=dim_out, spatial_stride=stride, branch2=branch2
        )
        dim_in = dim_out
        pool_t = _POOL1_T[arch]
        if i == 0 and pool_t > 1:
            modules["pathway0_pool"] = layers.max_pool((pool_t, 1, 1), (pool_t, 1, 1), (0, 0, 0))

    head: OrderedDict[str, nn.Module] = OrderedDict()
    if layers.continual:
        head["pathway0_avgpool"] = co.AdaptiveAvgPool3d(
            (1, 1, 1), temporal_window=temporal_window, temporal_fill=layers.temporal_fill
        )
    else:
        # The whole clip: at the native crop this is SlowFast's AvgPool3d((T, S/32, S/32)); other sizes work too.
        head["pathway0_avgpool"] = nn.AdaptiveAvgPool3d((1, 1, 1))
        head["flatten"] = nn.Flatten(1)
    if dropout > 0:
        head["dropout"] = nn.Dropout(dropout)
    if layers.continual:
        head["projection"] = co.Linear(dim_in, num_classes, channel_dim=1)
        head["flatten"] = co.Lambda(_flatten_step)
    else:
        head["projection"] = nn.Linear(dim_in, num_classes)
    modules["head"] = layers.seq(**head)
    return modules


class ResNet3D(nn.Sequential):
    """Offline Slow or I3D ResNet-50 (``arch`` = ``"slow"`` | ``"i3d"``), SlowFast's key names; see the module
    docstring for the papers. ``forward(clip (B, C, T, H, W)) -> logits (B, num_classes)``.

    ``width_per_group`` (64 for ResNet-50) scales every width; tests use small values.
    """

    def __init__(
        self,
        *,
        arch: str,
        num_classes: int = 400,
        dropout: float = 0.5,
        width_per_group: int = 64,
        in_channels: int = 3,
    ) -> None:
        arch = _check_arch(arch)
        super().__init__(_build_layers(arch, Layers(), num_classes, dropout, width_per_group, in_channels, None))
        self.arch = arch
        self.input_spec = _ARCH_INPUT[arch]
        init_weights(self)


class CoResNet3D(co.Sequential):
    """Continual twin of ``ResNet3D`` (CoSlow, CoI3D; Hedegaard & Iosifidis, arXiv 2106.00050).

    Same keys and weights. ``forward(clip)`` pools every window of ``temporal_window`` frames at the head's input
    (frames after I3D's temporal pool) and returns ``(B, num_classes, T_out)``; a clip of ``temporal_window``
    pooled frames gives ``T_out == 1`` and, with ``temporal_fill="zeros"``, equals ``ResNet3D``. ``forward_step``
    returns ``(B, num_classes)`` or ``None`` (warm-up, and every other step of CoI3D).
    """

    def __init__(
        self,
        *,
        arch: str,
        num_classes: int = 400,
        dropout: float = 0.5,
        temporal_window: int | None = None,
        temporal_fill: str = "zeros",
        width_per_group: int = 64,
        in_channels: int = 3,
    ) -> None:
        arch = _check_arch(arch)
        window = _default_window(arch) if temporal_window is None else temporal_window
        if window < 1:
            raise ValueError(f"temporal_window must be a positive number of frames, got {window}")
        layers = CoLayers(temporal_fill)
        super().__init__(_build_layers(arch, layers, num_classes, dropout, width_per_group, in_channels, window))
        self.arch = arch
        self.input_spec = _ARCH_INPUT[arch]
        init_weights(self)

    @property
    def temporal_window(self) -> int:
        """Frames averaged by the global pool (at the head's input: after I3D's temporal pool)."""
        return self.head.pathway0_avgpool.temporal_window

    @temporal_window.setter
    def temporal_window(self, frames: int) -> None:
        # A plain write-through, so that ``co.set_temporal_window`` (which sets it on every module that has one)
        # and direct assignment agree; the new window starts a fresh stream.
        self.head.pathway0_avgpool.temporal_window = frames
        self.clean_state()


def _default_window(arch: str) -> int:
    """The 8-frame training clip, counted at the head's input (after I3D's temporal pool)."""
    return _SLOW_INPUT.clip_length // _POOL1_T[arch]


# --- registry --------------------------------------------------------------------------------------
@register_model("slow_8x8_r50", input_spec=_SLOW_INPUT)
def slow_8x8_r50(*, num_classes: int = 400, dropout: float = 0.5) -> ResNet3D:
    """Slow-8×8-R50 (Feichtenhofer et al., ICCV 2019): 8 frames every 8th, 256² crop; 32.45 M parameters."""
    return ResNet3D(arch="slow", num_classes=num_classes, dropout=dropout)


@register_model("coslow_8x8_r50", input_spec=_SLOW_INPUT)
def coslow_8x8_r50(
    *, num_classes: int = 400, dropout: float = 0.5, temporal_window: int = 8, temporal_fill: str = "zeros"
) -> CoResNet3D:
    """CoSlow (Hedegaard & Iosifidis, arXiv 2106.00050): one prediction per frame, pooled over the last
    ``temporal_window`` frames (8: receptive field 26, delay 16; 64 for CoSlow₆₄)."""
    return CoResNet3D(
        arch="slow",
        num_classes=num_classes,
        dropout=dropout,
        temporal_window=temporal_window,
        temporal_fill=temporal_fill,
    )


@register_model("i3d_8x8_r50", input_spec=_I3D_INPUT)
def i3d_8x8_r50(*, num_classes: int = 400, dropout: float = 0.5) -> ResNet3D:
    """I3D-8×8-R50 (Carreira & Zisserman, CVPR 2017; SlowFast's ResNet-50 variant): 8 frames every 8th, 224² crop;
    28.04 M parameters."""
    return ResNet3D(arch="i3d", num_classes=num_classes, dropout=dropout)


@register_model("coi3d_8x8_r50", input_spec=_I3D_INPUT)
def coi3d_8x8_r50(
    *, num_classes: int = 400, dropout: float = 0.5, temporal_window: int = 4, temporal_fill: str = "zeros"
) -> CoResNet3D:
    """CoI3D (Hedegaard & Iosifidis, arXiv 2106.00050): one prediction per 2 frames (the temporal max pool after
    res2). ``temporal_window`` counts pooled frames: 4 = the 8-frame clip (receptive field 42, delay 24); 32 is
    CoI3D₆₄."""
    return CoResNet3D(
        arch="i3d",
        num_classes=num_classes,
        dropout=dropout,
        temporal_window=temporal_window,
        temporal_fill=temporal_fill,
    )


class _DropoutLinear(nn.Linear):
    """``nn.Linear`` with dropout on its input: adds dropout to torchvision's head without changing its keys."""

    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.dropout(x))


@register_model("r2plus1d_18", input_spec=_R2PLUS1D_INPUT)
def r2plus1d_18(*, num_classes: int = 400, dropout: float = 0.0) -> nn.Module:
    """R(2+1)D-18 (Tran et al., CVPR 2018) from torchvision, randomly initialised; 31.51 M parameters with 400
    classes. torchvision has no dropout; ``dropout > 0`` adds it before ``fc`` (same keys)."""
    from torchvision.models.video import r2plus1d_18 as tv_r2plus1d_18

    net = tv_r2plus1d_18(weights=None, num_classes=num_classes)
    if dropout > 0:
        fc = _DropoutLinear(net.fc.in_features, net.fc.out_features, dropout)
        fc.load_state_dict(net.fc.state_dict())
        net.fc = fc
    net.input_spec = _R2PLUS1D_INPUT
    return net
