"""Continual pooling: each step pools the newest frame spatially and keeps the pooled frames of one temporal
window in a shift register (``d * (k - 1) + 1`` frames for kernel ``k`` and dilation ``d``).

Temporal padding behaves as in torch: averages count zero frames (``count_include_pad``), maxima see
``-inf``. With ``temporal_fill="replicate"`` the padding (and the assumed past) is copies of the edge frames.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import StatefulModule, check_fill, in_place_ok
from .conv import replicate_pad_time
from .convert import UnsupportedModuleError, check_build_kwargs, register

__all__ = [
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
]


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,) * n


def _check_rank(module: StatefulModule, step: Tensor) -> None:
    """A step of an ``nd``-d pool is ``(B, C, *spatial)`` with ``nd - 1`` spatial dims."""
    nd = module._nd  # type: ignore[attr-defined]
    if step.dim() == nd + 1:
        return
    spatial = ("", ", L", ", H, W")[nd - 1]
    hint = ": that is a clip; use forward_steps(clip) or forward(clip)" if step.dim() == nd + 2 else ""
    raise ValueError(
        f"{type(module).__name__}.forward_step expects a step (B, C{spatial}), a clip's time slice, "
        f"got {tuple(step.shape)}{hint}"
    )


def _shift_in(buffer: Tensor, frame: Tensor) -> Tensor:
    """Drop the oldest frame of ``buffer`` (time on dim 2) and append ``frame``."""
    if in_place_ok(buffer, frame):
        if buffer.shape[2] > 1:
            buffer[:, :, :-1] = buffer[:, :, 1:].clone()
        buffer[:, :, -1] = frame
        return buffer
    return torch.cat((buffer[:, :, 1:], frame.unsqueeze(2)), dim=2)


class _ContinualPool(StatefulModule):
    """Shared stepping of the temporal window; subclasses define the spatial pooling and the reduction."""

    _state_names = ("_window",)
    _nd: int
    _is_max: bool

    def _setup(self, temporal_fill: str) -> None:
        n = self._nd
        self.kernel_size = _tuple(self.kernel_size, n)
        self.stride = _tuple(self.stride if self.stride is not None else self.kernel_size, n)
        self.padding = _tuple(self.padding, n)
        if self._is_max:
            self.dilation = _tuple(self.dilation, n)
        if getattr(self, "ceil_mode", False):
            raise ValueError(
                f"{type(self).__name__}: ceil_mode=True would pool a window that ends after the stream; "
                "use ceil_mode=False (pad the input instead)"
            )
        self.temporal_fill = check_fill(temporal_fill)
        self._pad_steps: int | None = None  # end-padding steps fed so far while flushing
        self._init_state_attrs()

    @property
    def _tdilation(self) -> int:
        return self.dilation[0] if self._is_max else 1

    @property
    def receptive_field(self) -> int:
        return self._tdilation * (self.kernel_size[0] - 1) + 1

    def _check_step_form(self, step: Tensor) -> None:
        _check_rank(self, step)

    def _state_spec(self) -> dict[str, tuple[Any, ...]]:
        # Pooled frames: the step's batch and channels, this window's length, pooled spatial sizes.
        return {"_window": ("s0", "s1", self.receptive_field, *(None,) * (self._nd - 1))}

    # --- offline ---------------------------------------------------------------------------------------
    def forward(self, clip: Tensor) -> Tensor:
        if self.temporal_fill == "zeros" or self.padding[0] == 0:
            return super().forward(clip)  # type: ignore[misc]
        pt = self.padding[0]
        padded = replicate_pad_time(clip, pt, pt)
        return self._pool_clip(padded, (0, *self.padding[1:]))

    # --- online ----------------------------------------------------------------------------------------
    def _spatial(self, step: Tensor) -> Tensor:
        raise NotImplementedError

    def _pool_clip(self, clip: Tensor, padding: tuple[int, ...]) -> Tensor:
        raise NotImplementedError

    def _padding_step(self, last_step: Tensor) -> Tensor:
        if self.temporal_fill == "zeros" and self._is_max:
            return torch.full_like(last_step, float("-inf"))
        return super()._padding_step(last_step)

    def _flush(self, last_step: Tensor) -> list[Tensor]:
        self._pad_steps = 0
        try:
            return super()._flush(last_step)
        finally:
            self._pad_steps = None

    def _initial_window(self, frame: Tensor) -> Tensor:
        shape = (frame.shape[0], frame.shape[1], self.receptive_field, *frame.shape[2:])
        if self.temporal_fill == "replicate":
            return frame.unsqueeze(2).expand(shape).clone()
        fill = float("-inf") if self._is_max else 0.0
        return frame.new_full(shape, fill)

    def _step(self, step: Tensor) -> Tensor | None:
        frame = self._spatial(step)
        if self._window is None:
            self._window = self._initial_window(frame)
        self._window = _shift_in(self._window, frame)
        if self._pad_steps is not None:
            self._pad_steps += 1
        t = self._tick()
        if not self._emits(t):
            return None
        taps = self._window[:, :, :: self._tdilation] if self._tdilation > 1 else self._window
        return self._reduce(taps, t)

    def _reduce(self, taps: Tensor, t: int) -> Tensor:
        if self._is_max:
            return taps.amax(dim=2)
        return taps.sum(dim=2) / self._divisor(t)

    def _divisor(self, t: int) -> float:
        """Temporal divisor of the window that ends at step ``t``, as torch's avg_pool computes it."""
        override = getattr(self, "divisor_override", None)
        if override:
            return float(override)
        k = self.kernel_size[0]
        if self.count_include_pad or self.temporal_fill == "replicate":  # replicated frames are data
            return float(k)
        # Left padding: taps before the first step (t is exact while t < k - 1, see _tick); right padding:
        # the newest taps while flushing.
        left = max(0, k - 1 - t)
        right = min(self._pad_steps or 0, k)
        return float(max(k - left - right, 1))

    @classmethod
    def build_from(cls, module: nn.Module, temporal_fill: str = "zeros", **kwargs: Any) -> _ContinualPool:
        check_build_kwargs(f"{cls.__name__}.build_from", kwargs)
        kwargs = {
            name: getattr(module, name)
            for name in ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad")
            if hasattr(module, name)
        }
        if getattr(module, "divisor_override", None) is not None:
            kwargs["divisor_override"] = module.divisor_override
        if getattr(module, "return_indices", False):
            raise UnsupportedModuleError(f"{module!r}: return_indices=True has no continual counterpart")
        return cls(**kwargs, temporal_fill=temporal_fill)


class _AvgPool(_ContinualPool):
    _is_max = False

    def _spatial(self, step: Tensor) -> Tensor:
        if self._nd == 1:
            return step
        override = getattr(self, "divisor_override", None)
        fn = F.avg_pool1d if self._nd == 2 else F.avg_pool2d
        # With an override torch divides the plain sum, whatever count_include_pad says.
        include_pad = self.count_include_pad or bool(override)
        kwargs: dict[str, Any] = {"ceil_mode": self.ceil_mode, "count_include_pad": include_pad}
        if self._nd == 3:
            # The spatial sum is divided once, by the override, after the temporal sum.
            kwargs["divisor_override"] = 1 if override else None
        out = fn(step, self.kernel_size[1:], self.stride[1:], self.padding[1:], **kwargs)
        if override and self._nd == 2:
            out = out * (self.kernel_size[1])  # avg_pool1d has no divisor_override: undo its mean
        return out

    def _pool_clip(self, clip: Tensor, padding: tuple[int, ...]) -> Tensor:
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[self._nd]
        kwargs: dict[str, Any] = {"ceil_mode": self.ceil_mode, "count_include_pad": self.count_include_pad}
        if self._nd > 1:
            kwargs["divisor_override"] = getattr(self, "divisor_override", None)
        return fn(clip, self.kernel_size, self.stride, padding, **kwargs)


class _MaxPool(_ContinualPool):
    _is_max = True

    def _spatial(self, step: Tensor) -> Tensor:
        if self._nd == 1:
            return step
        fn = F.max_pool1d if self._nd == 2 else F.max_pool2d
        return fn(step, self.kernel_size[1:], self.stride[1:], self.padding[1:], self.dilation[1:], self.ceil_mode)

    def _pool_clip(self, clip: Tensor, padding: tuple[int, ...]) -> Tensor:
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[self._nd]
        return fn(clip, self.kernel_size, self.stride, padding, self.dilation, self.ceil_mode)


def _make_avg(torch_cls: type[nn.Module], nd: int) -> type:
    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: int | tuple[int, ...] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        temporal_fill: str = "zeros",
    ) -> None:
        args: list[Any] = [kernel_size, stride, padding, ceil_mode, count_include_pad]
        if nd > 1:
            args.append(divisor_override)
        elif divisor_override is not None:
            raise ValueError("AvgPool1d has no divisor_override in torch")
        torch_cls.__init__(self, *args)
        self._setup(temporal_fill)

    doc = f"Continual ``{torch_cls.__name__}`` (time is dim 2); ``temporal_fill`` is ``zeros`` or ``replicate``."
    attrs = {"__init__": __init__, "_nd": nd, "__doc__": doc, "__module__": __name__}
    return type(torch_cls.__name__, (_AvgPool, torch_cls), attrs)


def _make_max(torch_cls: type[nn.Module], nd: int) -> type:
    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        ceil_mode: bool = False,
        temporal_fill: str = "zeros",
    ) -> None:
        torch_cls.__init__(self, kernel_size, stride, padding, dilation, False, ceil_mode)
        self._setup(temporal_fill)

    doc = (
        f"Continual ``{torch_cls.__name__}`` (time is dim 2, temporal dilation supported). Zero temporal_fill "
        "means torch's -inf padding."
    )
    attrs = {"__init__": __init__, "_nd": nd, "__doc__": doc, "__module__": __name__}
    return type(torch_cls.__name__, (_MaxPool, torch_cls), attrs)


AvgPool1d = _make_avg(nn.AvgPool1d, 1)
AvgPool2d = _make_avg(nn.AvgPool2d, 2)
AvgPool3d = _make_avg(nn.AvgPool3d, 3)
MaxPool1d = _make_max(nn.MaxPool1d, 1)
MaxPool2d = _make_max(nn.MaxPool2d, 2)
MaxPool3d = _make_max(nn.MaxPool3d, 3)


class _AdaptivePool(StatefulModule):
    """Adaptive spatial pooling with a sliding temporal window of ``temporal_window`` frames (stride 1).

    ``forward`` pools every window of ``temporal_window`` consecutive frames, so it equals the torch module
    with temporal output size 1 when the clip has exactly that many frames; ``temporal_window=None`` pools the
    whole clip (offline only).
    """

    _state_names = ("_window",)
    _nd: int
    _is_max: bool

    def _setup(self, temporal_window: int | None, temporal_fill: str) -> None:
        size = _tuple(self.output_size, self._nd)
        if size[0] not in (1, None):
            raise ValueError(
                f"{type(self).__name__}: the temporal output size must be 1 (got {size[0]}); "
                "pool a temporal window with temporal_window instead"
            )
        self._spatial_size = size[1:]
        if temporal_window is not None and temporal_window < 1:
            raise ValueError(f"temporal_window must be a positive number of frames, got {temporal_window}")
        self.temporal_window = temporal_window
        self.temporal_fill = check_fill(temporal_fill)
        self._init_state_attrs()

    @property
    def receptive_field(self) -> int:
        return self._require_window()

    def _check_step_form(self, step: Tensor) -> None:
        _check_rank(self, step)

    def _state_spec(self) -> dict[str, tuple[Any, ...]]:
        return {"_window": ("s0", "s1", self.temporal_window, *self._spatial_size)}

    def _require_window(self) -> int:
        if self.temporal_window is None:
            raise ValueError(
                f"{type(self).__name__} has temporal_window=None (whole clip), which a stream cannot pool; "
                "construct it with temporal_window=<frames>"
            )
        return self.temporal_window

    def _spatial(self, x: Tensor) -> Tensor:
        """Adaptive pooling of the spatial dims of a step ``(B, C, *S)``."""
        if self._nd == 2:
            fn = F.adaptive_max_pool1d if self._is_max else F.adaptive_avg_pool1d
        else:
            fn = F.adaptive_max_pool2d if self._is_max else F.adaptive_avg_pool2d
        size = tuple(s if s is not None else x.shape[2 + i] for i, s in enumerate(self._spatial_size))
        return fn(x, size)

    def forward(self, clip: Tensor) -> Tensor:
        if self.temporal_window is None or self.temporal_window == clip.shape[2]:
            size = (1, *(s if s is not None else clip.shape[3 + i] for i, s in enumerate(self._spatial_size)))
            fn = {
                (2, False): F.adaptive_avg_pool2d,
                (3, False): F.adaptive_avg_pool3d,
                (2, True): F.adaptive_max_pool2d,
                (3, True): F.adaptive_max_pool3d,
            }[(self._nd, self._is_max)]
            return fn(clip, size)
        b, c, t = clip.shape[:3]
        if t < self.temporal_window:
            raise ValueError(
                f"{type(self).__name__}(temporal_window={self.temporal_window}) got a clip of {t} frames, but each "
                f"output pools a window of {self.temporal_window}: give a clip of at least {self.temporal_window} "
                "frames, or set a shorter temporal_window (modules.continual.set_temporal_window)"
            )
        frames = self._spatial(clip.transpose(1, 2).reshape(b * t, c, *clip.shape[3:]))
        frames = frames.reshape(b, t, c, *frames.shape[2:]).transpose(1, 2)
        windows = frames.unfold(2, self.temporal_window, 1)
        return windows.amax(-1) if self._is_max else windows.mean(-1)

    def _step(self, step: Tensor) -> Tensor | None:
        n = self._require_window()
        frame = self._spatial(step)
        if self._window is None:
            shape = (frame.shape[0], frame.shape[1], n, *frame.shape[2:])
            self._window = (
                frame.unsqueeze(2).expand(shape).clone()
                if self.temporal_fill == "replicate"
                else (frame.new_zeros(shape))
            )
        self._window = _shift_in(self._window, frame)
        if self._tick() < n - 1:
            return None
        return self._window.amax(2) if self._is_max else self._window.mean(2)

    @classmethod
    def build_from(
        cls, module: nn.Module, temporal_window: int | None = None, temporal_fill: str = "zeros", **kwargs: Any
    ) -> _AdaptivePool:
        check_build_kwargs(f"{cls.__name__}.build_from", kwargs)  # e.g. the library's kernel_size: temporal_window
        return cls(module.output_size, temporal_window=temporal_window, temporal_fill=temporal_fill)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, temporal_window={self.temporal_window}"


def _make_adaptive(torch_cls: type[nn.Module], nd: int, is_max: bool) -> type:
    def __init__(self, output_size: Any, temporal_window: int | None = None, temporal_fill: str = "zeros") -> None:
        torch_cls.__init__(self, output_size)
        self._setup(temporal_window, temporal_fill)

    attrs = {
        "__init__": __init__,
        "_nd": nd,
        "_is_max": is_max,
        "__doc__": f"Continual ``{torch_cls.__name__}``. " + (_AdaptivePool.__doc__ or ""),
        "__module__": __name__,
    }
    return type(torch_cls.__name__, (_AdaptivePool, torch_cls), attrs)


AdaptiveAvgPool2d = _make_adaptive(nn.AdaptiveAvgPool2d, 2, False)
AdaptiveAvgPool3d = _make_adaptive(nn.AdaptiveAvgPool3d, 3, False)
AdaptiveMaxPool2d = _make_adaptive(nn.AdaptiveMaxPool2d, 2, True)
AdaptiveMaxPool3d = _make_adaptive(nn.AdaptiveMaxPool3d, 3, True)

for _torch_cls, _co_cls in (
    (nn.AvgPool1d, AvgPool1d),
    (nn.AvgPool2d, AvgPool2d),
    (nn.AvgPool3d, AvgPool3d),
    (nn.MaxPool1d, MaxPool1d),
    (nn.MaxPool2d, MaxPool2d),
    (nn.MaxPool3d, MaxPool3d),
    (nn.AdaptiveAvgPool2d, AdaptiveAvgPool2d),
    (nn.AdaptiveAvgPool3d, AdaptiveAvgPool3d),
    (nn.AdaptiveMaxPool2d, AdaptiveMaxPool2d),
    (nn.AdaptiveMaxPool3d, AdaptiveMaxPool3d),
):
    register(_torch_cls, _co_cls.build_from)
