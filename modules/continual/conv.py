"""Continual convolutions (Hedegaard & Iosifidis, "Continual 3D Convolutional Neural Networks", arXiv 2106.00050).

A step convolves the newest frame with all ``k`` temporal taps at once: one spatial convolution whose output
channels are the ``(C_out, k)`` pairs, i.e. the multiply-accumulates of exactly one output frame of the regular
convolution. Tap ``l`` (``y[:, :, l] = W[k-1-l] * x_t``) contributes to the output ``l * dilation`` steps ahead.
Those contributions are summed into an accumulator of the ``r - 1`` upcoming outputs (``r`` the temporal
receptive field): the output of a step is ``y[:, :, 0] + acc[0] + bias``, after which the accumulator shifts by
one step. Compared with caching input frames, this stores output-side partial sums and never recomputes a tap.

On CPU, depthwise convolutions (``groups == in_channels``, as every temporal conv of X3D) instead keep the last ``r``
input frames and convolve that window once per emitted output: the same multiply-accumulates (each frame meets
each tap once), but one depthwise call instead of a ``k``-times wider one plus ``k`` accumulator adds, and for
3-D convs in the channels-last layout, which CPU (oneDNN) depthwise kernels run several times faster.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import StatefulModule, check_fill, in_place_ok, ordinary_tensors
from .convert import UnsupportedModuleError, check_build_kwargs, register

__all__ = ["DEPTHWISE_STEPS", "Conv1d", "Conv2d", "Conv3d", "set_depthwise_step"]

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


def _pointwise_conv(x: Tensor, w: Tensor) -> Tensor:
    """``conv(x, w)`` for a 1x1 kernel as one matrix product, keeping ``x``'s memory layout."""
    w2 = w.flatten(1)  # (C_out, C_in)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return F.linear(x.permute(0, 2, 3, 1), w2).permute(0, 3, 1, 2)  # channels stay innermost
    return torch.matmul(w2, x.flatten(2)).view(x.shape[0], w.shape[0], *x.shape[2:])


def _unrolled_depthwise(
    x: Tensor, w: Tensor, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], multiplier: int
) -> Tensor:
    """A depthwise convolution (``groups`` = input channels, ``multiplier`` outputs per channel, weight
    ``(C * multiplier, 1, *k)``, zero padding) as a sum of shifted products: element-wise work that inductor fuses
    into one generated kernel with what surrounds it, where a convolution stays a library call of its own."""
    if any(padding):
        x = F.pad(x, tuple(p for p in reversed(padding) for _ in range(2)))
    if multiplier > 1:
        x = x.repeat_interleave(multiplier, dim=1)  # output channel c * m + l reads input channel c
    kernel = w.shape[2:]
    size = [(x.shape[2 + i] - dilation[i] * (k - 1) - 1) // stride[i] + 1 for i, k in enumerate(kernel)]
    out: Tensor | None = None
    for offsets in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in zip(offsets, dilation, stride, size))
        term = x[(slice(None), slice(None), *window)] * w[(slice(None), 0, *offsets)].view(1, -1, *(1,) * len(size))
        out = term if out is None else out + term
    assert out is not None
    return out


#: how the step of a depthwise convolution with a spatial kernel runs (``set_depthwise_step``)
DEPTHWISE_STEPS = ("conv", "unrolled")


def set_depthwise_step(net: nn.Module, mode: str) -> int:
    """How every continual depthwise convolution in ``net`` with a spatial kernel larger than 1 steps: ``"conv"``
    (default: a library convolution; on CPU over a window of input frames) or ``"unrolled"`` (partial sums whose
    per-frame products are shifted element-wise multiply-adds, ``_unrolled_depthwise``: slower eagerly, for
    compilers that fuse them). Outputs are the same up to float rounding. Restarts the stream of every layer it
    changes (their states differ in form); returns how many layers it set."""
    if mode not in DEPTHWISE_STEPS:
        raise ValueError(f"unknown depthwise step {mode!r}: choose one of {DEPTHWISE_STEPS}")
    changed = 0
    for module in net.modules():
        if isinstance(module, _ContinualConv) and module._depthwise_spatial:
            module.depthwise_step = mode
            module.clean_state()
            changed += 1
    return changed


def _cache_key(kind: str, w: Tensor) -> tuple[Any, ...] | None:
    """What identifies a derived copy of the weight ``w``, or None when it must not be cached: autograd may need a
    fresh graph, or ``w`` is an inference tensor (built under ``torch.inference_mode``), which has no version
    counter to reveal in-place updates (e.g. ``load_state_dict`` under inference mode). Nor while torch.export or
    torch.compile traces: ``w`` is then a fake tensor without data (and a constant of the traced program)."""
    if (torch.is_grad_enabled() and w.requires_grad) or w.is_inference() or torch.compiler.is_compiling():
        return None
    # data_ptr catches a replaced weight, the version counter an in-place update.
    return (kind, w.data_ptr(), w._version, w.dtype, w.device)


class _ContinualConv(StatefulModule):
    """Shared implementation of ``Conv1d/2d/3d``; mixed in before the ``torch.nn`` class."""

    _state_names = ("_acc", "_buf")
    _nd: int
    #: "conv" or "unrolled": see ``set_depthwise_step``
    depthwise_step = "conv"

    def _setup(self, temporal_fill: str | None) -> None:
        ordinary_tensors(self, recurse=False)  # built under inference_mode: steppable and loadable in any mode
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

    @property
    def _pointwise(self) -> bool:
        """A spatially 1x1, unstrided, ungrouped step: a matrix product over channels (no im2col, no oneDNN
        layout reorders: the conv kernels' per-call cost dominates these small products on CPU)."""
        return (
            self._nd > 1
            and self.groups == 1
            and all(k == 1 for k in self.kernel_size[1:])
            and all(s == 1 for s in self.stride[1:])
            and not any(self.padding[1:])
        )

    @property
    def _depthwise_spatial(self) -> bool:
        """Depthwise (one group per input channel) with a spatial kernel larger than 1."""
        return self._nd > 1 and self.groups == self.in_channels and any(k > 1 for k in self.kernel_size[1:])

    @property
    def _buffered(self) -> bool:
        """Whether steps keep an input window (depthwise convs with a temporal kernel, on CPU) instead of partial
        sums. On CUDA the partial sums are faster: cuDNN's channels-last 3-D depthwise kernels are slow (a CoX3D-S
        step replayed as a CUDA graph ran at 348 frames/s with windows, 748 with partial sums, on an H200)."""
        return (
            self.groups > 1
            and self.groups == self.in_channels
            and self.kernel_size[0] > 1
            and self.weight.device.type == "cpu"
            and self.depthwise_step == "conv"
        )

    # --- temporal properties -------------------------------------------------------------------------
    @property
    def receptive_field(self) -> int:
        return self.dilation[0] * (self.kernel_size[0] - 1) + 1

    # --- checks (once per stream) ----------------------------------------------------------------------
    def _check_step_form(self, step: Tensor) -> None:
        if step.dim() == self._nd + 1 and step.shape[1] == self.in_channels:
            return
        spatial = ("", ", L", ", H, W")[self._nd - 1]
        hint = (
            ": that is a clip; step through it with forward_steps(clip), or run forward(clip)"
            if step.dim() == self._nd + 2
            else ""
        )
        raise ValueError(
            f"{type(self).__name__}.forward_step expects a step (B, C={self.in_channels}{spatial}), a clip's time "
            f"slice, got {tuple(step.shape)}{hint}"
        )

    def _state_spec(self) -> dict[str, tuple[Any, ...]]:
        r, spatial = self.receptive_field, self._nd - 1
        # The input window holds steps as given unless they are padded first (see _window_step).
        padded = self.padding_mode != "zeros" and any(self.padding[1:])
        window_spatial = (None,) * spatial if padded else tuple(f"s{2 + i}" for i in range(spatial))
        return {
            "_acc": (r - 1, "s0", self.out_channels, *(None,) * spatial),
            "_buf": ("s0", self.in_channels, r, *window_spatial),
        }

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
        """The weight as ``(k * C_out, C_in / groups, *k_spatial)`` with taps reversed, cached when frozen."""
        w = self.weight
        if self.kernel_size[0] == 1:
            return w.squeeze(2)  # one tap: a view, nothing to cache
        key = _cache_key("taps", w)
        if key is not None and self._weight_cache is not None and self._weight_cache[0] == key:
            return self._weight_cache[1]
        k = self.kernel_size[0]
        taps = w.flip(2)  # tap l = W[k - 1 - l] meets the output l steps ahead
        if self.groups == 1:
            step_w = taps.transpose(0, 2).transpose(1, 2).reshape(k * w.shape[0], w.shape[1], *w.shape[3:])
        else:  # channel-major keeps every output channel's taps inside its group
            step_w = taps.transpose(1, 2).reshape(w.shape[0] * k, w.shape[1], *w.shape[3:])
        if key is not None:
            self._weight_cache = (key, step_w)
        return step_w

    def _frame_conv(self, step: Tensor) -> tuple[Tensor, ...]:
        """All temporal taps applied to one step: ``k`` tensors ``(B, C_out, *S_out)``, tap ``l`` first meeting
        the output ``l * dilation`` steps ahead."""
        if self.padding_mode != "zeros" and any(self.padding[1:]):
            step = F.pad(step, self._spatial_pad(), mode=self.padding_mode)
            padding: Any = 0
        else:
            padding = self.padding[1:]
        w = self._step_weight()
        if self._pointwise:
            y = _pointwise_conv(step, w)
        elif self._nd == 1:
            y = (
                F.linear(step, w)
                if self.groups == 1
                else F.conv1d(step.unsqueeze(-1), w.unsqueeze(-1), groups=self.groups).squeeze(-1)
            )
        elif self.depthwise_step == "unrolled" and self._depthwise_spatial:
            pads = (0,) * (self._nd - 1) if isinstance(padding, int) else padding
            y = _unrolled_depthwise(step, w, self.stride[1:], pads, self.dilation[1:], w.shape[0] // self.groups)
        else:
            conv = _SPATIAL_CONV[self._nd - 1]
            y = conv(step, w, None, self.stride[1:], padding, self.dilation[1:], self.groups)
        k = self.kernel_size[0]
        if self.groups == 1:  # tap-major channels: each tap is a contiguous block
            return y.view(y.shape[0], k, self.out_channels, *y.shape[2:]).unbind(1)
        return y.view(y.shape[0], self.out_channels, k, *y.shape[2:]).unbind(2)

    def _bias_view(self) -> Tensor | None:
        return None if self.bias is None else self.bias.view(-1, *(1,) * (self._nd - 1))

    def _initial_acc(self, taps: tuple[Tensor, ...]) -> Tensor:
        """Sums for the next ``r - 1`` outputs, ``(r - 1, B, C_out, *S)``, each already holding the bias.

        With ``replicate`` the past is copies of the first frame, which meet tap ``l`` of every output fewer
        than ``l * d`` steps ahead.
        """
        acc = taps[0].new_zeros(self.receptive_field - 1, *taps[0].shape)
        bias = self._bias_view()
        if bias is not None:
            acc += bias
        if self.temporal_fill == "replicate":
            d = self.dilation[0]
            for lag in range(1, self.kernel_size[0]):
                acc[: lag * d] += taps[lag]
        return acc

    def _shift_plan(self) -> list[tuple[int, int | None]]:
        """For each slot but the last: the tap added while it takes over the next slot's sum."""
        d = self.dilation[0]
        return [(j, (j + 1) // d if (j + 1) % d == 0 else None) for j in range(self.receptive_field - 2)]

    def _advance(self, acc: Tensor, taps: tuple[Tensor, ...]) -> Tensor:
        """Shift the accumulator one step and add the newest frame's contributions (and the bias, once, as the
        newest output's sum is opened)."""
        bias = self._bias_view()
        plan = self.__dict__.get("_plan") or self.__dict__.setdefault("_plan", self._shift_plan())
        if in_place_ok(acc, taps[0]):
            # Slot by slot from the oldest: slot j is rewritten before slot j + 1, which it reads.
            slots = self._slots(acc)
            for j, lag in plan:
                if lag is None:
                    slots[j].copy_(slots[j + 1])
                else:
                    torch.add(slots[j + 1], taps[lag], out=slots[j])
            if bias is None:
                slots[-1].copy_(taps[-1])
            else:
                torch.add(taps[-1], bias, out=slots[-1])
            return acc
        sums = [acc[j + 1] if lag is None else acc[j + 1] + taps[lag] for j, lag in plan]
        sums.append(taps[-1] if bias is None else taps[-1] + bias)
        return torch.stack(sums)

    def _slots(self, acc: Tensor) -> tuple[Tensor, ...]:
        """Per-output views of the accumulator, cached while it is the same tensor."""
        cached = self.__dict__.get("_slot_views")
        if cached is None or cached[0] is not acc:
            cached = (acc, acc.unbind(0))
            self.__dict__["_slot_views"] = cached
        return cached[1]

    # --- online, depthwise: a window of input frames ---------------------------------------------------------
    def _window_format(self) -> torch.memory_format:
        return torch.channels_last_3d if self._nd == 3 else torch.contiguous_format

    def _window_weight(self) -> Tensor:
        """The weight in the window's memory format, cached while frozen (like ``_step_weight``)."""
        w = self.weight
        key = _cache_key("window", w)
        if key is not None and self._weight_cache is not None and self._weight_cache[0] == key:
            return self._weight_cache[1]
        out = w.contiguous(memory_format=self._window_format())
        if key is not None:
            self._weight_cache = (key, out)
        return out

    def _initial_window(self, frame: Tensor) -> Tensor:
        """``(B, C, r, *S)``: the stream's past as the fill (zeros, or copies of the first frame)."""
        shape = (frame.shape[0], frame.shape[1], self.receptive_field, *frame.shape[2:])
        fmt = self._window_format()
        window = torch.empty(shape, dtype=frame.dtype, device=frame.device, memory_format=fmt).zero_()
        if self.temporal_fill == "replicate":
            window.copy_(frame.unsqueeze(2).expand(shape))
        return window

    def _push(self, window: Tensor, frame: Tensor) -> Tensor:
        """Drop the oldest frame, append ``frame``; in place (fixed addresses) when that is safe."""
        if not in_place_ok(window, frame):
            return torch.cat([window[:, :, 1:], frame.unsqueeze(2)], 2)
        cached = self.__dict__.get("_window_views")
        if cached is None or cached[0] is not window:
            cached = (window, window.unbind(2))
            self.__dict__["_window_views"] = cached
        slots = cached[1]
        for j in range(len(slots) - 1):  # oldest first: slot j is overwritten after slot j - 1 read it
            slots[j].copy_(slots[j + 1])
        slots[-1].copy_(frame)
        return window

    def _window_step(self, step: Tensor) -> Tensor | None:
        if self.padding_mode != "zeros" and any(self.padding[1:]):
            step = F.pad(step, self._spatial_pad(), mode=self.padding_mode)
            padding: tuple[int, ...] = (0,) * self._nd
        else:
            padding = (0, *self.padding[1:])
        state = self.__dict__
        emit = self._emits(self._tick())
        window = state["_buf"]
        if window is None:
            window = self._initial_window(step)
        window = state["_buf"] = self._push(window, step)
        if not emit:
            return None
        stride = (1, *self.stride[1:])
        return self._conv(
            window, self._window_weight(), self.bias, stride, padding, self.dilation, self.groups
        ).squeeze(2)

    def _step_kind(self) -> str:
        """How this conv steps, decided once per stream (the device may change between streams)."""
        kind = self.__dict__.get("_kind")
        if kind is None:
            if self.depthwise_step == "unrolled" and self._depthwise_spatial:
                kind = "taps"
            elif self._buffered:
                kind = "window"
            elif self._pointwise and self.kernel_size[0] == 1:
                kind = "pointwise"
            elif self._nd == 3 and self.kernel_size[0] == 1:
                kind = "spatial"
            else:
                kind = "taps"
            self.__dict__["_kind"] = kind
        return kind

    def _init_state_attrs(self) -> None:
        super()._init_state_attrs()
        self.__dict__["_kind"] = None

    def _pointwise_weight(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(C_out, C_in)`` view of the weight, the bias and the bias as a column, cached while frozen: views are
        dispatched ops too, and a pointwise step is only a handful of them."""
        w = self.weight
        key = _cache_key("pointwise", w)
        if key is not None and self._weight_cache is not None and self._weight_cache[0] == key:
            return self._weight_cache[1]
        bias = self.bias
        out = (w.view(w.shape[0], w.shape[1]), bias, None if bias is None else bias.view(-1, 1))
        if key is not None:
            self._weight_cache = (key, out)
        return out

    def _pointwise_step(self, step: Tensor) -> Tensor | None:
        """A 1x1x1 conv: one matrix product with the bias added by it (``addmm``), in the step's memory layout."""
        if not self._emits(self._tick()):
            return None
        w, bias, bias_column = self._pointwise_weight()
        if step.dim() == 4 and step.is_contiguous(memory_format=torch.channels_last) and not step.is_contiguous():
            return F.linear(step.permute(0, 2, 3, 1), w, bias).permute(0, 3, 1, 2)  # channels stay innermost
        if step.shape[0] == 1 and step.is_contiguous():
            x = step.view(step.shape[1], -1)
            y = torch.mm(w, x) if bias_column is None else torch.addmm(bias_column, w, x)
            return y.view(1, w.shape[0], *step.shape[2:])
        y = _pointwise_conv(step, w)
        return y if bias is None else y + self._bias_view()

    def _spatial_weight(self) -> Tensor:
        """The one-tap weight as a 2-D conv's, channels-last on CPU (oneDNN then returns channels-last outputs, the
        layout the window steps and pointwise steps downstream work in), cached while frozen."""
        w = self.weight
        key = _cache_key("spatial", w)
        if key is not None and self._weight_cache is not None and self._weight_cache[0] == key:
            return self._weight_cache[1]
        out = w.squeeze(2)
        if w.device.type == "cpu":
            out = out.contiguous(memory_format=torch.channels_last)
        if key is not None:
            self._weight_cache = (key, out)
        return out

    def _spatial_step(self, step: Tensor) -> Tensor | None:
        """A 3-D conv with one temporal tap: a 2-D conv of the step, bias included."""
        if not self._emits(self._tick()):
            return None
        padding: Any = self.padding[1:]
        if self.padding_mode != "zeros" and any(padding):
            step, padding = F.pad(step, self._spatial_pad(), mode=self.padding_mode), 0
        return F.conv2d(
            step, self._spatial_weight(), self.bias, self.stride[1:], padding, self.dilation[1:], self.groups
        )

    def _step(self, step: Tensor) -> Tensor | None:
        kind = self._step_kind()
        if kind == "pointwise":
            return self._pointwise_step(step)
        if kind == "spatial":
            return self._spatial_step(step)
        if kind == "window":
            return self._window_step(step)
        taps = self._frame_conv(step)
        state = self.__dict__  # plain dict writes: nn.Module.__setattr__ is slow on a per-step path
        emit = self._emits(self._tick())
        if len(taps) == 1:
            if not emit:
                return None
            bias = self._bias_view()
            return taps[0] if bias is None else taps[0] + bias
        acc = state["_acc"]
        if acc is None:
            acc = self._initial_acc(taps)
        out = taps[0] + acc[0] if emit else None
        state["_acc"] = self._advance(acc, taps)
        return out

    # --- conversion ------------------------------------------------------------------------------------
    @classmethod
    def build_from(cls, module: nn.Module, temporal_fill: str | None = None, **kwargs: Any) -> _ContinualConv:
        """The continual twin of an ``nn.ConvNd`` with copied weights (structural keywords are refused)."""
        check_build_kwargs(f"{cls.__name__}.build_from", kwargs)
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
