"""The step protocol shared by every continual module.

A continual module computes the same function as its ``torch.nn`` counterpart in three ways:

* ``forward(clip)``: offline, on a clip ``(B, C, T, *spatial)``, with the counterpart's weights and keys;
* ``forward_step(step)``: online, on one time slice ``(B, C, *spatial)``; returns the output for the newest
  complete window, or ``None`` while warming up and on skipped strided steps;
* ``forward_steps(clip, pad_end=False)``: steps through a clip and stacks the non-None outputs on dim 2.

Output frame ``i`` of ``forward`` is emitted by the step at input index ``delay + i * stride[0]``. Stepping a
clip therefore yields the prefix of ``forward``'s frames whose windows end inside the clip; ``pad_end=True``
also feeds the end padding (then forgets it), so that it equals ``forward`` exactly.

State lives in tensors written in place when autograd does not need the history, so a warmed-up step can be
captured in a CUDA graph; step counters are Python ints, so a step never synchronises with the device.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CALL_MODES",
    "CoModule",
    "StatefulModule",
    "call_mode",
    "check_fill",
    "clone_state",
    "in_place_ok",
    "stack_steps",
    "store",
]

FILLS = ("zeros", "replicate")


def check_fill(temporal_fill: str) -> str:
    if temporal_fill not in FILLS:
        raise ValueError(f"temporal_fill must be one of {FILLS}, got {temporal_fill!r}")
    return temporal_fill


def in_place_ok(*tensors: Tensor) -> bool:
    """Whether state tensors may be overwritten in place without breaking autograd or inference mode."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return torch.is_inference_mode_enabled() or not any(t.is_inference() for t in tensors)


def store(buffer: Tensor | None, value: Tensor) -> Tensor:
    """Write ``value`` into ``buffer`` in place when that is safe, else return ``value`` itself.

    In place keeps the state's addresses fixed (CUDA-graph replay reads and writes the same memory); it is
    unsafe when autograd may need the old values, and impossible for inference tensors outside inference mode.
    """
    if (
        buffer is None
        or buffer.shape != value.shape
        or buffer.dtype != value.dtype
        or buffer.device != value.device
        or not in_place_ok(buffer, value)
    ):
        return value
    buffer.copy_(value)
    return buffer


def clone_state(state: Any) -> Any:
    """Deep-copy a (nested) state so that later in-place steps cannot change it."""
    if isinstance(state, Tensor):
        return state.clone()
    if isinstance(state, list | tuple):
        return type(state)(clone_state(s) for s in state)
    if isinstance(state, dict):
        return {k: clone_state(v) for k, v in state.items()}
    return state


CALL_MODES = ("forward", "forward_steps", "forward_step")
_MODE_STACK: ContextVar[tuple[str, ...]] = ContextVar("call_mode_stack", default=())


def _as_mode(mode: str | int) -> str:
    if isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode < len(CALL_MODES):
        return CALL_MODES[mode]
    if mode in CALL_MODES:
        return str(mode)
    raise ValueError(f"call_mode must be one of {CALL_MODES} or their index 0-2, got {mode!r}")


class call_mode(contextlib.ContextDecorator):
    """Temporarily make ``module(x)`` call ``forward_step`` or ``forward_steps`` on every continual module.

    Contexts nest: leaving an inner one restores the outer one's mode.
    """

    def __init__(self, mode: str | int) -> None:
        self.mode = _as_mode(mode)
        self._tokens: list[Any] = []

    def __enter__(self) -> call_mode:
        self._tokens.append(_MODE_STACK.set((*_MODE_STACK.get(), self.mode)))
        return self

    def __exit__(self, *exc: object) -> None:
        _MODE_STACK.reset(self._tokens.pop())


class CoModule:
    """Mixin that marks a ``torch.nn.Module`` as continual and gives the generic stepping loops.

    Subclasses implement ``forward``, ``forward_step``, ``get_state``, ``set_state``, ``clean_state`` and the
    temporal properties. ``receptive_field``, ``stride`` and ``padding`` follow the torch conventions with the
    temporal entry first (``stride[0]``, ``padding[0]``).
    """

    @property
    def receptive_field(self) -> int:
        return 1

    @property
    def delay(self) -> int:
        """Number of steps consumed before the first output."""
        return self.receptive_field - 1 - self.padding[0]

    # Plain class attributes, not properties: torch layers assign their own tuples in ``__init__``.
    stride: tuple[int, ...] = (1,)
    padding: tuple[int, ...] = (0,)

    # --- call dispatch -----------------------------------------------------------------------------
    @property
    def call_mode(self) -> str:
        """What ``module(x)`` runs: ``forward`` (default), ``forward_steps`` or ``forward_step``."""
        stack = _MODE_STACK.get()
        return stack[-1] if stack else self.__dict__.get("_call_mode", "forward")

    @call_mode.setter
    def call_mode(self, mode: str | int) -> None:
        value = _as_mode(mode)
        modules = self.modules() if isinstance(self, nn.Module) else [self]
        for m in modules:
            if isinstance(m, CoModule):
                m.__dict__["_call_mode"] = value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        mode = self.call_mode
        if mode == "forward":
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        return getattr(self, mode)(*args, **kwargs)

    # --- stepping ---------------------------------------------------------------------------------
    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor | None:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward_step")

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        """Step through ``clip`` (time on dim 2) and stack the non-None outputs on dim 2."""
        saved = None if update_state else self.get_state()
        outputs = [y for t in range(clip.shape[2]) if (y := self.forward_step(clip[:, :, t])) is not None]
        if pad_end and clip.shape[2] > 0:
            outputs.extend(self._flush(clip[:, :, -1]))
        if not update_state:
            self.set_state(saved)
        return stack_steps(outputs)

    def _flush(self, last_step: Tensor) -> list[Tensor]:
        """Outputs of the end padding after ``last_step``; the state is left as before."""
        count = self._end_padding()
        if count == 0:
            return []
        saved = self.get_state()
        frame = self._padding_step(last_step)
        outputs = [y for _ in range(count) if (y := self.forward_step(frame)) is not None]
        self.set_state(saved)
        return outputs

    def _padding_step(self, last_step: Tensor) -> Tensor:
        """One end-padding step: zeros, or the last step again for ``temporal_fill="replicate"``."""
        if getattr(self, "temporal_fill", "zeros") == "replicate":
            return last_step
        return torch.zeros_like(last_step)

    def _end_padding(self) -> int:
        """How many padding steps follow the last input when flushing."""
        return self.padding[0]

    # --- state -------------------------------------------------------------------------------------
    def _apply(self, *args: Any, **kwargs: Any) -> Any:
        # .to()/.cuda()/.half() would leave the state on the old device or dtype: start a fresh stream.
        self.clean_state()
        return super()._apply(*args, **kwargs)  # type: ignore[misc]

    def get_state(self) -> Any:
        return None

    def set_state(self, state: Any) -> None:
        return None

    def clean_state(self) -> None:
        return None

    def warm_up(self, step_shape: tuple[int, ...], dtype: torch.dtype | None = None) -> None:
        """Feed ``delay`` zero steps, so that the next step produces an output."""
        param = next(iter(self.parameters()), None) if isinstance(self, nn.Module) else None
        device = param.device if param is not None else None
        dtype = dtype or (param.dtype if param is not None else torch.float32)
        zeros = torch.zeros(step_shape, device=device, dtype=dtype)
        for _ in range(self.delay):
            self.forward_step(zeros)


def stack_steps(outputs: list[Any]) -> Any:
    """Stack step outputs on a new time dim 2; lists of streams are stacked stream by stream."""
    if not outputs:
        return None
    if isinstance(outputs[0], list | tuple):
        return [stack_steps([o[i] for o in outputs]) for i in range(len(outputs[0]))]
    return torch.stack(outputs, dim=2)


class StatefulModule(CoModule):
    """A leaf module whose state is a fixed set of named attributes plus a step counter ``_t``.

    ``_state_names`` lists the tensor (or None) attributes; ``_t`` counts the steps seen since ``clean_state``
    until the window is full, then cycles through the ``stride`` phases (see ``_tick``). ``get_state`` returns
    clones, ``set_state`` stores clones: a snapshot is never changed by later steps and can be restored any
    number of times.
    """

    _state_names: tuple[str, ...] = ()

    def _init_state_attrs(self) -> None:
        for name in self._state_names:
            setattr(self, name, None)
        self._t = 0
        self.__dict__["_t_base"] = None  # recomputed lazily: the temporal properties may change before use

    def get_state(self) -> tuple[Any, ...]:
        return (*(clone_state(getattr(self, n)) for n in self._state_names), self._t)

    def set_state(self, state: Any) -> None:
        if state is None:
            self.clean_state()
            return
        if len(state) != len(self._state_names) + 1:
            raise ValueError(
                f"{type(self).__name__}.set_state expects {len(self._state_names) + 1} entries "
                f"({', '.join(self._state_names)}, step count), got {len(state)}"
            )
        for name, value in zip(self._state_names, state[:-1]):
            setattr(self, name, clone_state(value))
        self._t = int(state[-1])

    def clean_state(self) -> None:
        self._init_state_attrs()

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor | None:
        if update_state:
            return self._step(step)
        saved = self.get_state()
        out = self._step(step)
        self.set_state(saved)
        return out

    def _step(self, step: Tensor) -> Tensor | None:
        """One step that updates the state; returns the newest output or None."""
        raise NotImplementedError

    def _tick(self) -> int:
        """Index of the current step; advances the counter.

        Past ``max(delay, receptive_field - 1)`` only the phase modulo the stride matters, so the counter
        cycles there: a long stream keeps a small int, and ``torch.compile`` sees at most ``stride`` values
        (it specialises on int attributes) instead of recompiling at every step.
        """
        state = self.__dict__  # plain dict writes: nn.Module.__setattr__ is slow on a per-step path
        t = state["_t"]
        base = state.get("_t_base")
        if base is None:
            base = state["_t_base"] = max(self.delay, self.receptive_field - 1)
        nxt = t + 1
        state["_t"] = nxt if nxt <= base else base + (nxt - base) % self.stride[0]
        return t

    def _emits(self, t: int) -> bool:
        """Whether the step with index ``t`` (0-based) completes an on-stride window."""
        d = self.delay
        return t >= d and (t - d) % self.stride[0] == 0


def set_temporal_fill(module: nn.Module, temporal_fill: str) -> int:
    """Set ``temporal_fill`` on every continual module of a tree and start fresh streams; returns how many."""
    check_fill(temporal_fill)
    changed = 0
    for m in module.modules():
        if isinstance(m, CoModule) and hasattr(m, "temporal_fill"):
            m.temporal_fill = temporal_fill
            changed += 1
    _clean(module)
    return changed


def set_temporal_window(module: nn.Module, temporal_window: int) -> int:
    """Set the window of every windowed pool (``temporal_window``) of a tree, e.g. to extend a global average
    pool beyond the training clip length, and start fresh streams; returns how many pools changed."""
    if temporal_window < 1:
        raise ValueError(f"temporal_window must be a positive number of frames, got {temporal_window}")
    pools = [m for m in module.modules() if isinstance(m, CoModule) and hasattr(m, "temporal_window")]
    if not pools:
        raise ValueError(f"{type(module).__name__} has no pool with a temporal_window to set")
    for m in pools:
        m.temporal_window = temporal_window
    _clean(module)
    return len(pools)


def _clean(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, CoModule):
            m.clean_state()
