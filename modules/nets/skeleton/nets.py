"""ST-GCN, AGCN and S-TR, their * variants and their continual twins (Hedegaard, Heidari & Iosifidis,
"Continual Spatio-Temporal Graph Convolutional Networks", Pattern Recognition 2023, arXiv 2203.11009; the
architecture of continual-skeletons ``models/base.py`` and ``models/<name>/<name>.py``).

Input ``(N, C, T, V, M)``: C channels (3 joint or bone, 6 joint + bone), T frames, V joints, M persons; a
continual step is ``(N, C, V, M)``. ``data_bn`` (BatchNorm1d over M·V·C) normalises the input; the N·M skeletons
then go through ten ``SpatioTemporalBlock``s (``layer1..layer10``: 64, 64, 64, 64, 128, 128, 128, 256, 256, 256
channels, times ``width``: 1 in the paper, smaller for quick CPU runs; temporal stride 2 in layer5 and layer8 of
the originals, 1 everywhere in the * variants, which also have no temporal padding). The features are averaged
over joints and persons, then over time, and ``fc`` maps the 256 (× width) channels to the classes.

* Offline nets (``SkeletonNet``) return logits ``(N, num_classes)``.
* Continual twins (``CoSkeletonNet``) average time with ``co.AvgPool1d(pool_size, stride=1, pool_padding)``.
  ``forward(clip)`` returns ``(N, num_classes, T_out)``: every pool window of the clip (39 for a 300-frame clip
  with the originals' defaults, 1 for the * nets). Output ``offline_index`` (= ``pool_padding``; 19 for the
  originals) is the window over the whole clip: it equals the offline net. The original ``CoModelBase.forward``
  kept index 0, which averages ``pool_padding`` zero frames with the first backbone outputs (spec B7).
  ``forward_step`` returns ``(N, num_classes)`` or ``None`` (warm-up, and between the stride's steps).
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from functools import partial

from torch import Tensor, nn

from modules import continual as co

from ..registry import InputSpec
from .blocks import CoLayers, Layers
from .gcn import (
    AdaptiveGraphConvolution,
    FrameAdaptiveGraphConvolution,
    GcnUnitAttention,
    GraphConvolution,
    init_weights,
)
from .graphs import get_graph

__all__ = ["ARCHS", "SKELETON_INPUT", "CoSkeletonNet", "SkeletonNet", "default_pool"]

#: NTU RGB+D as prepared by 2s-AGCN's scripts (spec B2): 300 frames (zero-padded), 25 joints, 2 persons, one
#: 3-channel stream (joint or bone), already centred and rotated (no further normalisation).
SKELETON_INPUT = InputSpec(
    crop_size=25, clip_length=300, sampling_stride=1, normalisation="none", channels=3, joints=25, persons=2
)

#: (c_in, c_out, stride of the originals) of layer1..layer10
_LAYOUT = ((None, 64, 1), (64, 64, 1), (64, 64, 1), (64, 64, 1), (64, 128, 2),
           (128, 128, 1), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 256, 1))  # fmt: skip
ARCHS = ("st_gcn", "agcn", "s_tr")
#: S-TR: ST-GCN units in layer1-3, spatial attention from layer4 on (continual-skeletons ``models/s_tr``)
_S_TR_FIRST_ATTENTION = 4


# --- the reshapes around data_bn and the pooling (no weights; per frame) ----------------------------------
class ToFeatures(nn.Module):
    """``(N, C, T, V, M)`` → ``(N, M·V·C, T)``, the layout of ``data_bn``; checks the input's shape."""

    def __init__(self, channels: int, joints: int, persons: int) -> None:
        super().__init__()
        self.channels, self.joints, self.persons = channels, joints, persons

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.channels, self.joints, self.persons)
        if x.dim() != 5 or (x.shape[1], x.shape[3], x.shape[4]) != expected:
            raise ValueError(
                f"expected a skeleton clip (N, C={self.channels}, T, V={self.joints}, M={self.persons}) (a step: "
                f"(N, C, V, M)), got {tuple(x.shape)}; build the net with in_channels, graph and num_persons of "
                "the data"
            )
        n, c, t, v, m = x.shape
        return x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t)


class ToSkeletons(nn.Module):
    """``(N, M·V·C, T)`` → ``(N·M, C, T, V)``: every person is its own skeleton."""

    def __init__(self, channels: int, joints: int, persons: int) -> None:
        super().__init__()
        self.channels, self.joints, self.persons = channels, joints, persons

    def forward(self, x: Tensor) -> Tensor:
        n, _, t = x.shape
        m, v, c = self.persons, self.joints, self.channels
        return x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)


class SpatialPool(nn.Module):
    """``(N·M, C, T, V)`` → ``(N, C, T)``: the mean over joints, then over persons."""

    def __init__(self, persons: int) -> None:
        super().__init__()
        self.persons = persons

    def forward(self, x: Tensor) -> Tensor:
        nm, c, t, _ = x.shape
        return x.mean(3).view(nm // self.persons, self.persons, c, t).mean(1)


class TemporalMean(nn.Module):
    """``(N, C, T)`` → ``(N, C)``: the offline nets' mean over time (a tensor op, as in the original)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(2)


for _cls in (ToFeatures, ToSkeletons, SpatialPool):
    co.register(_cls, co.local)


# --- the spatial units ---------------------------------------------------------------------------------------
def _gcn_factory(arch: str, layer: int, A: Tensor, mod: bool, defective_contraction: bool) -> Callable[..., nn.Module]:
    if arch == "st_gcn" or (arch == "s_tr" and layer < _S_TR_FIRST_ATTENTION):
        return partial(GraphConvolution, A=A)
    if arch == "s_tr":
        return partial(GcnUnitAttention, A=A)
    if mod:
        return partial(FrameAdaptiveGraphConvolution, A=A, defective_contraction=defective_contraction)
    return partial(AdaptiveGraphConvolution, A=A)


def _check_arch(arch: str, mod: bool, defective_contraction: bool) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if defective_contraction and not (arch == "agcn" and mod):
        raise ValueError("defective_contraction reproduces AGCN*'s defect; it exists for agcn_mod / coagcn_mod only")


def _build(
    layers: Layers,
    *,
    arch: str,
    mod: bool,
    num_classes: int,
    graph: str,
    in_channels: int,
    num_persons: int,
    defective_contraction: bool,
    pool: nn.Module,
    width: float = 1.0,
) -> OrderedDict[str, nn.Module]:
    """The modules of an offline net (``Layers``) or of its twin (``CoLayers``): same names, same keys."""
    _check_arch(arch, mod, defective_contraction)
    widths = _widths(arch, width)
    if in_channels < 1 or num_persons < 1 or num_classes < 1:
        raise ValueError(f"in_channels, num_persons and num_classes must be positive, got {in_channels}, "
                         f"{num_persons}, {num_classes}")  # fmt: skip
    g = get_graph(graph)
    A, v = g.adjacency(), g.num_nodes
    data_bn = nn.BatchNorm1d(num_persons * v * in_channels)
    init_weights(data_bn)
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (c_in, c_out, stride) in enumerate(_LAYOUT, start=1):
        gcn = _gcn_factory(arch, i, A, mod, defective_contraction)
        c_in = in_channels if c_in is None else widths[c_in]
        blocks[f"layer{i}"] = layers.block(
            gcn, c_in, widths[c_out], stride=1 if mod else stride, padding=0 if mod else 4, residual=i > 1
        )
    features = widths[256]
    fc = co.Linear(features, num_classes, channel_dim=1) if layers.continual else nn.Linear(features, num_classes)
    init_weights(fc, bs=num_classes)
    reshape = (in_channels, v, num_persons)
    return OrderedDict(
        to_features=ToFeatures(*reshape),
        data_bn=data_bn,
        to_skeletons=ToSkeletons(*reshape),
        layers=layers.seq(blocks),
        spatial_pool=SpatialPool(num_persons),
        pool=pool,
        fc=fc,
    )


def _widths(arch: str, width: float) -> dict[int, int]:
    """The channels of the paper's 64 / 128 / 256 at ``width`` (1 = the paper's nets). S-TR's attention splits
    ``C/4`` key channels over 8 heads, so its widths must stay multiples of 32."""
    if width <= 0:
        raise ValueError(f"width must be positive (1.0 = the paper's 64/128/256 channels), got {width}")
    widths = {c: max(1, round(c * width)) for c in (64, 128, 256)}
    if arch == "s_tr" and any(c % 32 for c in widths.values()):
        raise ValueError(f"S-TR's 8 attention heads need widths that are multiples of 32; width={width} gives "
                         f"{sorted(widths.values())}: use width 0.5 or 1")  # fmt: skip
    return widths


class SkeletonNet(nn.Sequential):
    """Offline ST-GCN / AGCN / S-TR (``arch``), the * variant with ``mod=True``; see the module docstring.
    ``forward((N, C, T, V, M)) -> (N, num_classes)``."""

    def __init__(
        self,
        *,
        arch: str,
        mod: bool = False,
        num_classes: int = 60,
        graph: str = "ntu",
        in_channels: int = 3,
        num_persons: int = 2,
        defective_contraction: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__(_build(Layers(), arch=arch, mod=mod, num_classes=num_classes, graph=graph,
                                in_channels=in_channels, num_persons=num_persons,
                                defective_contraction=defective_contraction, pool=TemporalMean(),
                                width=width))  # fmt: skip
        self.arch, self.mod, self.graph = arch, mod, graph

    @property
    def receptive_field(self) -> int:
        """Frames the backbone needs for one output (153 for the originals, 81 for the * nets)."""
        return _backbone_timing(self.mod)[0]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5 and self.mod and x.shape[2] < self.receptive_field:
            raise ValueError(
                f"a {x.shape[2]}-frame clip is shorter than the receptive field of {self.arch}_mod "
                f"({self.receptive_field} frames, no temporal padding); give at least {self.receptive_field} frames"
            )
        return super().forward(x)


def _backbone_timing(mod: bool) -> tuple[int, int, int]:
    """(receptive field, padding, stride) of the ten blocks: (81, 0, 1) for the * nets, (153, 76, 4) otherwise."""
    if mod:
        return 1 + 8 * len(_LAYOUT), 0, 1
    rf, scale, pad = 1, 1, 0
    for _, _, stride in _LAYOUT:
        rf += 8 * scale
        pad += 4 * scale
        scale *= stride
    return rf, pad, scale


def default_pool(sequence_len: int, mod: bool) -> tuple[int, int]:
    """``(pool_size, pool_padding)`` of continual-skeletons ``CoModelBase``: the pool spans the backbone outputs
    of a ``sequence_len`` clip, ``⌈(T − rf + 2·pad + 1)/stride⌉``, and is padded by as many windows as are
    padded ones, ``pool_size − ⌈(T − rf + pad + 1)/stride⌉`` (75 and 19 for T = 300; 220 and 0 for the * nets)."""
    rf, pad, stride = _backbone_timing(mod)
    size = math.ceil((sequence_len - rf + 2 * pad + 1) / stride)
    padding = size - math.ceil((sequence_len - rf + pad + 1) / stride)
    if size < 1 or not 0 <= padding <= size // 2:
        raise ValueError(
            f"sequence_len={sequence_len} is too short for the backbone (receptive field {rf} frames, temporal "
            f"padding {pad}): it gives pool_size={size}, pool_padding={padding}; give a longer sequence_len (300 in "
            "the papers) or pass pool_size and pool_padding explicitly"
        )
    return size, padding


class CoSkeletonNet(co.Sequential):
    """Continual twin of ``SkeletonNet`` (CoST-GCN, CoAGCN, CoS-TR and their * variants); same keys and weights.

    ``pool_size`` / ``pool_padding`` default to ``default_pool(sequence_len, mod)``. ``forward`` returns every
    pool window of the clip, ``(N, num_classes, T_out)``; ``offline_index`` names the one that equals the offline
    net on a ``sequence_len`` clip (module docstring). ``temporal_fill``: what the stream's past is taken to be
    (``zeros``, as the offline padding, or ``replicate``).
    """

    def __init__(
        self,
        *,
        arch: str,
        mod: bool = False,
        num_classes: int = 60,
        graph: str = "ntu",
        in_channels: int = 3,
        num_persons: int = 2,
        sequence_len: int = 300,
        pool_size: int | None = None,
        pool_padding: int | None = None,
        temporal_fill: str = "zeros",
        defective_contraction: bool = False,
        width: float = 1.0,
    ) -> None:
        size, padding = _resolve_pool(sequence_len, mod, pool_size, pool_padding)
        pool = co.AvgPool1d(size, stride=1, padding=padding, temporal_fill=temporal_fill)
        super().__init__(_build(CoLayers(temporal_fill), arch=arch, mod=mod, num_classes=num_classes, graph=graph,
                                in_channels=in_channels, num_persons=num_persons,
                                defective_contraction=defective_contraction, pool=pool, width=width))  # fmt: skip
        self.arch, self.mod, self.graph, self.sequence_len = arch, mod, graph, sequence_len
        self.pool_size, self.pool_padding = size, padding

    @property
    def offline_index(self) -> int:
        """Index of ``forward``'s output over a whole ``sequence_len`` clip: the offline net's prediction."""
        return self.pool_padding

    @contextlib.contextmanager
    def per_frame_attention(self) -> Iterator[None]:
        """Inside the context, CoAGCN's clip ``forward`` computes ``C_k`` of each frame from that frame alone, as its
        steps do (the other nets are per frame already): the clip that stepping must equal."""
        units = [m for m in self.modules() if isinstance(m, AdaptiveGraphConvolution)]
        saved = [m.per_frame for m in units]
        for m in units:
            m.per_frame = True
        try:
            yield
        finally:
            for m, value in zip(units, saved):
                m.per_frame = value

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5 and x.shape[2] < self.receptive_field - 2 * self.padding[0]:
            raise ValueError(
                f"a {x.shape[2]}-frame clip is shorter than the receptive field ({self.receptive_field} frames with "
                f"{self.padding[0]} padded on each side); give at least "
                f"{self.receptive_field - 2 * self.padding[0]} frames, or a smaller pool_size"
            )
        return super().forward(x)


def _resolve_pool(sequence_len: int, mod: bool, pool_size: int | None, pool_padding: int | None) -> tuple[int, int]:
    """The explicit pool, or the defaults of ``default_pool``; a given ``pool_size`` without ``pool_padding`` is
    padded as the original derives it (``max(0, pool_size − unpadded windows)``)."""
    if pool_size is None:
        size, padding = default_pool(sequence_len, mod)
        return size, padding if pool_padding is None else pool_padding
    if pool_size < 1:
        raise ValueError(f"pool_size must be a positive number of backbone outputs, got {pool_size}")
    if pool_padding is None:
        rf, pad, stride = _backbone_timing(mod)
        pool_padding = max(0, pool_size - math.ceil((sequence_len - rf + pad + 1) / stride))
    if not 0 <= pool_padding <= pool_size // 2:
        raise ValueError(f"pool_padding must be in 0..pool_size // 2 = {pool_size // 2}, got {pool_padding}")
    return pool_size, pool_padding
