"""A timm-style model registry: ``@register_model("name")`` on keyword-only builders, ``build(name, **kw)``.

Configs name architectures through ``build`` (``_target_: modules.nets.build``, ``name: conv_stack``), so a
config never depends on the module path of a builder, and every registered model can be tested in one loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["build", "get_builder", "list_models", "register_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[F], F]:
    """Register a builder under ``name``. Builders take keyword-only arguments, so configs stay explicit."""

    def decorator(fn: F) -> F:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].__module__}")
        positional = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if positional:
            raise TypeError(
                f"builder {fn.__qualname__} for {name!r} takes positional arguments {positional}; "
                "make them keyword-only (put `*,` first)"
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered under ``name``; an unknown name raises ``KeyError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models()) or '(none)'}") from None


def build(name: str, *, weights: str | None = None, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with its defaults replaced by ``overrides``; ``weights`` is an official
    checkpoint (``.pyth``/``.pth``/``.pkl``) loaded with ``modules.nets.load_pretrained``."""
    fn = get_builder(name)
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(overrides) - set(params))
        if unknown:
            raise TypeError(f"model {name!r} has no argument(s) {unknown}; it accepts {sorted(params)}")
    net = fn(**overrides)
    if weights:
        from .weights import load_pretrained  # the registry stays importable without the converters

        load_pretrained(net, weights)
    return net
