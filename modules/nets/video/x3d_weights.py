"""Checkpoint formats of X3D / CoX3D, registered with ``modules.nets.weights``.

* ``slowfast-x3d``: facebookresearch/SlowFast ``x3d_{xs,s,m,l}.pyth`` (``dl.fbaipublicfiles.com/pyslowfast/
  x3d_models/``): ``{"model_state": {...}}`` with our key names (``s1.pathway0_stem.conv_xy.weight``,
  ``s2.pathway0_res0.branch2.se.fc1.weight``, ``head.projection.weight``, ...): the identity mapping.
* ``pytorchvideo-x3d``: the pytorchvideo hub X3D (``create_x3d``; ``dl.fbaipublicfiles.com/pytorchvideo/model_zoo/
  kinetics/X3D_{XS,S,M,L}.pyth``): ``{"model_state": {"blocks.N...."}}``. Its naming differs in two traps:
  ``Conv2plus1d(conv_t=<the 1×3×3 conv>, conv_xy=<the 5×1×1 conv>)`` swaps the stem's names, and
  ``create_x3d_res_block`` gives the shortcut a BN only when the width changes, so res2's first block (24 → 24
  channels, stride 2) has ``branch1_conv`` but no ``branch1_norm``. We load an identity BN there (γ 1, β 0,
  mean 0, var 1 − eps), which computes what pytorchvideo's net computes.

Both formats serve X3D and CoX3D alike (identical keys). The state dict may be wrapped as any training checkpoint
(``modules.nets.weights.unwrap_state_dict``: ``model_state``, ``state_dict``, ``model``, DDP's ``module.``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..weights import register_converter, unwrap_state_dict
from .x3d import X3D, CoX3D

__all__ = ["convert_pytorchvideo_x3d", "convert_slowfast_x3d", "pytorchvideo_to_ours"]

log = logging.getLogger(__name__)


def _is_x3d(net: nn.Module) -> bool:
    return isinstance(net, X3D | CoX3D)


def _has_prefix(raw: Mapping[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in unwrap_state_dict(raw))


# --- SlowFast -------------------------------------------------------------------------------------------------
def convert_slowfast_x3d(net: nn.Module, raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """SlowFast's X3D keys are ours."""
    return unwrap_state_dict(raw)


# --- pytorchvideo ---------------------------------------------------------------------------------------------
#: (pattern, replacement) applied in order to each pytorchvideo key; the first match wins.
_PTV_PREFIXES: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
    (r"^blocks\.0\.conv\.conv_t\.", "s1.pathway0_stem.conv_xy."),  # the 1×3×3 conv, despite the name
    (r"^blocks\.0\.conv\.conv_xy\.", "s1.pathway0_stem.conv."),  # the depthwise 5×1×1 conv
    (r"^blocks\.0\.norm\.", "s1.pathway0_stem.bn."),
    (r"^blocks\.([1-4])\.res_blocks\.(\d+)\.", lambda m: f"s{int(m[1]) + 1}.pathway0_res{m[2]}."),
    (r"^blocks\.5\.pool\.pre_conv\.", "head.conv_5."),
    (r"^blocks\.5\.pool\.pre_norm\.", "head.conv_5_bn."),
    (r"^blocks\.5\.pool\.post_conv\.", "head.lin_5."),
    (r"^blocks\.5\.proj\.", "head.projection."),
]
#: Renames inside a residual block (after the prefix above).
_PTV_BLOCK: list[tuple[str, str]] = [
    (r"\.branch1_conv\.", ".branch1."),
    (r"\.branch1_norm\.", ".branch1_bn."),
    (r"\.branch2\.conv_a\.", ".branch2.a."),
    (r"\.branch2\.norm_a\.", ".branch2.a_bn."),
    (r"\.branch2\.conv_b\.", ".branch2.b."),
    (r"\.branch2\.norm_b\.0\.", ".branch2.b_bn."),  # norm_b = Sequential(BatchNorm3d, SE or Identity)
    (r"\.branch2\.norm_b\.1\.block\.0\.", ".branch2.se.fc1."),  # fvcore SqueezeExcitation.block = (conv, ReLU,
    (r"\.branch2\.norm_b\.1\.block\.2\.", ".branch2.se.fc2."),  # conv, Sigmoid)
    (r"\.branch2\.conv_c\.", ".branch2.c."),
    (r"\.branch2\.norm_c\.", ".branch2.c_bn."),
]


def pytorchvideo_to_ours(key: str) -> str:
    """Our name for a pytorchvideo X3D key; keys of no known layer are returned unchanged (reported unexpected)."""
    for pattern, repl in _PTV_PREFIXES:
        new, n = re.subn(pattern, repl, key, count=1)
        if n:
            if ".pathway0_res" in new:
                for block_pattern, block_repl in _PTV_BLOCK:
                    new, m = re.subn(block_pattern, block_repl, new, count=1)
                    if m:
                        break
            return new
    return key


def _identity_bn(bn: nn.BatchNorm3d) -> dict[str, Tensor]:
    # var = 1 - eps makes (x - 0) / sqrt(var + eps) * 1 + 0 the identity up to float rounding.
    c = bn.num_features
    return {
        "weight": torch.ones(c),
        "bias": torch.zeros(c),
        "running_mean": torch.zeros(c),
        "running_var": torch.full((c,), 1.0 - bn.eps),
        "num_batches_tracked": torch.tensor(0),
    }


def convert_pytorchvideo_x3d(net: nn.Module, raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename pytorchvideo's ``blocks.N...`` keys to ours; shortcut convs without a BN get an identity BN."""
    state = {pytorchvideo_to_ours(k): v for k, v in unwrap_state_dict(raw).items()}
    modules = dict(net.named_modules())
    filled = []
    for key in [k for k in state if k.endswith(".branch1.weight")]:
        block = key.removesuffix(".branch1.weight")
        bn = modules.get(f"{block}.branch1_bn")
        if isinstance(bn, nn.BatchNorm3d) and f"{block}.branch1_bn.weight" not in state:
            state |= {f"{block}.branch1_bn.{name}": t for name, t in _identity_bn(bn).items()}
            filled.append(block)
    if filled:
        log.info("pytorchvideo X3D has no shortcut BN in %s; loaded identity BNs there", ", ".join(filled))
    return state


register_converter(
    "slowfast-x3d", lambda net, raw: _is_x3d(net) and _has_prefix(raw, "s1.pathway0_stem."), convert_slowfast_x3d
)
register_converter(
    "pytorchvideo-x3d",
    lambda net, raw: _is_x3d(net) and _has_prefix(raw, "blocks.0.conv.conv_t."),
    convert_pytorchvideo_x3d,
)
