"""Stateless building blocks of the continual-inference library's ``closure.py``, ``shape.py`` and stream routing.

``Add``, ``Multiply``, ``Identity``, ``Constant``, ``Zero`` and ``One`` are ``Lambda`` modules with
``takes_time=True``, as in the library: the function sees clips ``(B, C, T, ...)`` and steps as one-frame clips,
so a tensor constant shaped for a clip (e.g. ``(1, C, 1)``) broadcasts alike in every mode. A tensor constant is
a non-persistent buffer: it moves with ``.to()`` and stays out of the ``state_dict`` (the library's neither moves
nor is saved). ``Reshape`` reshapes every step and keeps time on dim 2 of a clip. ``ParallelDispatch`` reorders,
copies and groups the streams of a ``Broadcast``/``Parallel`` for the next ``Parallel``. All have delay 0.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import CoModule
from .container import Lambda
from .convert import register

__all__ = ["Add", "Constant", "Identity", "Multiply", "One", "ParallelDispatch", "Reshape", "Zero"]

Number = int | float | bool


class _WithConstant(Lambda):
    """A Lambda whose function combines its input with one constant, a number or a tensor."""

    def __init__(self, value: Number | Tensor) -> None:
        if not isinstance(value, Number | Tensor):
            raise TypeError(f"{type(self).__name__} takes a number or a tensor, got {type(value).__name__}")
        super().__init__(self._apply_constant, takes_time=True)
        if isinstance(value, Tensor):
            self.register_buffer("value", value, persistent=False)
        else:
            self.value = value

    def _apply_constant(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        value = self.value
        return f"{tuple(value.shape)} tensor" if isinstance(value, Tensor) else repr(value)


class Add(_WithConstant):
    """``x + constant`` (a number, or a tensor that broadcasts against clips)."""

    def __init__(self, constant: Number | Tensor) -> None:
        super().__init__(constant)

    def _apply_constant(self, x: Tensor) -> Tensor:
        return x + self.value


class Multiply(_WithConstant):
    """``x * factor`` (a number, or a tensor that broadcasts against clips)."""

    def __init__(self, factor: Number | Tensor) -> None:
        super().__init__(factor)

    def _apply_constant(self, x: Tensor) -> Tensor:
        return x * self.value


class Constant(_WithConstant):
    """``constant * ones_like(x)``: the input's shape (broadcast with a tensor constant), filled with the constant."""

    def __init__(self, constant: Number | Tensor) -> None:
        super().__init__(constant)

    def _apply_constant(self, x: Tensor) -> Tensor:
        return self.value * torch.ones_like(x)


def _identity(x: Tensor) -> Tensor:
    return x


class Identity(Lambda):
    """Returns its input; takes and ignores any arguments, like ``nn.Identity``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(_identity, takes_time=True)

    def extra_repr(self) -> str:
        return ""


class Zero(Lambda):
    """``zeros_like(x)``."""

    def __init__(self) -> None:
        super().__init__(torch.zeros_like, takes_time=True)

    def extra_repr(self) -> str:
        return ""


class One(Lambda):
    """``ones_like(x)``."""

    def __init__(self) -> None:
        super().__init__(torch.ones_like, takes_time=True)

    def extra_repr(self) -> str:
        return ""


class Reshape(CoModule, nn.Module):
    """Reshape every step to ``shape``; a clip keeps its time on dim 2: ``(B, C, T, ...) -> (*shape[:2], T,
    *shape[2:])``. As in continual-inference, ``shape`` is the whole shape of a step, batch first (``-1`` infers
    one size), given as ``Reshape(B, C, ...)`` or ``Reshape((B, C, ...))``. Each batch row is an independent
    stream, so a shape that changes the batch size is refused; use ``-1`` first to keep any batch size.
    ``contiguous=True`` returns contiguous tensors.
    """

    def __init__(self, *shape: int | Sequence[int], contiguous: bool = False) -> None:
        super().__init__()
        sizes = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], Sequence) else shape
        if len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
            raise ValueError(
                f"Reshape takes the shape of a step, at least batch and channels as ints, e.g. Reshape(-1, 20); "
                f"got {shape!r}"
            )
        self.shape = sizes
        self.contiguous = contiguous

    def forward(self, clip: Tensor) -> Tensor:
        out = clip.movedim(2, 0).reshape(clip.shape[2], *self.shape).movedim(0, 2)
        return self._finish(clip, out, "clip")

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor:
        return self._finish(step, step.reshape(self.shape), "step")

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor:
        return self.forward(clip)

    def _finish(self, x: Tensor, out: Tensor, kind: str) -> Tensor:
        if out.shape[0] != x.shape[0]:
            raise ValueError(
                f"Reshape{self.shape} turns the batch of {x.shape[0]} streams of {kind} {tuple(x.shape)} into "
                f"{out.shape[0]}, mixing independent streams; keep the batch dim first, e.g. Reshape(-1, ...)"
            )
        return out.contiguous() if self.contiguous else out

    def extra_repr(self) -> str:
        return f"{self.shape}" + (", contiguous=True" if self.contiguous else "")


DispatchMapping = Sequence["int | DispatchMapping"]


class ParallelDispatch(CoModule, nn.Module):
    """Route a list of streams (the outputs of a ``Broadcast`` or ``Parallel``) to the inputs of the next
    ``Parallel``: output ``i`` is stream ``dispatch_mapping[i]``, and a nested list groups streams into a list
    (for a ``Reduce`` branch). E.g. ``[1, 0]`` swaps two streams, ``[0, 0, 1]`` copies stream 0, ``[[0, 1], 2]``
    groups streams 0 and 1. The same in every call mode; stateless.
    """

    def __init__(self, dispatch_mapping: DispatchMapping) -> None:
        super().__init__()
        if not isinstance(dispatch_mapping, Sequence) or isinstance(dispatch_mapping, str):
            raise ValueError(f"ParallelDispatch takes a list of stream indices, got {dispatch_mapping!r}")
        _check_mapping(dispatch_mapping, dispatch_mapping)
        self.dispatch_mapping = dispatch_mapping

    def forward(self, streams: Sequence[Any]) -> list[Any]:
        if not isinstance(streams, list | tuple):
            raise ValueError(
                f"ParallelDispatch routes a list of streams (of a Broadcast or Parallel), got {type(streams).__name__}"
            )
        return _dispatch(self.dispatch_mapping, streams)

    def forward_step(self, streams: Sequence[Any], update_state: bool = True) -> list[Any] | None:
        return None if streams is None else self.forward(streams)

    def forward_steps(self, streams: Sequence[Any], pad_end: bool = False, update_state: bool = True) -> Any:
        return None if streams is None else self.forward(streams)

    def extra_repr(self) -> str:
        return repr(list(self.dispatch_mapping))


def _check_mapping(mapping: Any, whole: Any) -> None:
    for entry in mapping:
        if isinstance(entry, Sequence) and not isinstance(entry, str):
            _check_mapping(entry, whole)
        elif not isinstance(entry, int) or isinstance(entry, bool):
            raise ValueError(
                f"ParallelDispatch: {entry!r} in {whole!r} is not a stream index; give ints or lists of ints"
            )


def _dispatch(mapping: Any, streams: Sequence[Any]) -> Any:
    if isinstance(mapping, Sequence):
        return [_dispatch(m, streams) for m in mapping]
    if not -len(streams) <= mapping < len(streams):
        raise IndexError(f"ParallelDispatch: stream {mapping} does not exist among {len(streams)} input streams")
    return streams[mapping]


# Plain functions become Lambdas in co.continual and in Sequential, as in continual-inference.
for _function_type in (types.FunctionType, types.BuiltinFunctionType):
    register(_function_type, Lambda.build_from)  # type: ignore[arg-type]
