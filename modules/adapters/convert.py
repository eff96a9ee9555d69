"""Putting adapters into a network and fusing them out again, as sp_adapters v0.7.1 does.

``splora``/``sppara`` replace every layer whose type is exactly one of ``types`` (so an adapted layer or a torch
subclass such as MultiheadAttention's out_proj is never wrapped), deep-copying the network unless ``inplace``.
Layers that cannot be adapted (even or non-square kernels, e.g. ViT's 16×16 patch conv) stay as they are, named
in one warning. ``merge_adapters`` turns every adapter back into the plain torch layer with the adapted weight.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable

from torch import nn

from ._base import DEFAULT_INIT_RANGE, Adapter
from .splora import SPLoRAConv1d, SPLoRAConv2d, SPLoRAConv3d, SPLoRALinear, SPLoRAMultiheadAttention
from .sppara import SPPaRAConv1d, SPPaRAConv2d, SPPaRAConv3d

__all__ = [
    "SPLORA_TYPES",
    "SPPARA_TYPES",
    "adapter_layers",
    "fuse",
    "is_adapter",
    "merge_adapters",
    "splora",
    "sppara",
    "trainable_parameter_count",
]

_SPLORA: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: SPLoRALinear,
    nn.Conv1d: SPLoRAConv1d,
    nn.Conv2d: SPLoRAConv2d,
    nn.Conv3d: SPLoRAConv3d,
    nn.MultiheadAttention: SPLoRAMultiheadAttention,
}
_SPPARA: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: SPPaRAConv1d,
    nn.Conv2d: SPPaRAConv2d,
    nn.Conv3d: SPPaRAConv3d,
}

#: Library defaults (sp_adapters v0.7.1). The SPA CNN experiments adapt only nn.Conv2d (head Linear and BN train
#: in full).
SPLORA_TYPES: tuple[type[nn.Module], ...] = tuple(_SPLORA)
SPPARA_TYPES: tuple[type[nn.Module], ...] = tuple(_SPPARA)


def is_adapter(module: nn.Module) -> bool:
    """Whether ``module`` is an SPLoRA/SPPaRA layer or SPLoRA multi-head attention."""
    return isinstance(module, Adapter)


def adapter_layers(net: nn.Module) -> dict[str, nn.Module]:
    """Name → outermost adapter module, in module order (the q/k/v/out layers inside an adapted attention are
    not listed separately, so summing ``learned_parameter_count`` over the values counts each weight once)."""
    found: dict[str, nn.Module] = {}

    def walk(prefix: str, module: nn.Module) -> None:
        if is_adapter(module):
            found[prefix] = module
            return
        for name, child in module.named_children():
            walk(f"{prefix}.{name}" if prefix else name, child)

    walk("", net)
    return found


def trainable_parameter_count(net: nn.Module) -> int:
    """Number of parameters that train (requires_grad), each shared parameter once."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def splora(
    net: nn.Module,
    rank: float,
    init_range: float | None = DEFAULT_INIT_RANGE,
    *,
    types: Iterable[type[nn.Module]] = SPLORA_TYPES,
    inplace: bool = False,
) -> nn.Module:
    """``net`` with every layer of ``types`` replaced by its SPLoRA twin.

    ``rank``: an int, or a float < 1 as a fraction of each layer's output size. The SPA CNN experiments call this
    with ``types=(nn.Conv2d,)``. Returns the converted network (a new object if ``net`` itself was converted).
    """
    table = _table(types, _SPLORA, "splora")

    def convert(layer: nn.Module) -> nn.Module:
        return table[type(layer)].from_module(layer, rank=rank, init_range=init_range)

    return _replace(net, table, convert, inplace, what="splora")


def sppara(
    net: nn.Module,
    init_range: float | None = DEFAULT_INIT_RANGE,
    *,
    types: Iterable[type[nn.Module]] = SPPARA_TYPES,
    inplace: bool = False,
) -> nn.Module:
    """``net`` with every conv of ``types`` replaced by its SPPaRA twin; Linear layers stay."""
    table = _table(types, _SPPARA, "sppara")

    def convert(layer: nn.Module) -> nn.Module:
        return table[type(layer)].from_module(layer, init_range=init_range)

    return _replace(net, table, convert, inplace, what="sppara")


def merge_adapters(net: nn.Module, inplace: bool = False) -> nn.Module:
    """``net`` with every adapter replaced by ``to_module()``: plain torch layers holding W + ΔW.

    Outputs equal those of the adapted network in eval mode.
    """
    return _replace(net, (), lambda m: m.to_module(), inplace, what="merge_adapters", match=is_adapter)


def fuse(net: nn.Module, inplace: bool = False) -> nn.Module:
    """Deprecated alias of ``merge_adapters`` (not to be confused with BatchNorm folding,
    ``modules.continual.fold_batchnorm``)."""
    warnings.warn(
        "modules.adapters.fuse is renamed merge_adapters; the alias goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return merge_adapters(net, inplace)


def _table(
    types: Iterable[type[nn.Module]], known: dict[type[nn.Module], type[nn.Module]], what: str
) -> dict[type[nn.Module], type[nn.Module]]:
    table = {}
    for t in types:
        if t not in known:
            names = ", ".join(f"nn.{k.__name__}" for k in known)
            raise ValueError(f"{what}: cannot adapt {getattr(t, '__name__', t)}; supported types: {names}")
        table[t] = known[t]
    return table


def _replace(
    net: nn.Module,
    types: Iterable[type[nn.Module]],
    convert: Callable[[nn.Module], nn.Module],
    inplace: bool,
    what: str,
    match: Callable[[nn.Module], bool] | None = None,
) -> nn.Module:
    """Replace each module that ``match``es (default: exact type in ``types``) by ``convert(module)``.

    A ValueError from ``convert`` leaves that module unchanged and is reported in one warning. A module shared
    at several places is converted once and stays shared.
    """
    if not inplace:
        net = copy.deepcopy(net)
    types = tuple(types)
    match = match or (lambda m: type(m) in types)
    done: dict[int, nn.Module] = {}
    skipped: list[str] = []

    def visit(name: str, module: nn.Module) -> nn.Module:
        if id(module) in done:
            return done[id(module)]
        new = module
        if match(module):
            try:
                new = convert(module)
            except ValueError as err:
                skipped.append(f"{name or '<root>'}: {err}")
        else:
            # _modules, not named_children(): the latter yields a module shared under two names only once
            for child_name, child in list(module._modules.items()):
                if child is None:
                    continue
                new_child = visit(f"{name}.{child_name}" if name else child_name, child)
                if new_child is not child:
                    setattr(module, child_name, new_child)
        done[id(module)] = new
        return new

    out = visit("", net)
    if skipped:
        warnings.warn(f"{what}: left {len(skipped)} layer(s) as they were: " + "; ".join(skipped), stacklevel=3)
    return out
