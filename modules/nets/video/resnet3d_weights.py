"""Checkpoint converters for the 3D ResNets of ``resnet3d`` (Slow, I3D and their continual twins CoSlow, CoI3D).

Our nets use SlowFast's key names, and the continual twins share them, so each converter serves both. The state
dict of the torch formats may be wrapped as any training checkpoint (``modules.nets.weights.unwrap_state_dict``).
Formats:

* ``slowfast``: SlowFast ``.pyth``/``.pth`` (``{"model_state": state_dict}``, or ``state_dict``, or a bare state
  dict), keys already ours (e.g. SlowFast's ``SLOW_8x8_R50.pyth``).
* ``pytorchvideo``: the pytorchvideo hub / model-zoo format of ``create_resnet``, e.g.
  ``pytorchvideo/model_zoo/kinetics/SLOW_8x8_R50.pyth`` (``model_state`` or a bare dict, optionally with
  Lightning's ``model.`` prefix): ``blocks.0`` = stem (``conv``, ``norm``), ``blocks.k.res_blocks.j`` = residual
  blocks (``branch1_conv``, ``branch1_norm``, ``branch2.{conv,norm}_{a,b,c}``), the last block = head (``proj``).
  An optional pool between stages (pytorchvideo's ``stage1_pool``, I3D) shifts the block indices; stages are
  matched in order, so both layouts load.
* ``caffe2``: Caffe2 pickles ``{"blobs": {name: ndarray}}`` such as SlowFast's ``I3D_8x8_R50.pkl``, renamed with
  SlowFast's regular expressions (``slowfast/utils/c2_model_loading.py``) and shapes fitted as SlowFast's
  ``checkpoint.load_checkpoint`` does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..weights import register_converter, unwrap_state_dict
from .resnet3d import CoResNet3D, ResNet3D

__all__ = ["caffe2_to_slowfast_name", "pytorchvideo_to_slowfast_name"]

log = logging.getLogger(__name__)


def _is_resnet3d(net: nn.Module) -> bool:
    return isinstance(net, ResNet3D | CoResNet3D)


# --- (a) SlowFast: identity -------------------------------------------------------------------------
def _slowfast_accepts(net: nn.Module, raw: Mapping[str, Any]) -> bool:
    return _is_resnet3d(net) and "s1.pathway0_stem.conv.weight" in unwrap_state_dict(raw)


def _slowfast_convert(net: nn.Module, raw: Mapping[str, Any]) -> dict[str, Tensor]:
    return unwrap_state_dict(raw)


# --- (b) pytorchvideo ---------------------------------------------------------------------------------
#: Renames inside a residual block (pytorchvideo ResBlock / BottleneckBlock → SlowFast ResBlock / transform).
_PTV_BLOCK_RULES = [
    (r"^branch1_conv\.", "branch1."),
    (r"^branch1_norm\.", "branch1_bn."),
    (r"^branch2\.conv_([abc])\.", r"branch2.\1."),
    (r"^branch2\.norm_([abc])\.", r"branch2.\1_bn."),
]
_PTV_STEM_RULES = [(r"^conv\.", "conv."), (r"^norm\.", "bn.")]
_PTV_HEAD_RULES = [(r"^proj\.", "projection.")]


def _apply(rules: list[tuple[str, str]], rest: str) -> str | None:
    for pattern, repl in rules:
        if re.match(pattern, rest):
            return re.sub(pattern, repl, rest)
    return None


def _ptv_layout(keys: list[str]) -> tuple[list[int], int]:
    """Indices of the ``blocks`` that are residual stages (in order) and of the head block."""
    stages = sorted({int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.res_blocks\.", k))})
    heads = sorted({int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.proj\.", k))})
    if len(stages) != 4 or len(heads) != 1:
        raise ValueError(
            f"pytorchvideo checkpoint: expected 4 residual stages and one head among `blocks.*`, found stages at "
            f"blocks {stages} and a head (`proj`) at blocks {heads}; is this a ResNet-50 (create_resnet) checkpoint?"
        )
    return stages, heads[0]


def pytorchvideo_to_slowfast_name(key: str, stage_blocks: list[int], head_block: int) -> str:
    """Our name for pytorchvideo key ``key`` (``model.`` prefix already removed); unknown keys come back
    unchanged (prefixed ``pytorchvideo:``) so that the load report lists them as unexpected."""
    m = re.match(r"blocks\.(\d+)\.(.*)$", key)
    if m is not None:
        block, rest = int(m.group(1)), m.group(2)
        if block == 0 and (new := _apply(_PTV_STEM_RULES, rest)) is not None:
            return f"s1.pathway0_stem.{new}"
        if block == head_block and (new := _apply(_PTV_HEAD_RULES, rest)) is not None:
            return f"head.{new}"
        r = re.match(r"res_blocks\.(\d+)\.(.*)$", rest)
        if block in stage_blocks and r is not None and (new := _apply(_PTV_BLOCK_RULES, r.group(2))) is not None:
            return f"s{stage_blocks.index(block) + 2}.pathway0_res{r.group(1)}.{new}"
    return f"pytorchvideo:{key}"


def _pytorchvideo_accepts(net: nn.Module, raw: Mapping[str, Any]) -> bool:
    state = unwrap_state_dict(raw)
    return _is_resnet3d(net) and ("blocks.0.conv.weight" in state or "model.blocks.0.conv.weight" in state)


def _pytorchvideo_convert(net: nn.Module, raw: Mapping[str, Any]) -> dict[str, Tensor]:
    state = {k.removeprefix("model."): v for k, v in unwrap_state_dict(raw).items()}
    stages, head = _ptv_layout(list(state))
    return {pytorchvideo_to_slowfast_name(k, stages, head): v for k, v in state.items()}


# --- (c) Caffe2 .pkl --------------------------------------------------------------------------------
#: SlowFast's ``get_name_convert_func`` pairs for single-pathway ResNets, applied in order with ``re.sub``.
#: (The non-local and SlowFast-fusion pairs are left out: those blobs have no place in these nets and show up as
#: unexpected keys.) E.g. ``res4_5_branch2c_bn_s`` → ``s4.pathway0_res5.branch2.c_bn.weight``,
#: ``res3_0_branch1_w`` → ``s3.pathway0_res0.branch1.weight``, ``res_conv1_bn_riv`` →
#: ``s1.pathway0_stem.bn.running_var``, ``conv1_w`` → ``s1.pathway0_stem.conv.weight``, ``pred_w`` →
#: ``head.projection.weight``. Caffe2's res2..res5 are our s2..s5, with block indices from 0.
_C2_PAIRS = [
    (r"^res([0-9]+)_([0-9]+)_branch([0-9]+)([a-z])_(.*)", r"s\1.pathway0_res\2.branch\3.\4_\5"),
    (r"^res_conv1_bn_(.*)", r"s1.pathway0_stem.bn.\1"),
    (r"^conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    (r"^res([0-9]+)_([0-9]+)_branch([0-9]+)_(.*)", r"s\1.pathway0_res\2.branch\3_\4"),
    (r"^res_conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    (r"pred_(.*)", r"head.projection.\1"),
    (r"(.*)bn.b\Z", r"\1bn.bias"),
    (r"(.*)bn.s\Z", r"\1bn.weight"),
    (r"(.*)bn.rm\Z", r"\1bn.running_mean"),
    (r"(.*)bn.riv\Z", r"\1bn.running_var"),  # Caffe2's "riv" blob holds the running variance, as SlowFast reads it
    (r"(.*)[\._]b\Z", r"\1.bias"),
    (r"(.*)[\._]w\Z", r"\1.weight"),
]
#: Solver blobs (momentum buffers, learning rate, iteration) that SlowFast skips without a word.
_C2_SOLVER_BLOBS = ("momentum", "lr", "model_iter")


def caffe2_to_slowfast_name(name: str) -> str:
    """SlowFast's name for Caffe2 blob ``name``."""
    for pattern, repl in _C2_PAIRS:
        name = re.sub(pattern, repl, name)
    return name


def _fit(key: str, blob: Any, shape: tuple[int, ...]) -> Tensor:
    """Fit a Caffe2 blob to our parameter's shape where the layouts agree; otherwise return it as is, and
    ``load_pretrained`` names the mismatch."""
    t = torch.as_tensor(np.asarray(blob))
    if tuple(t.shape) == shape:
        return t
    if t.dim() < len(shape):
        # SlowFast: blobs with fewer dims get trailing singleton dims (a linear blob for a 1×1×1 conv).
        padded = t.reshape(*t.shape, *(1,) * (len(shape) - t.dim()))
        if tuple(padded.shape) == shape:
            return padded
    if [d for d in t.shape if d != 1] == [d for d in shape if d != 1]:
        return t.reshape(shape)  # e.g. a (C, 1, 1, 1, 1) scale for a (C,) BatchNorm weight, or a conv-style fc
    if key == "head.projection.weight" and t.dim() == 2 and tuple(t.shape[::-1]) == shape and shape[0] != shape[1]:
        # Caffe2's FC stores (out, in) like torch; an (in, out) matrix (a transposed export) is unambiguous when
        # in != out. SlowFast would skip it with a warning and keep a random head; we transpose it instead.
        log.info("%s: transposing the Caffe2 blob %s to %s", key, tuple(t.shape), shape)
        return t.t().contiguous()
    return t


def _caffe2_accepts(net: nn.Module, raw: Mapping[str, Any]) -> bool:
    return _is_resnet3d(net) and isinstance(raw.get("blobs"), Mapping)


def _caffe2_convert(net: nn.Module, raw: Mapping[str, Any]) -> dict[str, Tensor]:
    own = net.state_dict()
    state: dict[str, Tensor] = {}
    skipped = 0
    for name, blob in raw["blobs"].items():
        key = caffe2_to_slowfast_name(name)
        if key not in own:
            if any(s in name for s in _C2_SOLVER_BLOBS):
                skipped += 1
                continue
            state[f"caffe2:{name}"] = torch.as_tensor(np.asarray(blob))  # reported as unexpected
            continue
        state[key] = _fit(key, blob, tuple(own[key].shape))
    # Caffe2 keeps no BatchNorm batch counter; it only matters for momentum=None, so start it at 0 rather than
    # report dozens of "missing" counters for a complete checkpoint.
    for key in own:
        if key.endswith(".num_batches_tracked") and key.replace(".num_batches_tracked", ".weight") in state:
            state[key] = torch.zeros((), dtype=torch.long)
    log.debug("caffe2: %d blobs converted, %d solver blobs skipped", len(state), skipped)
    return state


register_converter("resnet3d-caffe2", _caffe2_accepts, _caffe2_convert)
register_converter("resnet3d-pytorchvideo", _pytorchvideo_accepts, _pytorchvideo_convert)
register_converter("resnet3d-slowfast", _slowfast_accepts, _slowfast_convert)
