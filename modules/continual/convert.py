"""Conversion of torch.nn modules and trees into their continual twins, with identical weights."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from .base import CoModule

__all__ = ["CONVERSION_KEYWORDS", "UnsupportedModuleError", "check_build_kwargs", "continual", "register"]

_BUILDERS: dict[type[nn.Module], Callable[..., nn.Module]] = {}

# Keywords that ``continual(tree, **kwargs)`` hands to every builder of the tree, each applied by the builders it
# concerns and ignored by the others: conv/pool ``temporal_fill``, adaptive pool ``temporal_window``, Linear
# ``channel_dim``, attention/transformer ``sequence_len``, ``mode`` and ``query_index``. ``register`` adds the
# keywords of custom builders.
CONVERSION_KEYWORDS: set[str] = {
    "temporal_fill",
    "temporal_window",
    "channel_dim",
    "sequence_len",
    "mode",
    "query_index",
}


class UnsupportedModuleError(TypeError):
    """A module that has no exact continual counterpart."""


def register(torch_cls: type[nn.Module], builder: Callable[..., nn.Module], keywords: Iterable[str] = ()) -> None:
    """Make ``continual`` convert instances of ``torch_cls`` with ``builder(module, **kwargs)``.

    The builder receives the nn module and every keyword argument given to ``continual``; it applies those that
    concern it and ignores the other ``CONVERSION_KEYWORDS`` (``check_build_kwargs``). ``keywords`` names the
    conversion keywords a custom builder applies, so that the other builders of a tree accept them too.
    """
    _BUILDERS[torch_cls] = builder
    CONVERSION_KEYWORDS.update(keywords)


def check_build_kwargs(owner: str, kwargs: dict[str, Any]) -> None:
    """Refuse the keywords in ``kwargs`` (those a ``build_from`` did not apply) that are not conversion keywords.

    A builder copies the structure of the module it converts. A keyword such as ``kernel_size`` or ``stride``
    would change that structure in continual-inference's ``build_from`` (which passes its keywords on to the
    constructor), so ignoring it would silently build something else than asked; a conversion keyword of another
    builder (``CONVERSION_KEYWORDS``) is ignored, as ``continual(tree, **kwargs)`` gives it to every builder.
    """
    unknown = sorted(set(kwargs) - CONVERSION_KEYWORDS)
    if unknown:
        name = unknown[0]
        raise TypeError(
            f"{owner} got {name}={kwargs[name]!r}, which it does not apply: a converted module keeps the structure "
            f"of the module it converts. Build the continual module with the {name} you want and load the weights "
            f"into it, or change the nn module first. Conversion keywords: {', '.join(sorted(CONVERSION_KEYWORDS))}."
        )


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
