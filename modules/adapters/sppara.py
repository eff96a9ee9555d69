"""Structured Pruning Parallel Residual Adapters, SPPaRA (Rebuffi et al. 2018;
sp_adapters v0.7.1 ``sp_adapters/sppara.py``).

A full pointwise matrix P (Co, Ci/G), initialised U(±init_range), on the kernel's centre tap: W' = W + centre(P).
Pruning removes the same rows and columns of P as of W, so a pruned conv keeps n_in·n_out learned weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import DEFAULT_INIT_RANGE, AdapterLayer, ConvAdapter, init_adapter_

__all__ = ["ParallelMatrix", "SPPaRAConv1d", "SPPaRAConv2d", "SPPaRAConv3d"]


class ParallelMatrix(nn.Module):
    """The learned SPPaRA matrix ``weight`` P (out, in); ``forward()`` returns it."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        init_range: float | None = DEFAULT_INIT_RANGE,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.init_range = init_range
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """P ~ U(±init_range) (kaiming_uniform_(a=√5) if init_range is falsy)."""
        init_adapter_(self.weight, self.init_range)

    def forward(self) -> Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class _SPPaRAConv(ConvAdapter):
    """SPPaRA on a conv. Conv only, as in the library."""

    adapter: ParallelMatrix

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        init_range: float | None = DEFAULT_INIT_RANGE,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            init_range=init_range,
            device=device,
            dtype=dtype,
        )

    def _attach_adapter(self, init_range: float | None) -> None:
        self.adapter = ParallelMatrix(
            self._in_size, self._out_size, init_range, device=self.weight.device, dtype=self.weight.dtype
        )
        self.rank = None  # full-rank: the count does not depend on a rank
        self.init_range = init_range

    def _adapter_count(self, n_in: int, n_out: int) -> int:
        return n_in * n_out

    @classmethod
    def from_module(cls, layer: nn.Module, init_range: float | None = DEFAULT_INIT_RANGE) -> AdapterLayer:
        """Adapt ``layer``: W cloned and frozen, b cloned as a new trainable Parameter, same device and dtype.

        Raises ``ValueError`` for kernels that are not square and odd (the converters catch it).
        """
        return cls._build_from(layer, init_range=init_range)


class SPPaRAConv1d(_SPPaRAConv, nn.Conv1d):
    """nn.Conv1d with frozen W and a full pointwise centre-tap adapter P."""

    _plain = nn.Conv1d


class SPPaRAConv2d(_SPPaRAConv, nn.Conv2d):
    """nn.Conv2d with frozen W and a full pointwise centre-tap adapter P."""

    _plain = nn.Conv2d


class SPPaRAConv3d(_SPPaRAConv, nn.Conv3d):
    """nn.Conv3d with frozen W and a full pointwise centre-tap adapter P."""

    _plain = nn.Conv3d
