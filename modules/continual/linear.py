"""Linear layer applied along any channel dim, so that it works on ``(B, C, T, ...)`` clips and their steps."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .base import CoModule
from .convert import register

__all__ = ["Linear"]


class Linear(CoModule, nn.Linear):
    """``nn.Linear`` over dim ``channel_dim`` of a clip (default 1, channels first); stateless.

    A step is the clip without dim 2, so a non-negative ``channel_dim`` above 2 moves down by one there.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        channel_dim: int = 1,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        if channel_dim == 2:
            raise ValueError("Linear: channel_dim=2 is the time dim of a clip; channels cannot be there")
        self.channel_dim = channel_dim

    def _apply_on(self, x: Tensor, dim: int) -> Tensor:
        if dim in (-1, x.dim() - 1):
            return F.linear(x, self.weight, self.bias)
        return F.linear(x.movedim(dim, -1), self.weight, self.bias).movedim(-1, dim)

    def forward(self, clip: Tensor) -> Tensor:
        dim = self.channel_dim % clip.dim()
        if dim == 2:
            raise ValueError(f"Linear: channel_dim={self.channel_dim} is the time dim of a {clip.dim()}-d clip")
        return self._apply_on(clip, self.channel_dim)

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor:
        dim = self.channel_dim - 1 if self.channel_dim > 2 else self.channel_dim
        return self._apply_on(step, dim)

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor:
        return self.forward(clip)

    @classmethod
    def build_from(cls, module: nn.Linear, channel_dim: int = 1, **_: Any) -> Linear:
        out = cls(
            module.in_features,
            module.out_features,
            module.bias is not None,
            module.weight.device,
            module.weight.dtype,
            channel_dim=channel_dim,
        )
        out.load_state_dict(module.state_dict())
        return out.train(module.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, channel_dim={self.channel_dim}"


register(nn.Linear, Linear.build_from)
