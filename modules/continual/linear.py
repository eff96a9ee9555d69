"""Linear layer applied along any channel dim, so that it works on ``(B, C, T, ...)`` clips and their steps."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .base import CoModule, ordinary_tensors
from .convert import check_build_kwargs, register

__all__ = ["Linear"]


class Linear(CoModule, nn.Linear):
    """``nn.Linear`` over dim ``channel_dim`` of a clip (default 1, channels first); stateless.

    ``channel_dim`` counts from the front of a clip ``(B, C, T, ...)``: 1 for channels, 3 or more for a trailing
    feature dim (a step is the clip without dim 2, so such a dim moves down by one there). Time (2) and negative
    values are refused when the layer is built: continual-inference's default ``channel_dim=-1`` applies the
    layer to the last dim of whatever it gets, which is the features of a step ``(B, C)`` but the time of a
    channels-first clip ``(B, C, T)`` (the library's own example feeds ``(B, T, C)`` clips), so one layer would
    project channels when stepping and time on clips. Write ``channel_dim=1`` (its advice inside ``(B, C, T)``
    networks too), or the non-negative index of the feature dim.
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
        ordinary_tensors(self, recurse=False)  # built under inference_mode: usable and loadable in any mode
        if channel_dim == 2:
            raise ValueError("Linear: channel_dim=2 is the time dim of a clip; channels cannot be there")
        if channel_dim < 0:
            raise ValueError(
                f"Linear: channel_dim={channel_dim} counts from the end, where continual-inference's default -1 "
                "finds the features of a step (B, C) but the time of a channels-first clip (B, C, T); give the "
                "dim counted from the front of the clip (B, C, T, ...): channel_dim=1 for channels, or e.g. 3 for "
                "the last dim of a (B, C, T, F) clip"
            )
        self.channel_dim = channel_dim

    def _apply_on(self, x: Tensor, dim: int) -> Tensor:
        if dim in (-1, x.dim() - 1):
            return F.linear(x, self.weight, self.bias)
        return F.linear(x.movedim(dim, -1), self.weight, self.bias).movedim(-1, dim)

    def _clip_dim(self, x: Tensor, kind: str) -> int:
        """``channel_dim`` checked against ``x``'s clip (``kind``: "clip" or "step", a clip without dim 2):
        refused where it is beyond the clip or time (an attribute set after construction), in every mode alike."""
        clip_dims = x.dim() + (kind == "step")
        dim = self.channel_dim
        if not 0 <= dim < clip_dims:
            raise ValueError(
                f"Linear: channel_dim={self.channel_dim} is beyond the {clip_dims}-d clip of {kind} {tuple(x.shape)}"
            )
        if dim == 2:
            raise ValueError(
                f"Linear: channel_dim={self.channel_dim} is the time dim of a {clip_dims}-d clip ({kind} "
                f"{tuple(x.shape)}); give the dim of the features (channels first: channel_dim=1)"
            )
        return dim

    def forward(self, clip: Tensor) -> Tensor:
        return self._apply_on(clip, self._clip_dim(clip, "clip"))

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor:
        # A step is its clip without dim 2: check the dim against the clip, then skip the missing time dim.
        dim = self._clip_dim(step, "step")
        return self._apply_on(step, dim - 1 if dim > 2 else dim)

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor:
        return self.forward(clip)

    @classmethod
    def build_from(cls, module: nn.Linear, channel_dim: int = 1, **kwargs: Any) -> Linear:
        check_build_kwargs("Linear.build_from", kwargs)
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
