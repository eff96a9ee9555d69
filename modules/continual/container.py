"""Containers: ``Sequential``, ``Broadcast``, ``Parallel``, ``Reduce``, ``BroadcastReduce``, ``Residual``, ``Lambda``.

Temporal properties compose: in a sequence, module ``i`` sees one input per ``S_i`` (the product of the
strides before it) steps, so ``delay = sum_i delay_i * S_i``, ``stride = prod_i s_i``,
``padding = sum_i p_i * S_i`` and the receptive field grows as ``r <- s_i * r + r_i - s_i`` from the back.
Parallel branches are aligned on the step at which they emit: with ``auto_delay`` every branch that would
emit earlier than the slowest one is followed by a ``Delay``. Outputs of aligned branches then pair by index,
in ``forward`` as in stepping.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import CoModule, stack_steps
from .convert import check_build_kwargs, continual, register
from .delay import Delay, Skip
from .flatten import flat_state_dict, flatten_state_dict
from .flatten import load_state_dict as _load_state_dict

__all__ = [
    "Broadcast",
    "BroadcastReduce",
    "Conditional",
    "ContainerModule",
    "Lambda",
    "Parallel",
    "Reduce",
    "Residual",
    "Sequential",
]

Stream = Tensor | list[Tensor]


def _as_co(module: nn.Module) -> nn.Module:
    return module if isinstance(module, CoModule) else continual(module)


def _tstride(module: nn.Module) -> int:
    return module.stride[0]


class ContainerModule(CoModule):
    """A continual module made of continual children: its state is the list of their states (``_stateful``, by
    default every continual child in order). Hand-written blocks (e.g. a residual block with named branches)
    subclass it and get ``get_state``/``set_state``/``clean_state`` and ``_snapshot_call`` for ``update_state``.
    """

    def get_state(self) -> list[Any]:
        return [m.get_state() for m in self._stateful()]

    def set_state(self, state: Any) -> None:
        if state is None:
            self.clean_state()
            return
        modules = self._stateful()
        if not isinstance(state, list | tuple):
            raise ValueError(
                f"{type(self).__name__}.set_state expects a list of {len(modules)} child states (from get_state()), "
                f"got {type(state).__name__}"
            )
        if len(state) != len(modules):
            raise ValueError(
                f"{type(self).__name__}.set_state expects {len(modules)} child states, got {len(state)}: the state "
                "comes from a module of another structure"
            )
        for module, child_state in zip(modules, state):
            module.set_state(child_state)

    def clean_state(self) -> None:
        for m in self._stateful():
            m.clean_state()

    def _stateful(self) -> list[nn.Module]:
        return [m for m in self.children() if isinstance(m, CoModule)]  # type: ignore[attr-defined]

    def _snapshot_call(self, fn: Callable[[], Any], update_state: bool) -> Any:
        if update_state:
            return fn()
        saved = self.get_state()
        try:
            return fn()
        finally:
            self.set_state(saved)

    def state_dict(self, *args: Any, flatten: bool = False, **kwargs: Any) -> Any:  # type: ignore[override]
        """``nn.Module.state_dict``; ``flatten=True`` (or ``with flatten.flat_state_dict:``) gives the keys the
        continual-inference library writes with ``state_dict(flatten=True)`` (see ``flatten.py``)."""
        nested = super().state_dict(*args, **kwargs)  # type: ignore[misc]
        # Children are called with a destination: only the outermost call flattens, inside a context.
        top = kwargs.get("destination") is None and not args
        if flatten or (flat_state_dict.active and top):
            return flatten_state_dict(self, nested, kwargs.get("prefix", ""))  # type: ignore[arg-type]
        return nested

    def load_state_dict(  # type: ignore[override]
        self, state_dict: Any, strict: bool = True, assign: bool = False, flatten: bool = False
    ) -> Any:
        """``nn.Module.load_state_dict`` that also takes the continual-inference library's keys: its nested keys,
        and with ``flatten=True`` (or ``with flatten.flat_state_dict:``) its flattened keys (see ``flatten.py``)."""
        return _load_state_dict(self, state_dict, strict=strict, assign=assign, flatten=flatten)  # type: ignore[arg-type]


class Sequential(ContainerModule, nn.Sequential):
    """``nn.Sequential`` whose children are converted to continual modules (same keys as the nn version)."""

    def __init__(self, *args: Any) -> None:
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            super().__init__(OrderedDict((k, _as_co(m)) for k, m in args[0].items()))
        else:
            super().__init__(*(_as_co(m) for m in args))

    def add_module(self, name: str, module: nn.Module | None) -> None:
        super().add_module(name, None if module is None else _as_co(module))

    def append(self, module: nn.Module) -> Sequential:
        return super().append(_as_co(module))

    @property
    def receptive_field(self) -> int:
        rf = 1
        for m in reversed(list(self)):
            rf = _tstride(m) * rf + m.receptive_field - _tstride(m)
        return rf

    @property
    def stride(self) -> tuple[int, ...]:  # type: ignore[override]
        return (functools.reduce(lambda a, m: a * _tstride(m), self, 1),)

    @property
    def padding(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self._accumulate(lambda m: m.padding[0]),)

    @property
    def delay(self) -> int:
        return self._accumulate(lambda m: m.delay)

    def _accumulate(self, value: Callable[[nn.Module], int]) -> int:
        total, scale = 0, 1
        for m in self:
            total += value(m) * scale
            scale *= _tstride(m)
        return total

    def forward_step(self, step: Stream, update_state: bool = True) -> Stream | None:
        def run() -> Stream | None:
            x: Any = step
            for m in self:
                x = m.forward_step(x)
                if x is None:
                    return None
            return x

        return self._snapshot_call(run, update_state)

    def forward_steps(self, clip: Stream, pad_end: bool = False, update_state: bool = True) -> Stream | None:
        """Each child steps through all outputs of the one before it, then flushes its own end padding."""

        def run() -> Stream | None:
            x: Any = clip
            for m in self:
                x = m.forward_steps(x, pad_end=pad_end)
                if x is None:
                    return None
            return x

        return self._snapshot_call(run, update_state)

    @classmethod
    def build_from(cls, module: nn.Sequential, **kwargs: Any) -> Sequential:
        check_build_kwargs("Sequential.build_from", kwargs)
        return cls(OrderedDict((name, continual(m, **kwargs)) for name, m in module.named_children()))


class Broadcast(ContainerModule, nn.Module):
    """Copy one stream into ``num_streams`` streams."""

    def __init__(self, num_streams: int) -> None:
        super().__init__()
        self.num_streams = num_streams

    def forward(self, clip: Tensor) -> list[Tensor]:
        return [clip] * self.num_streams

    def forward_step(self, step: Tensor, update_state: bool = True) -> list[Tensor]:
        return [step] * self.num_streams

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> list[Tensor]:
        return [clip] * self.num_streams

    def extra_repr(self) -> str:
        return str(self.num_streams)


_REDUCTIONS: dict[str, Callable[[list[Tensor]], Tensor]] = {
    "sum": lambda xs: functools.reduce(torch.add, xs),
    "mul": lambda xs: functools.reduce(torch.mul, xs),
    "max": lambda xs: functools.reduce(torch.maximum, xs),
    "concat": lambda xs: torch.cat(xs, dim=1),
}


def _reduction(reduce: str | Callable[[list[Tensor]], Tensor]) -> Callable[[list[Tensor]], Tensor]:
    if callable(reduce):
        return reduce
    if reduce not in _REDUCTIONS:
        raise ValueError(f"reduce must be one of {sorted(_REDUCTIONS)} or a callable, got {reduce!r}")
    return _REDUCTIONS[reduce]


def _check_clips(clips: Any, owner: str) -> None:
    """``forward`` of a reduction takes a list of clips ``(B, C, T, ...)``; steps go to ``forward_step``."""
    if not isinstance(clips, list | tuple) or not all(isinstance(c, Tensor) for c in clips):
        raise ValueError(f"{owner}.forward takes a list of clips (one per stream), got {type(clips).__name__}")
    flat = [tuple(c.shape) for c in clips if c.dim() < 3]
    if flat:
        raise ValueError(
            f"{owner}.forward takes clips (B, C, T, ...) with time on dim 2, got shapes {flat}; reduce steps "
            "(B, C, ...) with forward_step"
        )


def _check_lengths(clips: Sequence[Tensor], owner: str) -> None:
    lengths = [c.shape[2] for c in clips]
    if len(set(lengths)) > 1:
        raise ValueError(
            f"{owner}: branches give clips of different lengths {lengths}; give them equal temporal padding, "
            "or use Residual(..., residual_shrink='lagging'|'centered'|'leading') for a residual connection"
        )


class Reduce(ContainerModule, nn.Module):
    """Reduce a list of streams to one: ``sum``, ``mul``, ``max``, ``concat`` (channels) or a callable."""

    def __init__(self, reduce: str | Callable[[list[Tensor]], Tensor] = "sum") -> None:
        super().__init__()
        self.reduce_name = reduce if isinstance(reduce, str) else getattr(reduce, "__name__", "callable")
        self._reduce = _reduction(reduce)

    def forward(self, clips: list[Tensor]) -> Tensor:
        _check_clips(clips, type(self).__name__)
        _check_lengths(clips, type(self).__name__)
        return self._reduce(list(clips))

    def forward_step(self, steps: list[Tensor], update_state: bool = True) -> Tensor | None:
        if any(s is None for s in steps):
            return None
        return self._reduce(list(steps))

    def forward_steps(self, clips: list[Tensor], pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        if any(c is None for c in clips):
            return None
        return self.forward(clips)

    def extra_repr(self) -> str:
        return repr(self.reduce_name)


class _Branches(ContainerModule, nn.Module):
    """Branches plus the parameter-free ``Delay`` modules that align them (kept out of the state_dict keys)."""

    def _init_branches(self, modules: tuple[Any, ...], auto_delay: bool) -> None:
        named = modules[0].items() if len(modules) == 1 and isinstance(modules[0], OrderedDict) else None
        items = list(named) if named is not None else [(str(i), m) for i, m in enumerate(modules)]
        if not items:
            raise ValueError(f"{type(self).__name__} needs at least one branch")
        for name, m in items:
            self.add_module(name, _as_co(m))
        strides = {_tstride(m) for m in self._branches()}
        if len(strides) > 1:
            raise ValueError(f"{type(self).__name__}: branches have different temporal strides {sorted(strides)}")
        delays = [m.delay for m in self._branches()]
        # Stored in a plain list: the aligners have no weights, and registering them would add state_dict keys.
        self._aligners = [Delay(max(delays) - d) if auto_delay and d < max(delays) else None for d in delays]

    def _branches(self) -> list[nn.Module]:
        return [m for m in self.children()]

    def _stateful(self) -> list[nn.Module]:
        return self._branches() + [a for a in self._aligners if a is not None]

    def _library_segment(self, child_name: str) -> str:
        """The continual-inference library's path to a branch: an aligned one is ``Sequential(Delay, branch)``
        there, one level deeper (``flatten.py``)."""
        index = list(self._modules).index(child_name)
        return f"{child_name}.0" if self._aligners[index] is not None else child_name

    @property
    def delay(self) -> int:
        return max(m.delay + (a.delay if a else 0) for m, a in zip(self._branches(), self._aligners))

    @property
    def receptive_field(self) -> int:
        return max(m.receptive_field + (a.delay if a else 0) for m, a in zip(self._branches(), self._aligners))

    @property
    def stride(self) -> tuple[int, ...]:  # type: ignore[override]
        return (_tstride(self._branches()[0]),)

    @property
    def padding(self) -> tuple[int, ...]:  # type: ignore[override]
        return (max(m.padding[0] for m in self._branches()),)

    def _step_branches(self, steps: Sequence[Tensor]) -> list[Tensor] | None:
        outs = []
        for m, a, x in zip(self._branches(), self._aligners, steps):
            y = m.forward_step(x)
            if a is not None and y is not None:
                y = a.forward_step(y)
            outs.append(y)
        return None if any(y is None for y in outs) else outs

    def _steps_branches(self, clips: Sequence[Tensor], pad_end: bool) -> list[Tensor] | None:
        outs = []
        for m, a, x in zip(self._branches(), self._aligners, clips):
            y = m.forward_steps(x, pad_end=pad_end)
            if a is not None and y is not None:
                y = a.forward_steps(y, pad_end=pad_end)
            outs.append(y)
        return None if any(y is None for y in outs) else outs


class Parallel(_Branches):
    """Apply branch ``i`` to stream ``i`` of a list; returns the list of outputs."""

    def __init__(self, *modules: Any, auto_delay: bool = True) -> None:
        super().__init__()
        self._init_branches(modules, auto_delay)

    def forward(self, clips: list[Tensor]) -> list[Tensor]:
        return [m(x) for m, x in zip(self._branches(), clips)]

    def forward_step(self, steps: list[Tensor], update_state: bool = True) -> list[Tensor] | None:
        return self._snapshot_call(lambda: self._step_branches(steps), update_state)

    def forward_steps(self, clips: list[Tensor], pad_end: bool = False, update_state: bool = True) -> Any:
        return self._snapshot_call(lambda: self._steps_branches(clips, pad_end), update_state)


class BroadcastReduce(_Branches):
    """Feed one stream to every branch and reduce their outputs (``sum``, ``mul``, ``max``, ``concat``, callable)."""

    def __init__(
        self, *modules: Any, reduce: str | Callable[[list[Tensor]], Tensor] = "sum", auto_delay: bool = True
    ) -> None:
        super().__init__()
        self._init_branches(modules, auto_delay)
        self.reduce_name = reduce if isinstance(reduce, str) else getattr(reduce, "__name__", "callable")
        self._reduce = _reduction(reduce)

    def forward(self, clip: Tensor) -> Tensor:
        outs = [m(clip) for m in self._branches()]
        _check_lengths(outs, type(self).__name__)
        return self._reduce(outs)

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor | None:
        def run() -> Tensor | None:
            outs = self._step_branches([step] * len(self._aligners))
            return None if outs is None else self._reduce(outs)

        return self._snapshot_call(run, update_state)

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        def run() -> Tensor | None:
            outs = self._steps_branches([clip] * len(self._aligners), pad_end)
            if outs is None:
                return None
            _check_lengths(outs, type(self).__name__)
            return self._reduce(outs)

        return self._snapshot_call(run, update_state)

    def extra_repr(self) -> str:
        return f"reduce={self.reduce_name!r}"


_SHRINK_OFFSETS: dict[Any, Callable[[int], int]] = {
    "lagging": lambda excess: 0,
    "centered": lambda excess: excess // 2,
    True: lambda excess: excess // 2,
    "leading": lambda excess: excess,
}


class Residual(BroadcastReduce):
    """``module(x) + x`` with the residual aligned to the step at which ``module`` emits.

    If ``module`` shortens the clip by ``e`` frames (less than "same" temporal padding), ``residual_shrink``
    picks which ``T - e`` input frames are added: ``"lagging"`` the first ones, ``"leading"`` the last ones,
    ``"centered"`` (or ``True``) those in between (offset ``e // 2``). Without temporal padding these are the
    oldest, newest and middle frames of each output's window. Branch 0 is the parameter-free residual, branch 1
    the module (keys ``1.*``).
    """

    def __init__(
        self,
        module: nn.Module,
        temporal_fill: str | None = None,
        reduce: str | Callable[[list[Tensor]], Tensor] = "sum",
        residual_shrink: bool | str = False,
    ) -> None:
        module = _as_co(module)
        if _tstride(module) != 1:
            raise ValueError(f"Residual needs a module with temporal stride 1, got {_tstride(module)}")
        fill = temporal_fill or getattr(module, "temporal_fill", "zeros")
        super().__init__(_residual_branch(module, residual_shrink, fill), module, reduce=reduce, auto_delay=False)
        self.residual_shrink = residual_shrink


def _residual_branch(module: nn.Module, residual_shrink: bool | str, temporal_fill: str) -> nn.Module:
    delay, pad = module.delay, module.padding[0]
    excess = delay - pad  # frames by which the module shortens the clip
    if excess < 0:
        raise ValueError(f"Residual: the module lengthens the clip by {-excess} frames; pad it less")
    if excess == 0:
        return Delay(delay, temporal_fill)
    if residual_shrink not in _SHRINK_OFFSETS:
        raise ValueError(
            f"Residual: the module shortens the clip by {excess} frames (receptive field "
            f"{module.receptive_field}, temporal padding {pad}); pass residual_shrink='lagging', 'centered' "
            "or 'leading' to choose the input frame added to each output"
        )
    offset = _SHRINK_OFFSETS[residual_shrink](excess)
    skip = [Skip(offset)] if offset else []
    return Sequential(*skip, Delay(delay - offset, temporal_fill, shrink=excess - offset))


class Lambda(ContainerModule, nn.Module):
    """A stateless function as a module (delay 0). ``takes_time=False``: ``fn`` maps a step (and each frame of a
    clip, one at a time); ``takes_time=True``: ``fn`` maps a clip and is given steps as one-frame clips.

    ``forward_only_fn``, ``forward_step_only_fn`` and ``forward_steps_only_fn`` (as in continual-inference)
    replace ``fn`` in one call mode and get that mode's input as it is: a clip, a step, a clip. ``fn`` may be
    None when all three are given. Plain functions in a ``Sequential`` (and ``continual(fn)``) become Lambdas.
    """

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor] | None = None,
        forward_only_fn: Callable[[Tensor], Tensor] | None = None,
        forward_step_only_fn: Callable[[Tensor], Tensor] | None = None,
        forward_steps_only_fn: Callable[[Tensor], Tensor] | None = None,
        takes_time: bool = False,
    ) -> None:
        super().__init__()
        modes = {
            "forward_only_fn": forward_only_fn,
            "forward_step_only_fn": forward_step_only_fn,
            "forward_steps_only_fn": forward_steps_only_fn,
        }
        not_callable = [k for k, f in {"fn": fn, **modes}.items() if f is not None and not callable(f)]
        if not_callable:
            raise TypeError(f"Lambda: {', '.join(not_callable)} must be callable")
        missing = [k for k, f in modes.items() if f is None]
        if fn is None and missing:
            raise ValueError(f"Lambda needs fn, or a function for every call mode: {', '.join(missing)} missing")
        self.fn = fn
        self.forward_only_fn = forward_only_fn
        self.forward_step_only_fn = forward_step_only_fn
        self.forward_steps_only_fn = forward_steps_only_fn
        self.takes_time = takes_time

    def forward(self, clip: Tensor) -> Tensor:
        if self.forward_only_fn is not None:
            return self.forward_only_fn(clip)
        return self._on_clip(clip)

    def _on_clip(self, clip: Tensor) -> Tensor:
        fn: Callable[[Tensor], Tensor] = self.fn  # type: ignore[assignment]
        if self.takes_time:
            return fn(clip)
        return torch.stack([fn(clip[:, :, t]) for t in range(clip.shape[2])], dim=2)

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor:
        if self.forward_step_only_fn is not None:
            return self.forward_step_only_fn(step)
        fn: Callable[[Tensor], Tensor] = self.fn  # type: ignore[assignment]
        return fn(step.unsqueeze(2)).squeeze(2) if self.takes_time else fn(step)

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor:
        if self.forward_steps_only_fn is not None:
            return self.forward_steps_only_fn(clip)
        if self.takes_time or clip.shape[2] > 0:
            return self._on_clip(clip)
        return stack_steps([])

    @classmethod
    def build_from(
        cls,
        fn: Callable[[Tensor], Tensor] | None = None,
        forward_only_fn: Callable[[Tensor], Tensor] | None = None,
        forward_step_only_fn: Callable[[Tensor], Tensor] | None = None,
        forward_steps_only_fn: Callable[[Tensor], Tensor] | None = None,
        takes_time: bool = False,
        **kwargs: Any,
    ) -> Lambda:
        """``Lambda(...)``; what ``continual(function)`` calls (conversion keywords are ignored)."""
        check_build_kwargs("Lambda.build_from", kwargs)
        return cls(fn, forward_only_fn, forward_step_only_fn, forward_steps_only_fn, takes_time)

    def extra_repr(self) -> str:
        names = ("fn", "forward_only_fn", "forward_step_only_fn", "forward_steps_only_fn")
        fns = [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]
        parts = [
            f"{n}={getattr(f, '__name__', repr(f))}" if n != "fn" else getattr(f, "__name__", repr(f)) for n, f in fns
        ]
        return ", ".join([*parts, f"takes_time={self.takes_time}"])


class Conditional(ContainerModule, nn.Module):
    """Run ``on_true`` when ``predicate(self, x)`` holds, else ``on_false`` (the identity when None).

    Both branches emit at the same step: the faster one is followed by a ``Delay``. Only the chosen branch
    steps, so a predicate that changes mid-stream (e.g. on ``self.training``) should come with ``clean_state``.
    """

    def __init__(
        self,
        predicate: Callable[[nn.Module, Any], bool],
        on_true: nn.Module,
        on_false: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.predicate = predicate
        self.on_true = _as_co(on_true)
        self.on_false = _as_co(on_false) if on_false is not None else Delay(0)
        late = max(self.on_true.delay, self.on_false.delay)
        self._aligners = [Delay(late - b.delay) if b.delay < late else None for b in (self.on_true, self.on_false)]

    def _stateful(self) -> list[nn.Module]:
        return [self.on_true, self.on_false] + [a for a in self._aligners if a is not None]

    def _library_segment(self, child_name: str) -> str:
        """The continual-inference library's path to a child: its ``Conditional`` holds the branches as ``0`` and
        ``1``, each ``Sequential(Delay, branch)`` when aligned (``flatten.py``)."""
        if child_name not in ("on_true", "on_false"):
            return child_name
        index = 0 if child_name == "on_true" else 1
        return f"{index}.1" if self._aligners[index] is not None else str(index)

    @property
    def delay(self) -> int:
        return max(self.on_true.delay, self.on_false.delay)

    @property
    def receptive_field(self) -> int:
        return max(self.on_true.receptive_field, self.on_false.receptive_field)

    def _chosen(self, x: Any) -> tuple[nn.Module, Delay | None]:
        if self.predicate(self, x):
            return self.on_true, self._aligners[0]
        return self.on_false, self._aligners[1]

    def forward(self, clip: Tensor) -> Tensor:
        return self._chosen(clip)[0](clip)

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor | None:
        def run() -> Tensor | None:
            branch, aligner = self._chosen(step)
            y = branch.forward_step(step)
            return aligner.forward_step(y) if aligner is not None and y is not None else y

        return self._snapshot_call(run, update_state)

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        def run() -> Tensor | None:
            branch, aligner = self._chosen(clip)
            y = branch.forward_steps(clip, pad_end=pad_end)
            return aligner.forward_steps(y, pad_end=pad_end) if aligner is not None and y is not None else y

        return self._snapshot_call(run, update_state)


register(nn.Sequential, Sequential.build_from)
