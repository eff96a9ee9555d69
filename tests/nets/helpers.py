"""Shared helpers of the net tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms (SlowFast's init zeroes each block's last BN γ, which would make
    every residual branch vanish and hide a mis-wired one), logits of order 1, random conv biases (SE)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _BatchNorm):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.05, generator=g)
                if m.bias is not None:  # CoOadTR's attention projections have none
                    m.bias.uniform_(-0.5, 0.5, generator=g)
            elif isinstance(m, nn.Conv3d) and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5, generator=g)
    return net
