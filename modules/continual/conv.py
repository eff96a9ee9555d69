"""Continual convolutions (Hedegaard & Iosifidis, "Continual 3D Convolutional Neural Networks", arXiv 2106.00050).

A step convolves the newest frame with all ``k`` temporal taps at once: one spatial convolution whose output
channels are the ``(C_out, k)`` pairs, i.e. the multiply-accumulates of exactly one output frame of the regular
convolution. Tap ``l`` (``y[:, :, l] = W[k-1-l] * x_t``) contributes to the output ``l * dilation`` steps ahead.
Those contributions are summed into an accumulator of the ``r - 1`` upcoming outputs (``r`` the temporal
receptive field): the output of a step is ``y[:, :, 0] + acc[0] + bias``, after which the accumulator shifts by
one step. Compared with caching input frames, this stores output-side partial sums and never recomputes a tap.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import StatefulModule, check_fill, in_place_ok
from .convert import UnsupportedModuleError, register

__all__ = ["Conv1d", "Conv2d", "Conv3d"]

_SPATIAL_CONV = {1: F.conv1d, 2: F.conv2d}


def replicate_pad_time(clip: Tensor, before: int, after: int) -> Tensor:
    """Pad dim 2 with copies of the first and last frames."""
    parts = []
    if before:
        parts.append(clip[:, :, :1].expand(-1, -1, before, *clip.shape[3:]))
    parts.append(clip)
    if after:
        parts.append(clip[:, :, -1:].expand(-1, -1, after, *clip.shape[3:]))
    return torch.cat(parts, dim=2) if len(parts) > 1 else clip


class _ContinualConv(StatefulModule):
    """Shared implementation of ``Conv1d/2d/3d``; mixed in before the ``torch.nn`` class."""

    _state_names = ("_acc",)
    _nd: int

    def _setup(self, temporal_fill: str | None) -> None:
        if isinstance(self.padding, str):
            if self.padding != "valid":
                raise ValueError(
                    f"{type(self).__name__}: padding={self.padding!r} is not supported; give integer paddings"
                )
            self.padding = (0,) * self._nd
        if temporal_fill is None:
            temporal_fill = "replicate" if self.padding_mode == "replicate" else "zeros"
        self.temporal_fill = check_fill(temporal_fill)
        if self.padding[0] > self.receptive_field - 1:
            raise ValueError(
                f"{type(self).__name__}: temporal padding {self.padding[0]} exceeds the receptive field minus "
                f"one ({self.receptive_field - 1}); such outputs would precede every input"
            )
        self._weight_cache: tuple[Any, Tensor] | None = None
        self._init_state_attrs()

    # --- temporal properties -------------------------------------------------------------------------
    @property
    def receptive_field(self) -> int:
        return self.dilation[0] * (self.kernel_size[0] - 1) + 1

    # --- offline ---------------------------------------------------------------------------------------
    def forward(self, clip: Tensor) -> Tensor:
        if self._matches_torch_padding():
            return super().forward(clip)  # type: ignore[misc]
        return self._conv(self._pad_clip(clip), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def _matches_torch_padding(self) -> bool:
        return (self.temporal_fill, self.padding_mode) in {("zeros", "zeros"), ("replicate", "replicate")}

    def _pad_clip(self, clip: Tensor) -> Tensor:
        pt = self.padding[0]
        clip = F.pad(clip, self._spatial_pad(), mode=self._spatial_mode()) if any(self.padding[1:]) else clip
        if self.temporal_fill == "replicate":
            return replicate_pad_time(clip, pt, pt)
        return F.pad(clip, (0, 0) * (self._nd - 1) + (pt, pt))

    def _spatial_pad(self) -> tuple[int, ...]:
        return tuple(p for p in reversed(self.padding[1:]) for _ in range(2))

    def _spatial_mode(self) -> str:
        return "constant" if self.padding_mode == "zeros" else self.padding_mode

    @staticmethod
    def _conv(x: Tensor, *args: Any) -> Tensor:
        raise NotImplementedError

    # --- online ----------------------------------------------------------------------------------------
    def _step_weight(self) -> Tensor:
        """The weight as ``(C_out * k, C_in / groups, *k_spatial)`` with taps reversed, cached when frozen."""
        w = self.weight
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        # Cached only when autograd cannot need a fresh graph; the version counter catches in-place updates.
        cacheable = not (torch.is_grad_enabled() and w.requires_grad)
        if cacheable and self._weight_cache is not None and self._weight_cache[0] == key:
            return self._weight_cache[1]
        k = self.kernel_size[0]
        step_w = w.flip(2).transpose(1, 2).reshape(w.shape[0] * k, w.shape[1], *w.shape[3:])
        if cacheable:
            self._weight_cache = (key, step_w)
        return step_w

    def _frame_conv(self, step: Tensor) -> Tensor:
        """All temporal taps applied to one step: ``(B, C_out, k, *S_out)``."""
        if self.padding_mode != "zeros" and any(self.padding[1:]):
            step = F.pad(step, self._spatial_pad(), mode=self.padding_mode)
            padding: Any = 0
        else:
            padding = self.padding[1:]
        w = self._step_weight()
        if self._nd == 1:
            y = (
                F.linear(step, w)
                if self.groups == 1
                else F.conv1d(step.unsqueeze(-1), w.unsqueeze(-1), groups=self.groups).squeeze(-1)
            )
        else:
            conv = _SPATIAL_CONV[self._nd - 1]
            y = conv(step, w, None, self.stride[1:], padding, self.dilation[1:], self.groups)
        return y.view(y.shape[0], self.out_channels, self.kernel_size[0], *y.shape[2:])

    def _initial_acc(self, y: Tensor) -> Tensor:
        """Sums for the next ``r - 1`` outputs from the assumed past: zeros, or copies of the first frame."""
        acc = y.new_zeros(y.shape[0], y.shape[1], self.receptive_field - 1, *y.shape[3:])
        if self.temporal_fill == "replicate":
            d = self.dilation[0]
            # A past frame equal to x_0 meets tap l of every output j < l * d steps ahead.
            for lag in range(1, self.kernel_size[0]):
                acc[:, :, : lag * d] += y[:, :, lag : lag + 1]
        return acc

    def _advance(self, acc: Tensor, y: Tensor) -> Tensor:
        """Shift the accumulator one step and add the newest frame's contributions."""
        d = self.dilation[0]
        if in_place_ok(acc, y):
            if d == 1:
                if acc.shape[2] > 1:
                    acc[:, :, :-1] = acc[:, :, 1:] + y[:, :, 1:-1]
                acc[:, :, -1] = y[:, :, -1]
            else:
                acc[:, :, :-1] = acc[:, :, 1:].clone()
                acc[:, :, -1] = 0
                acc[:, :, d - 1 :: d] += y[:, :, 1:]
            return acc
        if d == 1:
            return torch.cat((acc[:, :, 1:] + y[:, :, 1:-1], y[:, :, -1:]), dim=2)
        shifted = torch.cat((acc[:, :, 1:], torch.zeros_like(acc[:, :, :1])), dim=2)
        contributions = torch.zeros_like(shifted)
        contributions[:, :, d - 1 :: d] = y[:, :, 1:]
        return shifted + contributions

    def _step(self, step: Tensor) -> Tensor | None:
        y = self._frame_conv(step)
        emit = self._emits(self._t)
        self._t += 1
        if self.receptive_field == 1:
            out = y[:, :, 0] if emit else None
        else:
            if self._acc is None:
                self._acc = self._initial_acc(y)
            out = y[:, :, 0] + self._acc[:, :, 0] if emit else None
            self._acc = self._advance(self._acc, y)
        if out is not None and self.bias is not None:
            out = out + self.bias.view(-1, *(1,) * (out.dim() - 2))
        return out

    # --- conversion ------------------------------------------------------------------------------------
    @classmethod
    def build_from(cls, module: nn.Module, temporal_fill: str | None = None, **_: Any) -> _ContinualConv:
        """The continual twin of an ``nn.ConvNd`` with copied weights."""
        temporal_pad = 0 if isinstance(module.padding, str) else module.padding[0]
        if module.padding_mode in ("reflect", "circular") and temporal_pad > 0:
            raise UnsupportedModuleError(
                f"{module!r}: padding_mode={module.padding_mode!r} pads time with future frames, which a "
                "stream does not have; use zeros or replicate temporal padding"
            )
        out = cls(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            device=module.weight.device,
            dtype=module.weight.dtype,
            temporal_fill=temporal_fill,
        )
        out.load_state_dict(module.state_dict())
        return out.train(module.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temporal_fill={self.temporal_fill!r}"  # type: ignore[misc]


def _make_conv(torch_cls: type[nn.Module], nd: int, conv_fn: Any) -> type:
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        temporal_fill: str | None = None,
    ) -> None:
        torch_cls.__init__(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )  # fmt: skip
        self._setup(temporal_fill)

    doc = (
        f"Continual ``{torch_cls.__name__}``: same arguments, weights and ``forward``; time is dim 2.\n\n"
        "``temporal_fill`` (``zeros`` or ``replicate``; default follows ``padding_mode``) is what the stream's\n"
        "past is taken to be; ``forward`` pads time the same way, so stepping with ``pad_end=True`` equals it."
    )
    return type(
        torch_cls.__name__,
        (_ContinualConv, torch_cls),
        {
            "__init__": __init__,
            "_nd": nd,
            "_conv": staticmethod(conv_fn),
            "__doc__": doc,
            "__module__": __name__,
        },
    )


Conv1d = _make_conv(nn.Conv1d, 1, F.conv1d)
Conv2d = _make_conv(nn.Conv2d, 2, F.conv2d)
Conv3d = _make_conv(nn.Conv3d, 3, F.conv3d)

for _torch_cls, _co_cls in ((nn.Conv1d, Conv1d), (nn.Conv2d, Conv2d), (nn.Conv3d, Conv3d)):
    register(_torch_cls, _co_cls.build_from)
