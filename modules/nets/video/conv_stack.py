"""The small reference 3D CNN and its continual twin: the framework's smoke-test architecture.

``conv_stack`` is a few ``Conv3d`` (kernel 3 in time and space, "same" padding) + ``BatchNorm3d`` + ``ReLU``
blocks, a global average pool and a linear head. ``co_conv_stack`` is the same network built from the continual
core (Hedegaard & Iosifidis, "Continual 3D Convolutional Neural Networks", arXiv 2106.00050): identical
``state_dict`` keys, so offline weights load 1:1, and ``forward(clip)`` equals the offline net when the clip has
``clip_length`` frames. Stepping it costs one output frame of each convolution per step instead of a clip.

Both return ``(B, num_classes, T_out, 1, 1)`` (``T_out == 1`` for a ``clip_length`` clip); systems squeeze it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn

from modules import continual as co

from ..registry import InputSpec, register_model
from .blocks import ChannelLinear

__all__ = ["co_conv_stack", "conv_stack"]


# The synthetic data's defaults (datamodules/synthetic.py): 8-frame clips of 16 x 16 unnormalised pixels.
_INPUT = InputSpec(clip_length=8, sampling_stride=1, crop_size=16, normalisation="none")


def _widths(in_channels: int, channels: Sequence[int]) -> list[tuple[int, int]]:
    if not channels:
        raise ValueError("conv_stack needs at least one entry in `channels`")
    widths = [in_channels, *channels]
    return list(itertools.pairwise(widths))


@register_model("conv_stack", input_spec=_INPUT)
def conv_stack(
    *, in_channels: int = 3, num_classes: int = 10, channels: Sequence[int] = (8, 16), kernel_size: int = 3
) -> nn.Sequential:
    """Offline: ``len(channels)`` blocks [Conv3d(k, same padding) → BN → ReLU] → global pool → linear head."""
    layers: list[nn.Module] = []
    for c_in, c_out in _widths(in_channels, channels):
        # No conv bias: the BatchNorm that follows has its own shift.
        layers += [nn.Conv3d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False)]
        layers += [nn.BatchNorm3d(c_out), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool3d((1, 1, 1)), ChannelLinear(channels[-1], num_classes)]
    return nn.Sequential(*layers)


@register_model("co_conv_stack", input_spec=_INPUT)
def co_conv_stack(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    channels: Sequence[int] = (8, 16),
    kernel_size: int = 3,
    clip_length: int = 8,
    temporal_fill: str = "zeros",
) -> nn.Module:
    """Continual twin of ``conv_stack``; the global pool averages the last ``clip_length`` frames.

    Each "same"-padded conv delays the stream by ``kernel_size // 2`` steps, so the first prediction comes at
    step ``net.delay = clip_length - 1 + len(channels) * (kernel_size // 2)`` (0-based).
    """
    layers: list[nn.Module] = []
    for c_in, c_out in _widths(in_channels, channels):
        layers += [
            co.Conv3d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False, temporal_fill=temporal_fill),
            nn.BatchNorm3d(c_out),
            nn.ReLU(),
        ]
    layers += [
        co.AdaptiveAvgPool3d(output_size=(1, 1, 1), temporal_window=clip_length),
        co.Linear(channels[-1], num_classes, channel_dim=1),
    ]
    return co.Sequential(*layers)
