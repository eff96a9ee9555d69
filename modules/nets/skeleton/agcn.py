"""AGCN (2s-AGCN's single stream; Shi, Zhang, Cheng & Lu, CVPR 2019) and CoAGCN (Hedegaard et al., Pattern
Recognition 2023), with their * variants: 3,469,510 trainable parameters for NTU-60 (spec B7).

CoAGCN computes ``C_k`` from the frames each call sees: one frame per step, the whole clip in ``forward``, so
its steps differ from its clip (spec B7). AGCN* / CoAGCN* compute ``C_k`` per frame (steps equal clips);
``defective_contraction=True`` reproduces the original AGCN* code, with which the published * weights were
trained (``gcn.FrameAdaptiveGraphConvolution``)."""

from __future__ import annotations

from ..registry import register_model
from .nets import SKELETON_INPUT, CoSkeletonNet, SkeletonNet

__all__ = ["agcn", "agcn_mod", "coagcn", "coagcn_mod"]


@register_model("agcn", input_spec=SKELETON_INPUT)
def agcn(
    *,
    num_classes: int = 60,
    graph: str = "ntu",
    in_channels: int = 3,
    num_persons: int = 2,
    width: float = 1.0,
) -> SkeletonNet:
    """AGCN: temporal stride 2 in layer5 and layer8, temporal padding 4; one output per clip."""
    return SkeletonNet(
        arch="agcn",
        mod=False,
        num_classes=num_classes,
        graph=graph,
        in_channels=in_channels,
        num_persons=num_persons,
        width=width,
    )


@register_model("agcn_mod", input_spec=SKELETON_INPUT)
def agcn_mod(
    *,
    num_classes: int = 60,
    graph: str = "ntu",
    in_channels: int = 3,
    num_persons: int = 2,
    width: float = 1.0,
    defective_contraction: bool = False,
) -> SkeletonNet:
    """AGCN*: stride 1 and no temporal padding (residuals centre-cropped by 4 frames per side); receptive field 81."""
    return SkeletonNet(
        arch="agcn",
        mod=True,
        num_classes=num_classes,
        graph=graph,
        in_channels=in_channels,
        num_persons=num_persons,
        width=width,
        defective_contraction=defective_contraction,
    )


@register_model("coagcn", input_spec=SKELETON_INPUT)
def coagcn(
    *,
    num_classes: int = 60,
    graph: str = "ntu",
    in_channels: int = 3,
    num_persons: int = 2,
    width: float = 1.0,
    sequence_len: int = 300,
    pool_size: int | None = None,
    pool_padding: int | None = None,
    temporal_fill: str = "zeros",
) -> CoSkeletonNet:
    """CoAGCN: a prediction every 4 frames (receptive field 449, delay 296 with the default pool 75, padding 19)."""
    return CoSkeletonNet(
        arch="agcn",
        mod=False,
        num_classes=num_classes,
        graph=graph,
        in_channels=in_channels,
        num_persons=num_persons,
        width=width,
        sequence_len=sequence_len,
        pool_size=pool_size,
        pool_padding=pool_padding,
        temporal_fill=temporal_fill,
    )


@register_model("coagcn_mod", input_spec=SKELETON_INPUT)
def coagcn_mod(
    *,
    num_classes: int = 60,
    graph: str = "ntu",
    in_channels: int = 3,
    num_persons: int = 2,
    width: float = 1.0,
    sequence_len: int = 300,
    pool_size: int | None = None,
    pool_padding: int | None = None,
    temporal_fill: str = "zeros",
    defective_contraction: bool = False,
) -> CoSkeletonNet:
    """CoAGCN*: a prediction every frame (receptive field 300, delay 299 with the default pool 220)."""
    return CoSkeletonNet(
        arch="agcn",
        mod=True,
        num_classes=num_classes,
        graph=graph,
        in_channels=in_channels,
        num_persons=num_persons,
        width=width,
        sequence_len=sequence_len,
        pool_size=pool_size,
        pool_padding=pool_padding,
        temporal_fill=temporal_fill,
        defective_contraction=defective_contraction,
    )
