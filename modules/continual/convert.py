"""Conversion of torch.nn modules and trees into their continual twins, with identical weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .base import CoModule

__all__ = ["UnsupportedModuleError", "continual", "register"]

_BUILDERS: dict[type[nn.Module], Callable[..., nn.Module]] = {}


class UnsupportedModuleError(TypeError):
    """A module that has no exact continual counterpart."""


def register(torch_cls: type[nn.Module], builder: Callable[..., nn.Module]) -> None:
    """Make ``continual`` convert instances of ``torch_cls`` with ``builder(module, **kwargs)``.

    The builder receives the nn module and the keyword arguments given to ``continual`` that it accepts.
    """
    _BUILDERS[torch_cls] = builder


def continual(module: nn.Module, **kwargs: Any) -> nn.Module:
    """Return the continual twin of ``module`` (a layer or a tree) with the same weights and state_dict keys.

    Continual modules are returned as they are. Keyword arguments (``temporal_fill``, ``sequence_len``, ...)
    go to the builders that take them. An unsupported module raises ``UnsupportedModuleError`` naming it.
    """
    if isinstance(module, CoModule):
        return module
    # Most specific registered class first, so that subclasses may register their own builder.
    for cls in type(module).__mro__:
        builder = _BUILDERS.get(cls)
        if builder is not None:
            return builder(module, **kwargs)
    raise UnsupportedModuleError(
        f"No continual counterpart for {type(module).__name__} ({module!r:.120}). If it is temporally local, "
        "register it with modules.continual.register(its_class, modules.continual.local); otherwise write a "
        "continual module for it."
    )
