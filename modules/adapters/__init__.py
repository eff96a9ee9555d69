"""Structured Pruning Adapters (Hedegaard et al., arXiv 2211.10155): SPLoRA, SPPaRA, conversion and fusion.

Adapter layers subclass the torch layers they adapt (``isinstance(m, nn.Conv2d)`` holds); ``weight`` is the
frozen base weight, ``bias`` trains, and ``adapter`` holds the learned ΔW factors. Torch only.
"""

from __future__ import annotations

from ._base import DEFAULT_INIT_RANGE, DEFAULT_RANK, Adapter, AdapterLayer
from .convert import (
    SPLORA_TYPES,
    SPPARA_TYPES,
    adapter_layers,
    fuse,
    is_adapter,
    merge_adapters,
    splora,
    sppara,
    trainable_parameter_count,
)
from .splora import (
    LowRankMatrix,
    SPLoRAConv1d,
    SPLoRAConv2d,
    SPLoRAConv3d,
    SPLoRALinear,
    SPLoRAMultiheadAttention,
)
from .sppara import ParallelMatrix, SPPaRAConv1d, SPPaRAConv2d, SPPaRAConv3d

__all__ = [
    "DEFAULT_INIT_RANGE",
    "DEFAULT_RANK",
    "SPLORA_TYPES",
    "SPPARA_TYPES",
    "Adapter",
    "AdapterLayer",
    "LowRankMatrix",
    "ParallelMatrix",
    "SPLoRAConv1d",
    "SPLoRAConv2d",
    "SPLoRAConv3d",
    "SPLoRALinear",
    "SPLoRAMultiheadAttention",
    "SPPaRAConv1d",
    "SPPaRAConv2d",
    "SPPaRAConv3d",
    "adapter_layers",
    "fuse",
    "is_adapter",
    "merge_adapters",
    "splora",
    "sppara",
    "trainable_parameter_count",
]
