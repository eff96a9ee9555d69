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
import operator
from collections.abc import Iterator
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
    "ordinary_tensors",
    "out_of_place",
    "stack_steps",
    "state_slots",
    "stateful_leaves",
    "store",
]

FILLS = ("zeros", "replicate")


def check_fill(temporal_fill: str) -> str:
    if temporal_fill not in FILLS:
        raise ValueError(f"temporal_fill must be one of {FILLS}, got {temporal_fill!r}")
    return temporal_fill


_OUT_OF_PLACE: ContextVar[bool] = ContextVar("continual_out_of_place", default=False)


@contextlib.contextmanager
def out_of_place() -> Iterator[None]:
    """Within this context every state update makes new tensors and leaves the old ones untouched, so a step is a
    pure function of its input and the state it read (what tracing for export needs: ``co.export``)."""
    token = _OUT_OF_PLACE.set(True)
    try:
        yield
    finally:
        _OUT_OF_PLACE.reset(token)


def in_place_ok(*tensors: Tensor) -> bool:
    """Whether state tensors may be overwritten in place without breaking autograd or inference mode."""
    if _OUT_OF_PLACE.get():
        return False
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


def ordinary_tensors(module: nn.Module, recurse: bool = True) -> nn.Module:
    """Replace the inference-tensor parameters and buffers of ``module`` (and, with ``recurse``, its children) by
    ordinary copies; returns ``module``.

    A module built under ``torch.inference_mode`` holds inference tensors, which autograd refuses (grad-mode
    steps fail), which cannot be updated outside inference mode (``load_state_dict`` fails) and which have no
    version counter (cached derived weights cannot see in-place updates). Ordinary tensors work in every mode,
    so continual layers convert their own tensors when built; the values are unchanged.
    """
    with torch.inference_mode(False):
        for m in module.modules() if recurse else (module,):
            for name, p in m._parameters.items():
                if p is not None and p.is_inference():
                    m._parameters[name] = nn.Parameter(p.clone(), requires_grad=p.requires_grad)
            for name, b in m._buffers.items():
                if b is not None and b.is_inference():
                    m._buffers[name] = b.clone()
    return module


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

    A stream is one batch of independent streams of one step shape, dtype and device: the first step after
    ``clean_state`` fixes them (host metadata, compared at every step without a device sync), and a step that
    differs is refused instead of being broadcast against, or silently mixed with, the state of another stream.
    ``_state_spec`` (optional) gives the expected shape of each state tensor, so that ``set_state`` refuses a
    state of another configuration and the first step after it must fit the restored streams.
    """

    _state_names: tuple[str, ...] = ()

    def _init_state_attrs(self) -> None:
        for name in self._state_names:
            setattr(self, name, None)
        self._t = 0
        self.__dict__["_t_base"] = None  # recomputed lazily: the temporal properties may change before use
        self.__dict__["_stream"] = None  # (shape, dtype, device) of the stream's steps, fixed by its first step

    def get_state(self) -> tuple[Any, ...]:
        return (*(clone_state(getattr(self, n)) for n in self._state_names), self._t)

    def set_state(self, state: Any) -> None:
        if state is None:
            self.clean_state()
            return
        self._check_state(state)
        for name, value in zip(self._state_names, state[:-1]):
            setattr(self, name, clone_state(value))
        self._t = operator.index(state[-1])
        self.__dict__["_stream"] = None  # the next step is checked against the restored state, then fixes it

    def clean_state(self) -> None:
        self._init_state_attrs()

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor | None:
        stream = self.__dict__.get("_stream")
        if stream is None:
            self._start_stream(step)
        elif step.shape != stream[0] or step.dtype != stream[1] or step.device != stream[2]:
            raise ValueError(_stream_mismatch(type(self).__name__, step, stream))
        if update_state:
            return self._step(step)
        saved = self.get_state()
        out = self._step(step)
        self.set_state(saved)
        self.__dict__["_stream"] = stream  # the peeked step told nothing new about the stream
        return out

    def _step(self, step: Tensor) -> Tensor | None:
        """One step that updates the state; returns the newest output or None."""
        raise NotImplementedError

    # --- stream and state checks ---------------------------------------------------------------------------
    def _check_step_form(self, step: Tensor) -> None:
        """Raise when ``step`` cannot be a step of this module (wrong rank, channels); run once per stream."""

    def _state_spec(self) -> dict[str, tuple[Any, ...]] | None:
        """Expected shape of each state tensor: per dim an int (this configuration's size), ``None`` (any), or
        ``"s<i>"``: dim ``i`` of the steps (``"s0"`` the batch), the same wherever it appears; a trailing
        ``...`` stands for the steps' remaining dims. ``None``: the shapes are not checked."""
        return None

    def _start_stream(self, step: Tensor) -> None:
        """Check the first step of a stream (its form; after ``set_state``, that it fits the restored state) and
        fix the stream's step shape, dtype and device."""
        if not isinstance(step, Tensor):
            return
        self._check_step_form(step)
        spec = self._state_spec()
        if spec is not None:
            for name, dims in spec.items():
                value = getattr(self, name)
                if value is not None:
                    self._check_fits_step(name, value, dims, step)
        self.__dict__["_stream"] = (step.shape, step.dtype, step.device)

    def _check_fits_step(self, name: str, value: Tensor, dims: tuple[Any, ...], step: Tensor) -> None:
        module = type(self).__name__
        if value.device != step.device:
            raise ValueError(
                f"{module}.forward_step got a step on device {step.device} but its state {name} is on "
                f"{value.device}: call clean_state() to start a stream on {step.device}."
            )
        for i, want in enumerate(_expand_spec(dims, value.dim())):
            if not (isinstance(want, str) and want.startswith("s")):
                continue
            k = int(want[1:])
            have = step.shape[k] if k < step.dim() else None
            if have != value.shape[i]:
                what = (
                    f"batch size {step.shape[0]} but its state holds {value.shape[i]} streams"
                    if k == 0
                    else (f"a step {tuple(step.shape)} that does not fit its state {name} {tuple(value.shape)}")
                )
                raise ValueError(
                    f"{module}.forward_step got {what} (set by set_state): call clean_state() before starting "
                    "a stream of another batch size or step shape, or restore a state of this stream."
                )

    def _check_state(self, state: Any) -> None:
        """Raise unless ``state`` is a state of this module's configuration (``get_state``'s structure)."""
        module, names = type(self).__name__, self._state_names
        if not isinstance(state, tuple | list) or len(state) != len(names) + 1:
            got = f"{len(state)}" if isinstance(state, tuple | list) else f"a {type(state).__name__}"
            raise ValueError(
                f"{module}.set_state expects {len(names) + 1} entries ({', '.join((*names, 'step count'))}), "
                f"got {got}: a state from get_state() of a {module} of the same configuration"
            )
        for name, value in zip(names, state[:-1]):
            if value is not None and not isinstance(value, Tensor):
                raise ValueError(f"{module}.set_state: {name} must be a tensor or None, got {type(value).__name__}")
        count = _step_count(state[-1])
        if count is None or count < 0:
            raise ValueError(f"{module}.set_state: the step count must be a non-negative int, got {state[-1]!r}")
        spec = self._state_spec()
        if spec is not None:
            self._check_state_shapes(dict(zip(names, state[:-1])), spec)

    def _check_state_shapes(self, values: dict[str, Tensor | None], spec: dict[str, tuple[Any, ...]]) -> None:
        module = type(self).__name__
        seen: dict[str, tuple[str, int]] = {}  # step dim -> (state name, size) where first seen
        for name, dims in spec.items():
            value = values.get(name)
            if value is None:
                continue
            expected = _expand_spec(dims, value.dim())
            shape = tuple(value.shape)
            fits = len(expected) == len(shape) and all(
                not isinstance(w, int) or w == s for w, s in zip(expected, shape)
            )
            if not fits:
                raise ValueError(
                    f"{module}.set_state: {name} has shape {shape}, but this {module} keeps "
                    f"{_describe_spec(dims)}: the state comes from a module of another configuration ({self!r:.200})"
                )
            for w, s in zip(expected, shape):
                if isinstance(w, str):
                    first = seen.setdefault(w, (name, s))
                    if first[1] != s:
                        raise ValueError(
                            f"{module}.set_state: {name} {shape} and {first[0]} disagree on step dim {w[1:]} "
                            f"({s} vs {first[1]}): the entries come from different streams"
                        )

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


def state_slots(module: nn.Module) -> list[tuple[StatefulModule, str]]:
    """Every state attribute of ``module`` as ``(leaf, attribute name)``, in the order of ``get_state``: the
    tensors a stream's state consists of (step counters aside), for code that feeds state explicitly. Walks the
    state tree, not the module tree: containers keep their aligning delays out of ``modules()`` (``_stateful``)."""
    return [(m, name) for m in stateful_leaves(module) for name in m._state_names]


def stateful_leaves(module: nn.Module) -> list[StatefulModule]:
    """The modules holding ``module``'s stream state in ``_state_names`` attributes, each once, in the order of
    ``get_state``: every ``StatefulModule``, and composites that keep a tensor of their own (e.g. a retroactive
    ``TransformerEncoderLayer``'s window of inputs)."""
    seen: dict[int, StatefulModule] = {}

    def walk(m: nn.Module) -> None:
        if isinstance(m, StatefulModule):
            seen.setdefault(id(m), m)
            return
        if getattr(m, "_state_names", ()):  # a composite that keeps a tensor of its own (its children walked too)
            seen.setdefault(id(m), m)  # type: ignore[arg-type]
        stateful = getattr(m, "_stateful", None)
        for child in stateful() if callable(stateful) else m.children():
            walk(child)

    walk(module)
    return list(seen.values())


def _step_count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _expand_spec(dims: tuple[Any, ...], rank: int) -> tuple[Any, ...]:
    """``dims`` with a trailing ``...`` replaced by step dims ``"s<j>"`` up to ``rank`` entries."""
    if not dims or dims[-1] is not Ellipsis:
        return dims
    head = dims[:-1]
    last = max((int(d[1:]) for d in head if isinstance(d, str)), default=-1)
    return (*head, *(f"s{last + 1 + j}" for j in range(max(rank - len(head), 0))))


def _describe_spec(dims: tuple[Any, ...]) -> str:
    """``("s0", 4, None, ...)`` as ``(B, 4, *, ...)``."""

    def one(d: Any) -> str:
        if d is Ellipsis:
            return "..."
        if d is None:
            return "*"
        if isinstance(d, str):
            return "B" if d == "s0" else f"step dim {d[1:]}"
        return str(d)

    return f"({', '.join(one(d) for d in dims)})"


def _stream_mismatch(module: str, step: Tensor, stream: tuple[torch.Size, torch.dtype, torch.device]) -> str:
    shape, dtype, device = stream
    diffs = []
    if step.shape != shape:
        diffs.append(
            f"batch size {step.shape[0]} vs {shape[0]}"
            if step.dim() == len(shape) and step.shape[1:] == shape[1:]
            else f"shape {tuple(step.shape)} vs {tuple(shape)}"
        )
    if step.dtype != dtype:
        diffs.append(f"dtype {step.dtype} vs {dtype}")
    if step.device != device:
        diffs.append(f"device {step.device} vs {device}")
    return (
        f"{module}.forward_step got a step {tuple(step.shape)} ({step.dtype}, device {step.device}) in a stream of "
        f"steps {tuple(shape)} ({dtype}, device {device}): {', '.join(diffs)}. Its state belongs to the other "
        "stream: call clean_state() before starting a stream of another batch size, dtype, device or shape."
    )


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
