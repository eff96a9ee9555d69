"""The continual-skeletons checkpoints (LukasHedegaard/continual-skeletons, README's Google Drive folder; spec B1, B7),
registered with ``modules.nets.weights``.

* Raw state dicts (``stgcn_*.pt``, ``agcn_*.pt``, ``stgcnmod_*.pt``) and Lightning checkpoints (``str_*.ckpt``,
  ``*mod_*.ckpt``: ``{"state_dict": ...}``, keys without prefix): our key names (``data_bn.*``,
  ``layers.layerK.gcn.*``, ``layers.layerK.tcn.{t_conv,bn}.*``, ``layers.layerK.residual.{t_conv,bn}.*``,
  ``fc.*``), the identity mapping.
* Checkpoints saved from the original continual nets carry their container nesting: ``layers.layerK.0.1.gcn.*`` /
  ``layers.layerK.0.1.tcn.*`` (the block's main branch inside ``co.Residual`` or ``co.BroadcastReduce``) and
  ``layers.layerK.0.0.residual.*`` (the strided projection); they are mapped to the short keys, as the original
  ``CoModelBase.map_state_dict`` does.

Offline nets and their continual twins have the same keys, so every format loads into both. A checkpoint of
another family, input width, graph or class count is refused with the build arguments that fit it. Loading the
published AGCN* / CoAGCN* weights faithfully needs ``defective_contraction=True`` (spec B7); the file does not
say so, which is why the option has to be given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..weights import register_converter, skipping_head, unwrap_state_dict
from .nets import CoSkeletonNet, SkeletonNet

__all__ = ["checkpoint_family", "convert_continual_skeletons", "short_key"]

_NESTED = (
    (re.compile(r"^layers\.(layer\d+)\.0\.1\."), r"layers.\1."),
    (re.compile(r"^layers\.(layer\d+)\.0\.0\.residual\."), r"layers.\1.residual."),
)
_FAMILY_BUILDERS = {"st_gcn": "st_gcn / cost_gcn", "agcn": "agcn / coagcn", "s_tr": "s_tr / cos_tr"}


def short_key(key: str) -> str:
    """The offline key of a key of the original continual nets (``layers.layer4.0.1.gcn.bn.weight`` →
    ``layers.layer4.gcn.bn.weight``); other keys are returned unchanged."""
    for pattern, repl in _NESTED:
        key, n = pattern.subn(repl, key, count=1)
        if n:
            return key
    return key


def checkpoint_family(state: Mapping[str, Any]) -> str:
    """``agcn`` (θ/φ convs), ``s_tr`` (spatial attention) or ``st_gcn``, read from the keys."""
    if any(".gcn.a_conv." in k for k in state):
        return "agcn"
    if any(".gcn.attention_conv." in k for k in state):
        return "s_tr"
    return "st_gcn"


def _is_skeleton_net(net: nn.Module) -> bool:
    return isinstance(net, SkeletonNet | CoSkeletonNet)


def _accepts(net: nn.Module, raw: Mapping[str, Any]) -> bool:
    if not _is_skeleton_net(net):
        return False
    keys = [short_key(k) for k in unwrap_state_dict(raw)]
    return "data_bn.weight" in keys and any(k.startswith("layers.layer1.") for k in keys)


def _check_fits(net: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Raise with the build arguments that fit the checkpoint where its family or shapes differ from ``net``."""
    family = checkpoint_family(state)
    if family != net.arch:
        raise ValueError(
            f"this is a {family} checkpoint ({_FAMILY_BUILDERS[family]}), not one of {net.arch}; build "
            f"{_FAMILY_BUILDERS[family]} (or the *_mod variant) to load it"
        )
    conv = state.get("layers.layer1.gcn.g_conv.0.weight")
    if conv is not None and conv.shape[1] != net.layers.layer1.gcn.in_channels:
        raise ValueError(
            f"the checkpoint takes {conv.shape[1]} input channels (3: joint or bone, 6: joint + bone), the net "
            f"{net.layers.layer1.gcn.in_channels}; build with in_channels={conv.shape[1]}"
        )
    a = state.get("layers.layer1.gcn.A")
    joints = net.layers.layer1.gcn.A.shape[-1]
    if a is not None and a.shape[-1] != joints:
        graph = {25: "ntu", 18: "kinetics"}.get(a.shape[-1], f"a graph of {a.shape[-1]} joints")
        raise ValueError(
            f"the checkpoint's graph has {a.shape[-1]} joints, the net's {joints}; build with graph={graph!r}"
        )
    bn = state.get("data_bn.weight")
    if bn is not None and conv is not None and bn.shape[0] != net.data_bn.num_features:
        persons = bn.shape[0] // (conv.shape[1] * joints)
        raise ValueError(f"the checkpoint's data_bn takes {bn.shape[0]} features; build with num_persons={persons}")
    fc = state.get("fc.weight")
    if fc is not None and fc.shape[0] != net.fc.out_features and not skipping_head():
        raise ValueError(f"the checkpoint has {fc.shape[0]} classes, the net {net.fc.out_features}; build with "
                         f"num_classes={fc.shape[0]}")  # fmt: skip


def convert_continual_skeletons(net: nn.Module, raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict of a continual-skeletons checkpoint in our key names (module docstring)."""
    state = {short_key(k): v for k, v in unwrap_state_dict(raw).items()}
    _check_fits(net, state)
    return state


register_converter("continual-skeletons", _accepts, convert_continual_skeletons)
