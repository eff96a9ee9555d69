"""Checkpoints of the original OadTR / CoOadTR code (github.com/LukasHedegaard/CoOadTR, ``main.py``), registered
with ``modules.nets.weights``.

A checkpoint is ``{"model": state_dict, "optimizer", "lr_scheduler", "epoch", "args": argparse.Namespace}``.

* OadTR (branch ``original``) and OadTR-b1/b2 (``no-decoder-no-cls-token``): the keys are ours
  (``linear_encoding.*``, ``encoder.net.*``, ``decoder.layers.*``, ...), the identity mapping.
* CoOadTR-b1/b2 (branch ``main``): a ``co.Sequential`` whose keys are nested indices. b1: ``0.*`` (linear),
  ``1.pe.pattern`` or ``1.pe.weight`` (positional encoding), ``3.0.1.*`` (attention), ``3.1.fn.*`` / ``3.3.fn.*``
  (norms), ``3.2.1.{0,3}.*`` (feed-forward), ``4.fn.*`` (pre-head norm), ``5.*`` (head); b2: the Retroactive block
  ``3.0.0.1.*``, ``3.0.1.fn.{0,2}.*``, ``3.0.1.fn.1.fn.{0,3}.*`` and the Single-output block ``3.1.fn.0.1.*``,
  ``3.1.fn.{1,3}.fn.*``, ``3.1.fn.2.1.{0,3}.*``. ``cooadtr_key`` maps them onto ``CoOadTR``'s keys.

The fixed positional table ``1.pe.pattern`` is a buffer of the checkpoint; it is loaded as it is (the original
sampled its waves on a 0.01 grid, ``modules.continual.positional`` samples them exactly, so the two tables differ
slightly and the checkpoint's is the one the weights were trained with).

``load_checkpoint(net, path)`` reads such a file with ``torch.load(weights_only=True)``, allowing only
``argparse.Namespace`` beyond tensors and containers, and loads it strictly; ``modules.nets.load_pretrained``
knows the format too.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..weights import register_converter, skipping_head, unwrap_state_dict
from .cooadtr import CoOadTR
from .oadtr import OadTR

__all__ = ["convert_checkpoint", "cooadtr_key", "load_checkpoint", "read_original_checkpoint"]

_LAYER = "encoder.layers.{}."
#: (pattern of an original key, our key template) per encoder depth; the attention keys come first.
_CO_KEYS: dict[int, list[tuple[str, str]]] = {
    1: [
        (r"3\.0\.1\.", _LAYER.format(0) + "self_attn."),
        (r"3\.1\.fn\.", _LAYER.format(0) + "norm1."),
        (r"3\.2\.1\.0\.", _LAYER.format(0) + "linear1."),
        (r"3\.2\.1\.3\.", _LAYER.format(0) + "linear2."),
        (r"3\.3\.fn\.", _LAYER.format(0) + "norm2."),
    ],
    2: [
        (r"3\.0\.0\.1\.", _LAYER.format(0) + "self_attn."),
        (r"3\.0\.1\.fn\.0\.", _LAYER.format(0) + "norm1."),
        (r"3\.0\.1\.fn\.1\.fn\.0\.", _LAYER.format(0) + "linear1."),
        (r"3\.0\.1\.fn\.1\.fn\.3\.", _LAYER.format(0) + "linear2."),
        (r"3\.0\.1\.fn\.2\.", _LAYER.format(0) + "norm2."),
        (r"3\.1\.fn\.0\.1\.", _LAYER.format(1) + "self_attn."),
        (r"3\.1\.fn\.1\.fn\.", _LAYER.format(1) + "norm1."),
        (r"3\.1\.fn\.2\.1\.0\.", _LAYER.format(1) + "linear1."),
        (r"3\.1\.fn\.2\.1\.3\.", _LAYER.format(1) + "linear2."),
        (r"3\.1\.fn\.3\.fn\.", _LAYER.format(1) + "norm2."),
    ],
}
_CO_OUTER = [(r"0\.", "linear_encoding."), (r"1\.", "position_encoding."), (r"4\.fn\.", "pre_head_ln."),
             (r"5\.", "mlp_head.")]  # fmt: skip


def _co_depth(state: Mapping[str, Any]) -> int:
    """1 (CoSi encoder) or 2 (CoRe then CoSi), read from where the first attention sits."""
    if "3.0.0.1.in_proj_weight" in state:
        return 2
    if "3.0.1.in_proj_weight" in state:
        return 1
    raise ValueError("not a CoOadTR checkpoint: no attention at 3.0.1 (b1) or 3.0.0.1 (b2)")


def cooadtr_key(key: str, depth: int) -> str:
    """``CoOadTR``'s key for a key of the original CoOadTR-b``depth`` (``3.0.1.in_proj_weight`` ->
    ``encoder.layers.0.self_attn.in_proj_weight`` for b1); an unknown key is returned unchanged."""
    for pattern, repl in _CO_KEYS[depth] + _CO_OUTER:
        new, count = re.subn(f"^{pattern}", repl, key, count=1)
        if count:
            return new
    return key


def _is_co_checkpoint(state: Mapping[str, Any]) -> bool:
    return "0.weight" in state and ("1.pe.pattern" in state or "1.pe.weight" in state)


def _is_oadtr_checkpoint(state: Mapping[str, Any]) -> bool:
    return "linear_encoding.weight" in state and any(k.startswith("encoder.net.") for k in state)


def _accepts(net: nn.Module, raw: Mapping[str, Any]) -> bool:
    state = unwrap_state_dict(raw)
    if isinstance(net, CoOadTR):
        return _is_co_checkpoint(state)
    return isinstance(net, OadTR) and _is_oadtr_checkpoint(state)


def _check_fits(net: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Raise naming the build arguments that fit where the checkpoint's family, depth or widths differ."""
    if isinstance(net, CoOadTR):
        if _is_oadtr_checkpoint(state):
            raise ValueError("this is an OadTR checkpoint (pre-norm, learned PE): build oadtr / oadtr_b1 / oadtr_b2")
        depth = _co_depth(state)
        if depth != net.encoder.num_layers:
            raise ValueError(f"this is a CoOadTR-b{depth} checkpoint: build cooadtr_b{depth} to load it")
        learned = "1.pe.weight" in state
        if learned != net.position_encoding.learned:
            kind = "recycling_learned" if learned else "recycling_fixed"
            raise ValueError(f"the checkpoint's positional encoding is {kind}: build with positional_encoding={kind!r}")
        table = state["1.pe.weight" if learned else "1.pe.pattern"]
        if table.shape[0] != net.position_encoding.num_embeds:
            raise ValueError(
                f"the checkpoint has {table.shape[0]} positions: build with num_embeddings={table.shape[0]}"
            )
    elif _is_co_checkpoint(state):
        raise ValueError("this is a CoOadTR checkpoint (continual, post-norm): build cooadtr_b1 / cooadtr_b2")
    weight = state.get("0.weight" if isinstance(net, CoOadTR) else "linear_encoding.weight")
    if weight is not None and weight.shape[1] != net.dim_feature:
        raise ValueError(f"the checkpoint takes {weight.shape[1]}-d features: build with dim_feature={weight.shape[1]}")
    head = state.get("5.weight" if isinstance(net, CoOadTR) else "mlp_head.weight")
    if head is not None and head.shape[0] != net.mlp_head.out_features and not skipping_head():
        raise ValueError(f"the checkpoint scores {head.shape[0]} classes: build with num_classes={head.shape[0]}")


def convert_checkpoint(net: nn.Module, raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict of an original OadTR / CoOadTR checkpoint (or bare state dict) in ``net``'s key names."""
    state = unwrap_state_dict(raw)
    _check_fits(net, state)
    if isinstance(net, CoOadTR):
        depth = _co_depth(state)
        return {cooadtr_key(k, depth): v for k, v in state.items()}
    return dict(state)


register_converter("oadtr-cooadtr", _accepts, convert_checkpoint)


def read_original_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict of an original checkpoint, unpickled with ``weights_only=True`` and ``argparse.Namespace`` (its
    ``args``) as the only class allowed beyond tensors and containers."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(raw, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(raw).__name__}, not a dict")
    return dict(raw)


def load_checkpoint(net: OadTR | CoOadTR, path: str | Path, strict: bool = True) -> dict[str, Any]:
    """Load an original OadTR / CoOadTR checkpoint into ``net`` (strictly by default); returns the checkpoint
    (``args``, ``epoch``, ...) without reading anything but tensors, containers and ``argparse.Namespace``."""
    raw = read_original_checkpoint(path)
    if not _accepts(net, raw):
        state = unwrap_state_dict(raw)
        _check_fits(net, state)  # names the net that fits, when it is one of ours
        raise ValueError(f"{path} is not an OadTR / CoOadTR checkpoint (keys: {sorted(state)[:6]} ...)")
    net.load_state_dict(convert_checkpoint(net, raw), strict=strict)
    if isinstance(net, CoOadTR):
        net.clean_state()  # a fresh stream: positional offset 0
    return raw
