"""A pruned net as a dense smaller one: adapters fused, then pruned channels physically removed from the fused
weights.

What goes: channel c of conv X where X's mask drops it and, if X is in a residual group, every member of the group
drops it too (the sum carries the channel otherwise; the union is kept), and X is not pinned by the graph. Slicing
removes the conv's rows (and bias), the BatchNorm entries over those channels, and the consumers' input columns
(the final Linear's too, a flattened channel's block of features at a time). Channels that stay although some
member masks them are baked to zero (weight rows, BN γ and β, consumers' columns), so with masks applied in
``enforced`` mode with ``mask_bn`` the exported net computes exactly what the masked one did. Nothing else is
folded: BatchNorms stay.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..adapters import merge_adapters
from ..profiling import count_params
from .graph import ChannelGraph, GraphError, input_mask
from .masks import strip_mask_hooks

__all__ = ["count_parameters", "export_keep", "export_pruned"]

log = logging.getLogger(__name__)


def count_parameters(net: nn.Module) -> int:
    """Deprecated alias of ``modules.profiling.count_params`` (all parameters, trainable or not)."""
    warnings.warn(
        "modules.pruning.count_parameters is modules.profiling.count_params; the alias goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return count_params(net)


def export_keep(graph: ChannelGraph, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Channels each conv keeps in the export: its mask OR'ed over its residual group, all if pinned."""
    keep = {}
    for name in graph.layers:
        if name in graph.pinned:
            keep[name] = torch.ones_like(masks[name])
            continue
        mask = masks[name].clone()
        for other in graph.group_of(name):
            mask |= masks[other]
        keep[name] = mask
    return keep


def export_pruned(net: nn.Module, graph: ChannelGraph, masks: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``net`` with adapters fused and pruned channels removed; ``net`` is left as it is.

    Exact (eval outputs equal) with respect to ``net`` under ``apply_masks(..., mode="enforced", mask_bn=True)``.
    The copy carries no mask hooks. Logs the parameter counts before and after.
    """
    graph.check(net)
    model = copy.deepcopy(net)
    strip_mask_hooks(model)
    model = merge_adapters(model, inplace=True)  # adapters → plain layers with W + ΔW
    modules = dict(model.named_modules())
    keep = export_keep(graph, masks)
    with torch.no_grad():
        for name in graph.layers:
            _slice_conv(modules[name], masks[name], keep[name], *_inputs(graph, masks, keep, name))
        for name, sources in graph.norms.items():
            if sources:
                _slice_norm(modules[name], _any(masks, sources), _any(keep, sources))
        for name, producers in graph.producers.items():
            if name not in graph.layers and producers:
                _slice_linear(modules[name], *_inputs(graph, masks, keep, name))
    _check_runs(model, graph)
    before, after = count_params(net), count_params(model)
    log.debug("export_pruned: %d → %d parameters (%.1f%%)", before, after, 100 * after / max(before, 1))
    return model


def _any(masks: Mapping[str, Tensor], names: list[str]) -> Tensor:
    out = masks[names[0]].clone()
    for n in names[1:]:
        out |= masks[n]
    return out


def _inputs(
    graph: ChannelGraph, masks: Mapping[str, Tensor], keep: Mapping[str, Tensor], name: str
) -> tuple[Tensor | None, Tensor | None]:
    """(live input channels under the masks, input channels the export keeps) for a consumer; ``None`` = all."""
    return input_mask(graph, masks, name), input_mask(graph, keep, name)


def _slice_conv(conv: nn.Module, live: Tensor, keep: Tensor, live_in: Tensor | None, keep_in: Tensor | None) -> None:
    w = conv.weight.detach().clone()
    w[~live.to(w.device)] = 0  # masked rows the export keeps (group union, pinned) must still output zero
    bias = None if conv.bias is None else conv.bias.detach().clone()
    if bias is not None:
        bias[~live.to(bias.device)] = 0
    if live_in is not None and conv.groups == 1:  # a grouped conv is pinned whole, inputs included
        w[:, ~live_in.to(w.device)] = 0
    w = w[keep.to(w.device)]
    if keep_in is not None and conv.groups == 1:
        w = w[:, keep_in.to(w.device)]
        conv.in_channels = int(keep_in.sum())
    conv.out_channels = int(keep.sum())
    conv.weight = nn.Parameter(w, requires_grad=conv.weight.requires_grad)
    if bias is not None:
        conv.bias = nn.Parameter(bias[keep.to(bias.device)], requires_grad=conv.bias.requires_grad)


def _slice_norm(bn: nn.Module, live: Tensor, keep: Tensor) -> None:
    """BN over the kept channels; masked channels that stay get γ = β = 0 (output exactly 0 in eval)."""
    for attr in ("weight", "bias", "running_mean", "running_var"):
        t = getattr(bn, attr)
        if t is None:
            continue
        data = t.detach().clone()
        if attr in ("weight", "bias"):
            data[~live.to(data.device)] = 0
        data = data[keep.to(data.device)]
        if isinstance(t, nn.Parameter):
            setattr(bn, attr, nn.Parameter(data, requires_grad=t.requires_grad))
        else:
            setattr(bn, attr, data)
    bn.num_features = int(keep.sum())


def _slice_linear(linear: nn.Module, live_in: Tensor | None, keep_in: Tensor | None) -> None:
    w = linear.weight.detach().clone()
    factor = w.shape[1] // keep_in.numel()  # features per channel after a flatten
    if live_in is not None:
        w[:, ~live_in.repeat_interleave(factor).to(w.device)] = 0
    w = w[:, keep_in.repeat_interleave(factor).to(w.device)]
    linear.in_features = w.shape[1]
    linear.weight = nn.Parameter(w, requires_grad=linear.weight.requires_grad)


def _check_runs(model: nn.Module, graph: ChannelGraph) -> None:
    """One eval forward on a zero input of the traced shape, so an inconsistent slice fails here, not later."""
    placeholder = next(n for n in graph.module.graph.nodes if n.op == "placeholder")
    meta = placeholder.meta.get("tensor_meta")
    if meta is None:
        return
    param = next(model.parameters(), None)
    x = torch.zeros((1, *meta.shape[1:]), dtype=meta.dtype, device=param.device if param is not None else "cpu")
    training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as e:
        raise GraphError(f"export_pruned: the sliced net does not run ({e}); its forward may hard-code widths") from e
    finally:
        for m, mode in training.items():
            m.training = mode
