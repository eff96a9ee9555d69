"""S-TR (the spatial transformer stream of ST-TR; Plizzari, Cannici & Matteucci, CVIU 2021) and CoS-TR (Hedegaard
et al., Pattern Recognition 2023), with their * variants: 3,086,470 trainable parameters for NTU-60, incl. the
unused trainable ``gcn.A`` of layers 4-10 (spec B7). The attention is per frame, so CoS-TR steps exactly."""

from __future__ import annotations

from ..registry import register_model
from .nets import SKELETON_INPUT, CoSkeletonNet, SkeletonNet

__all__ = ["cos_tr", "cos_tr_mod", "s_tr", "s_tr_mod"]


@register_model("s_tr", input_spec=SKELETON_INPUT)
def s_tr(
    *,
    num_classes: int = 60,
    graph: str = "ntu",
    in_channels: int = 3,
    num_persons: int = 2,
    width: float = 1.0,
) -> SkeletonNet:
    """S-TR: temporal stride 2 in layer5 and layer8, temporal padding 4; one output per clip."""
    return SkeletonNet(
        arch="s_tr",
        mod=False,
        num_classes=num_classes,
        graph=graph,
        in_channels=in_channels,
        num_persons=num_persons,
        width=width,
    )


@register_model("s_tr_mod", input_spec=SKELETON_INPUT)
def s_tr_mod(
    *,
    num_classes: int = 60,
    graph: str = "ntu",
    in_channels: int = 3,
    num_persons: int = 2,
    width: float = 1.0,
) -> SkeletonNet:
    """S-TR*: stride 1 and no temporal padding (residuals centre-cropped by 4 frames per side); receptive field 81."""
    return SkeletonNet(
        arch="s_tr",
        mod=True,
        num_classes=num_classes,
        graph=graph,
        in_channels=in_channels,
        num_persons=num_persons,
        width=width,
    )


@register_model("cos_tr", input_spec=SKELETON_INPUT)
def cos_tr(
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
    """CoS-TR: a prediction every 4 frames (receptive field 449, delay 296 with the default pool 75, padding 19)."""
    return CoSkeletonNet(
        arch="s_tr",
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


@register_model("cos_tr_mod", input_spec=SKELETON_INPUT)
def cos_tr_mod(
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
    """CoS-TR*: a prediction every frame (receptive field 300, delay 299 with the default pool 220)."""
    return CoSkeletonNet(
        arch="s_tr",
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
    )
