"""Flattened ``state_dict`` keys, compatible with the public continual-inference library.

The continual-inference library (Lukas Hedegaard, Apache-2.0; ``continual/utils.py``, v1.2.4) can save and load
a state dict with "flattened" keys: every dot-separated part of a key that is a number (the index of an unnamed
child of a container) is dropped, so ``"0.1.weight"`` becomes ``"weight"`` and ``"1.c1.weight"`` becomes
``"c1.weight"``. Named children keep their names. When two keys would collapse into one (``"0.weight"`` and
``"1.weight"``), the library gives up: ``state_dict(flatten=True)`` logs a warning and returns the nested keys,
and ``load_state_dict(flatten=True)`` loads the dict as nested keys.

This module applies that rule to our containers, so that a checkpoint written by a library net, with
``net.state_dict(flatten=True)`` or with the default nested keys, loads into the same net built with this core,
and the other way round. Two structural differences are translated ("library keys" below):

* the library aligns a ``Parallel``/``BroadcastReduce`` branch that emits early by wrapping it in
  ``Sequential(branch, Delay(...))``, so its keys gain a ``.0`` (``"1.weight"`` -> ``"1.0.weight"``); our aligning
  delays are not registered children, so the keys stay those of the branch;
* the library's ``Conditional`` names its branches ``0`` and ``1`` (``Sequential(Delay(...), branch)``, i.e.
  ``0.1``, when aligned), ours ``on_true`` and ``on_false``.

The flattened key of one of our parameters is the flattened library key, which is what the library writes. The
nested library keys depend on which branches are aligned, i.e. on the branches' delays; where the library
computes a delay differently (single-output attention, dilated pooling), its nested keys of such a branch differ
and only its flattened keys load.
"""

from __future__ import annotations

import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor, nn

__all__ = ["flat_key", "flat_state_dict", "flatten_keys", "library_keys", "load_state_dict", "state_dict"]


class _FlatStateDict:
    """``with flat_state_dict:`` makes containers' ``state_dict()`` and ``load_state_dict()`` use flattened keys,
    as ``flatten=True`` does (the library's ``co.utils.flat_state_dict``). Contexts nest."""

    def __init__(self) -> None:
        self.depth = 0

    @property
    def active(self) -> bool:
        return self.depth > 0

    def __enter__(self) -> _FlatStateDict:
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1


flat_state_dict = _FlatStateDict()


def flat_key(key: str) -> str:
    """The library's rule: drop every dot-separated part that is a number (``"0.c1.1.weight"`` -> ``"c1.weight"``)."""
    return ".".join(part for part in key.split(".") if not part.isdigit())


def _library_segment(parent: nn.Module, child_name: str) -> str:
    """The library's name path from ``parent`` to its child ``child_name`` (see the module docstring): the
    containers whose layout differs from the library's say so (``_library_segment``)."""
    segment = getattr(parent, "_library_segment", None)
    return segment(child_name) if callable(segment) else child_name


def _module_paths(module: nn.Module) -> dict[str, str]:
    """Our module path -> the library's module path, for every submodule (shared ones under each path)."""
    paths = {"": ""}
    for name, parent in module.named_modules(remove_duplicate=False):
        for child_name, _ in parent.named_children():
            ours = f"{name}.{child_name}" if name else child_name
            segment = _library_segment(parent, child_name)
            paths[ours] = f"{paths[name]}.{segment}" if paths[name] else segment
    return paths


def _own_keys(module: nn.Module) -> list[str]:
    """Our nested keys, never flattened (``nn.Module.state_dict`` bypasses the containers' override)."""
    return list(nn.Module.state_dict(module, keep_vars=True))


def library_keys(module: nn.Module) -> dict[str, str]:
    """Our nested key -> the nested key the library gives the same parameter or buffer."""
    paths = _module_paths(module)
    keys = {}
    for key in _own_keys(module):
        owner, _, leaf = key.rpartition(".")
        prefix = paths[owner]
        keys[key] = f"{prefix}.{leaf}" if prefix else leaf
    return keys


def flatten_keys(module: nn.Module) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Our nested key -> its flattened (library) key, and the flattened keys that several nested keys share
    (each with those keys). When the second is not empty the library does not flatten this module's keys."""
    flat = {key: flat_key(lib) for key, lib in library_keys(module).items()}
    counts = Counter(flat.values())
    clashes: dict[str, list[str]] = {}
    for key, short in flat.items():
        if counts[short] > 1:
            clashes.setdefault(short, []).append(key)
    return flat, clashes


def _describe_clashes(clashes: Mapping[str, list[str]], limit: int = 3) -> str:
    items = [f"{short!r} <- {keys}" for short, keys in list(clashes.items())[:limit]]
    more = f" and {len(clashes) - limit} more" if len(clashes) > limit else ""
    return "; ".join(items) + more


def flatten_state_dict(module: nn.Module, nested: Mapping[str, Any], prefix: str = "") -> OrderedDict[str, Any]:
    """``nested`` (our keys under ``prefix``, as ``module.state_dict(prefix=prefix)`` gives them) with the keys
    the library writes for ``state_dict(flatten=True)``: flattened, or, with a warning, its nested keys when
    flattening would merge keys (the library returns its nested keys then)."""
    flat, clashes = flatten_keys(module)
    if clashes:
        warnings.warn(
            f"{type(module).__name__}.state_dict(flatten=True): the flattened keys would be ambiguous "
            f"({_describe_clashes(clashes)}), so the nested keys are returned, as the continual-inference library "
            "does. Name the children (an OrderedDict) to make flattened keys unique.",
            stacklevel=3,
        )
        short_prefix, rename = prefix, library_keys(module)
    else:
        short_prefix, rename = (flat_key(prefix.rstrip(".")) + "." if prefix else ""), flat
    out: OrderedDict[str, Any] = OrderedDict()
    for key, value in nested.items():
        local = key[len(prefix) :] if key.startswith(prefix) else key
        short = rename[local] if local in rename else flat_key(local)
        out[(short_prefix + short).lstrip(".")] = value
    return out


def state_dict(
    module: nn.Module,
    destination: dict[str, Any] | None = None,
    prefix: str = "",
    keep_vars: bool = False,
    flatten: bool = False,
) -> dict[str, Any]:
    """``module.state_dict()`` for any module, with the library's flattened keys when ``flatten`` is true (or
    inside ``with flat_state_dict:``); the library's ``co.state_dict``."""
    nested = nn.Module.state_dict(module, destination=destination, prefix=prefix, keep_vars=keep_vars)
    if flatten or flat_state_dict.active:
        return flatten_state_dict(module, nested, prefix)
    return nested


def _resolve(module: nn.Module, keys: list[str], flatten: bool) -> tuple[dict[str, str], list[str], str]:
    """Map the keys of a loaded dict to our keys: ours, then the library's nested keys, then (with ``flatten``)
    the flattened ones. Returns the mapping, the unknown keys and a note on why flattened keys did not apply."""
    library = library_keys(module)
    from_library = {lib: ours for ours, lib in library.items()}
    flat, clashes = flatten_keys(module)
    from_flat = {short: ours for ours, short in flat.items()} if flatten and not clashes else {}
    note = ""
    if flatten and clashes:
        note = (
            f"; the flattened keys of {type(module).__name__} are ambiguous ({_describe_clashes(clashes)}), so "
            "only nested keys load"
        )
    mapping: dict[str, str] = {}
    unknown = []
    for key in keys:
        target = key if key in library else from_library.get(key, from_flat.get(key))
        if target is None:
            unknown.append(key)
        else:
            mapping[key] = target
    return mapping, unknown, note


def _targets(mapping: Mapping[str, str]) -> Iterator[tuple[str, list[str]]]:
    by_target: dict[str, list[str]] = {}
    for key, target in mapping.items():
        by_target.setdefault(target, []).append(key)
    return ((target, keys) for target, keys in by_target.items() if len(keys) > 1)


def load_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    strict: bool = True,
    assign: bool = False,
    flatten: bool = False,
) -> Any:
    """Load ``state_dict`` into ``module``: our nested keys, the library's nested keys, or (with ``flatten`` or
    inside ``with flat_state_dict:``) the library's flattened keys; the library's ``co.load_state_dict``.

    With ``strict``, unknown and missing keys raise a ``RuntimeError`` that names them (missing ones in the form
    the dict uses). Otherwise they are reported like ``nn.Module.load_state_dict`` does (``missing_keys``,
    ``unexpected_keys``), and the known keys load.
    """
    flatten = flatten or flat_state_dict.active
    mapping, unknown, note = _resolve(module, list(state_dict), flatten)
    duplicates = list(_targets(mapping))
    if duplicates:
        target, keys = duplicates[0]
        raise RuntimeError(
            f"Error loading state_dict into {type(module).__name__}: keys {keys} all name the parameter "
            f"{target!r}; keep one of them"
        )
    targets = set(mapping.values())
    missing = [key for key in _own_keys(module) if key not in targets]
    if strict and (unknown or missing):
        raise RuntimeError(_load_error(module, unknown, missing, mapping, flatten, note))
    renamed: OrderedDict[str, Tensor] = OrderedDict((mapping[key], state_dict[key]) for key in mapping)
    renamed.update((key, state_dict[key]) for key in unknown)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        renamed._metadata = metadata  # type: ignore[attr-defined]
    return nn.Module.load_state_dict(module, renamed, strict=False, assign=assign)


def _load_error(
    module: nn.Module, unknown: list[str], missing: list[str], mapping: Mapping[str, str], flatten: bool, note: str
) -> str:
    # Name the missing keys in the form the dict uses: flattened if none of its keys is one of our nested keys.
    uses_flat = flatten and bool(mapping) and not any(key == target for key, target in mapping.items())
    shown = [flatten_keys(module)[0][key] for key in missing] if uses_flat else missing
    parts = [f"unknown keys {unknown}"] if unknown else []
    if missing:
        parts.append(f"missing keys {shown}")
    hint = "" if flatten else "; a dict saved with state_dict(flatten=True) loads with flatten=True"
    return f"Error loading state_dict into {type(module).__name__}: {' and '.join(parts)}{note}{hint}"
