"""ST-GCN (Yan, Xiong & Lin, AAAI 2018) and CoST-GCN (Hedegaard et al., Pattern Recognition 2023), with their
* variants (stride 1, no temporal padding): 3,141,478 trainable parameters for NTU-60 (spec B7)."""

from __future__ import annotations

from ..registry import register_model
from .nets import SKELETON_INPUT, CoSkeletonNet, SkeletonNet

__all__ = ["cost_gcn", "cost_gcn_mod", "st_gcn", "st_gcn_mod"]


@register_model("st_gcn", input_spec=SKELETON_INPUT)
def st_gcn(
    *,
    num_classes: int = 60,
    graph: str = "ntu",
    in_channels: int = 3,
    num_persons: int = 2,
    width: float = 1.0,
) -> SkeletonNet:
    """ST-GCN: temporal stride 2 in layer5 and layer8, temporal padding 4; one output per clip."""
    return SkeletonNet(
        arch="st_gcn",
        mod=False,
        num_classes=num_classes,
        graph=graph,
        in_channels=in_channels,
        num_persons=num_persons,
        width=width,
    )


@register_model("st_gcn_mod", input_spec=SKELETON_INPUT)
def st_gcn_mod(
    *,
    num_classes: int = 60,
    graph: str = "ntu",
    in_channels: int = 3,
    num_persons: int = 2,
    width: float = 1.0,
) -> SkeletonNet:
    """ST-GCN*: stride 1 and no temporal padding (residuals centre-cropped by 4 frames per side); receptive field 81."""
    return SkeletonNet(
        arch="st_gcn",
        mod=True,
        num_classes=num_classes,
        graph=graph,
        in_channels=in_channels,
        num_persons=num_persons,
        width=width,
    )


@register_model("cost_gcn", input_spec=SKELETON_INPUT)
def cost_gcn(
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
    """CoST-GCN: a prediction every 4 frames (receptive field 449, delay 296 with the default pool 75, padding 19)."""
    return CoSkeletonNet(
        arch="st_gcn",
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


@register_model("cost_gcn_mod", input_spec=SKELETON_INPUT)
def cost_gcn_mod(
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
    """CoST-GCN*: a prediction every frame (receptive field 300, delay 299 with the default pool 220)."""
    return CoSkeletonNet(
        arch="st_gcn",
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
