"""Temporally local modules (activations, BatchNorm in eval, per-frame LayerNorm, Dropout, ...).

They need no state: a step is a one-frame clip. ``local(module)`` returns a copy whose class also has the step
protocol, keeping the torch class's weights, ``forward`` and state_dict keys.
"""

from __future__ import annotations

import copy
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .base import CoModule, ordinary_tensors
from .convert import UnsupportedModuleError, check_build_kwargs, register

__all__ = ["StepLocal", "forward_stepping", "local"]

# Elementwise modules take a step as it is; the others see a one-frame clip (so BatchNorm3d gets 5 dims).
_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Dropout, nn.AlphaDropout,
)  # fmt: skip
_PER_FRAME: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.Softmax, nn.LogSoftmax, nn.Flatten,
)  # fmt: skip


class StepLocal(CoModule):
    """Mixin for a module that treats every time step independently."""

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor:
        self._check_local(step.dim() + 1)
        if isinstance(self, _ELEMENTWISE):
            return super().forward(step)  # type: ignore[misc]
        if isinstance(self, nn.modules.batchnorm._BatchNorm) and not self.training:
            # Eval BatchNorm is an affine map per channel, valid for any rank: skip the one-frame reshape.
            return F.batch_norm(step, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(step.unsqueeze(2)).squeeze(2)  # type: ignore[misc]

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor:
        self._check_local(clip.dim())
        return super().forward(clip)  # type: ignore[misc]

    def _check_local(self, clip_dims: int) -> None:
        """Raise when this module, as configured now, mixes time steps (checked once per configuration: this
        runs on every step of every local module)."""
        state = self.__dict__  # plain attributes: nn.Module.__getattr__ on a missing name raises, which is slow
        key = (clip_dims, state.get("training"), *(state.get(a) for a in ("dim", "track_running_stats", "start_dim")))
        key += (state.get("end_dim"),)
        if state.get("_checked_local") == key:
            return
        reason = _nonlocal_reason(self, clip_dims)
        if reason:
            raise UnsupportedModuleError(f"{type(self).__name__} cannot run step by step: {reason}")
        state["_checked_local"] = key


def _nonlocal_reason(module: nn.Module, clip_dims: int) -> str | None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
        return "BatchNorm in training mode normalises with statistics over the whole clip; call .eval()"
    if isinstance(module, nn.modules.instancenorm._InstanceNorm) and (
        module.training or not module.track_running_stats
    ):
        return "InstanceNorm statistics span time unless track_running_stats=True and the module is in eval"
    if isinstance(module, nn.GroupNorm):
        return "GroupNorm statistics span time (normalise per frame with LayerNorm or BatchNorm)"
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) > clip_dims - 3:
        return f"LayerNorm over the last {len(module.normalized_shape)} dims includes time (dim 2)"
    if isinstance(module, nn.Softmax | nn.LogSoftmax) and module.dim is not None and module.dim % clip_dims == 2:
        return "softmax over dim 2 normalises over time"
    if isinstance(module, nn.Flatten) and module.start_dim % clip_dims <= 2 <= module.end_dim % clip_dims:
        return "Flatten merges time with other dims"
    return None


_LOCAL_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


def local(module: nn.Module, dim: int = 2, **kwargs: Any) -> nn.Module:
    """A copy of a temporally local ``module`` that also has the step protocol (same class name and keys).

    Also exported as ``forward_stepping``, continual-inference's name, with its signature: ``dim`` is the time
    dim a step lacks, always 2 here. Unlike the library's, which patches ``module`` in place, the original is left
    as it was (use the returned module), and a module that mixes time steps (BatchNorm in training mode,
    GroupNorm, a LayerNorm or softmax over time, ...) is refused at its first step instead of stepping wrongly.
    """
    if dim != 2:
        raise ValueError(f"local/forward_stepping: time is dim 2 of every clip (B, C, T, ...) here, got dim={dim}")
    check_build_kwargs("local", kwargs)
    if isinstance(module, CoModule):
        return module
    cls = type(module)
    if cls not in _LOCAL_CLASSES:
        _LOCAL_CLASSES[cls] = type(cls.__name__, (StepLocal, cls), {"__module__": cls.__module__})
    out = ordinary_tensors(copy.deepcopy(module))  # e.g. a BatchNorm built under inference_mode
    out.__class__ = _LOCAL_CLASSES[cls]
    return out


forward_stepping = local  # continual-inference's name for the same function


def _reject(reason: str) -> Any:
    def builder(module: nn.Module, **_: Any) -> nn.Module:
        raise UnsupportedModuleError(f"{type(module).__name__} has no continual counterpart: {reason}")

    return builder


for _cls in _ELEMENTWISE + _PER_FRAME:
    register(_cls, local)
register(nn.GroupNorm, _reject("its statistics span time (normalise per frame with LayerNorm or BatchNorm)"))
register(nn.LocalResponseNorm, _reject("its window may span time"))
