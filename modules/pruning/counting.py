"""Learned parameters ΔParams = ‖ΔW‖₀ and FLOPs of a channel-pruned net, in two conventions.

* ``legacy``: what ``channel-spa-experiments`` logged and Table 1 reports. ΔParams takes each conv's input count
  from the *previous conv in module order* (wrong for downsample convs and residual sums) and counts every BN and
  the head in full; FLOPs reduce only conv *outputs* and count BN/ReLU/pool modules on a 1×3×32×32 probe. The
  unpruned ResNet-50 (CIFAR stem, 10 classes) gives 23,520,842 / 1,644,522 (SPLoRA r32) / 466,338 (r8) /
  13,459,530 (SPPaRA) parameters and 1,304,694,784 FLOPs.
* ``exact``: input channels from the true producers (``modules.pruning.graph.ChannelGraph``; a residual sum keeps a
  channel if any summand keeps it), only trainable parameters of kept channels, conv/linear MACs with in- and
  out-channel reduction.

Masks are ``dict[str, Tensor]`` of bool over each conv's output channels (True = kept), keyed by module name;
``None`` (or a missing name) keeps every channel. "FLOPs" are multiply-accumulates, as in the paper.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..adapters import is_adapter
from .graph import input_mask

__all__ = ["count_flops", "delta_params", "infer_method", "masked_flops"]

Method = Literal["finetune", "splora", "sppara"]
Convention = Literal["legacy", "exact"]
Masks = Mapping[str, Tensor]

_METHODS = ("finetune", "splora", "sppara")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# modules the legacy FLOP counter (ptflops-derived ``src/flops_counter_mask.py``) counts at numel(input)
_ACTIVATIONS = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


# --- adapters (duck-typed: ``modules.adapters`` layers subclass the torch layers they adapt) ------------------------
def _adapter_method(m: nn.Module) -> Method:
    """SPLoRA layers carry an int ``rank``; SPPaRA's full matrix has none."""
    return "splora" if getattr(m, "rank", None) is not None else "sppara"


def infer_method(net: nn.Module) -> Method:
    """The learning method of ``net``: that of its adapter layers, or ``finetune`` when it has none."""
    kinds = {_adapter_method(m) for m in net.modules() if is_adapter(m)}
    if len(kinds) > 1:
        raise ValueError(f"net mixes adapter kinds {sorted(kinds)}; pass method= explicitly")
    return kinds.pop() if kinds else "finetune"


def _resolve(net: nn.Module, method: str | None, rank: int | None) -> tuple[Method, int | None, bool]:
    """(method, rank for plain convs, whether the net has adapter layers)."""
    adapters = [m for m in net.modules() if is_adapter(m)]
    if method is None:
        method = infer_method(net)
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {_METHODS}")
    kinds = {_adapter_method(m) for m in adapters}
    if kinds and kinds != {method}:
        raise ValueError(f"method={method!r} but the net's adapter layers are {sorted(kinds)}; pass that method")
    if rank is None:
        ranks = {m.rank for m in adapters if getattr(m, "rank", None) is not None}
        rank = ranks.pop() if len(ranks) == 1 else None
    return method, rank, bool(adapters)  # type: ignore[return-value]


# --- walking and masks --------------------------------------------------------------------------------------------
def _walk(net: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``net.named_modules()`` without the insides of convs, linears and adapters (an adapter's ``adapter``
    submodule belongs to its layer, never counted twice)."""
    skip: list[str] = []
    for name, m in net.named_modules():
        if name.startswith(tuple(skip)):
            continue
        yield name, m
        if isinstance(m, (*_CONVS, nn.Linear)) or is_adapter(m):
            skip.append(f"{name}.")


def _check_masks(net: nn.Module, masks: Masks | None) -> dict[str, Tensor]:
    """Masks as flat bool tensors; an unknown name or a wrong length raises (nothing is silently ignored)."""
    if not masks:
        return {}
    convs = {name: m for name, m in net.named_modules() if isinstance(m, _CONVS)}
    out = {}
    for name, mask in masks.items():
        if name not in convs:
            raise KeyError(f"mask for {name!r}, which is not a conv of the net (convs: {list(convs)[:5]}...)")
        flat = torch.as_tensor(mask).detach().flatten().cpu() != 0
        if flat.numel() != convs[name].out_channels:
            raise ValueError(f"mask of {name!r} has {flat.numel()} entries; the conv has {convs[name].out_channels}")
        out[name] = flat
    return out


def _out_mask(masks: dict[str, Tensor], name: str, channels: int) -> Tensor:
    return masks.get(name, torch.ones(channels, dtype=torch.bool))


def _or_masks(masks: dict[str, Tensor], convs: dict[str, nn.Module], names: list[str]) -> Tensor | None:
    """OR of the out masks of the convs ``names`` (a conv without a mask keeps all); ``None`` for no names."""
    kept = None
    for name in names:
        m = _out_mask(masks, name, convs[name].out_channels)
        kept = m if kept is None else kept | m
    return kept


def _norm_sources(graph: Any) -> dict[str, list[str]]:
    """BatchNorm name → the convs whose channels it normalises: ``graph.norms`` where the graph has it (a BN after
    a residual sum normalises several), else the inverse of ``graph.norm_after``."""
    norms = getattr(graph, "norms", None)
    if norms is not None:
        return dict(norms)
    return {bn: [conv] for conv, bn in getattr(graph, "norm_after", {}).items() if bn}


def _input_mask(
    graph: Any, masks: dict[str, Tensor], net_convs: dict[str, nn.Module], name: str, size: int
) -> Tensor | None:
    """Kept input channels of layer ``name`` (length ``size``) by ``graph.input_mask``'s rule, a producer without a
    mask keeping all its channels; ``None`` when no conv feeds it."""
    producers = graph.producers.get(name, [])
    full = {p: _out_mask(masks, p, net_convs[p].out_channels) for p in producers}
    return input_mask(graph, full, name, size)


def _grouped_kept(out_mask: Tensor, in_mask: Tensor | None, groups: int, in_channels: int) -> int:
    """Σ_g kept_out_g · kept_in_g: the live (out, in) pairs of a grouped conv's weight."""
    if in_mask is None:
        in_mask = torch.ones(in_channels, dtype=torch.bool)
    outs = out_mask.reshape(groups, -1).sum(1)
    ins = in_mask.reshape(groups, -1).sum(1)
    return int((outs * ins).sum())


def _kernel(m: nn.Module) -> int:
    return int(torch.tensor(m.kernel_size).prod())


def _numel(p: Tensor | None, trainable_only: bool = False) -> int:
    if p is None or (trainable_only and not p.requires_grad):
        return 0
    return p.numel()


# --- ΔParams ------------------------------------------------------------------------------------------------------
def delta_params(
    net: nn.Module,
    masks: Masks | None = None,
    *,
    method: Method | None = None,
    convention: Convention,
    rank: int | None = None,
    graph: Any = None,
    input_size: tuple[int, ...] = (1, 3, 32, 32),
    legacy_unmasked_full: bool = False,
) -> int:
    """Learned parameters ΔParams = ‖ΔW‖₀ of ``net`` under channel ``masks``.

    ``method`` (``finetune``, ``splora``, ``sppara``) defaults to the kind of the net's adapter layers (or
    ``finetune``); an explicit one must agree with them. ``rank`` is the SPLoRA rank for convs that are not
    adapter layers (an unconverted net counted as if converted); adapter layers use their own ``rank``.

    ``convention="legacy"`` (Table 1, ``src/flop.py``): every BatchNorm's γ, β; every Linear in full (an adapter
    Linear: its ``learned_parameter_count()``); each conv r·(n_out + n_in) (SPLoRA), n_out·n_in (SPPaRA) or
    n_out·n_in·k² (fine-pruning), with n_in the kept count of the *previous conv in module order* if its mask has
    ``in_channels`` entries, else ``in_channels``; no conv bias; groups ignored. Every conv counts as masked
    (all-True when it has no mask), the analytic formula of Table 1's density-1.0 rows.
    ``legacy_unmasked_full=True`` reproduces the original quirk instead: a conv that has not lost a filter counts
    all its parameters, the frozen W of an adapter conv included.

    ``convention="exact"``: only parameters that train (``requires_grad``) and touch a kept channel. Input
    channels come from the true producers (``graph``, a ``ChannelGraph``; built on ``zeros(input_size)`` when
    None); adapter layers count ``learned_parameter_count(in_mask, out_mask)`` (trainable bias included); plain
    convs their kept (out, in) pairs · k² (+ kept bias), or, for ``method`` splora/sppara on a net without adapter
    layers, the adapter they would get; a BN counts the channels its convs keep (``graph.norms``, else
    ``graph.norm_after``); a Linear kept inputs · outputs (+ bias); any other parameter (LayerNorm, embeddings,
    attention) counts in full when trainable.
    """
    method, rank, has_adapters = _resolve(net, method, rank)
    flat = _check_masks(net, masks)
    if convention == "legacy":
        return _legacy_params(net, flat, method, rank, legacy_unmasked_full)
    if convention == "exact":
        graph = _graph(net, graph, input_size)
        return _exact_params(net, flat, method, rank, has_adapters, graph)
    raise ValueError(f"unknown convention {convention!r}; use 'legacy' or 'exact'")


def _need_rank(rank: int | None, name: str) -> int:
    if rank is None:
        raise ValueError(f"SPLoRA count of plain conv {name!r} needs rank=; pass the rank the net will be adapted with")
    return rank


def _legacy_params(net: nn.Module, masks: dict[str, Tensor], method: Method, rank: int | None, full: bool) -> int:
    total = 0
    previous: Tensor | None = None  # the mask of the previous conv in module order (the published heuristic)
    for name, m in _walk(net):
        if isinstance(m, _NORMS):
            total += _numel(m.weight) + _numel(m.bias)
        elif isinstance(m, nn.Linear):
            total += m.learned_parameter_count() if is_adapter(m) else _numel(m.weight) + _numel(m.bias)
        elif isinstance(m, _CONVS):
            out_mask = _out_mask(masks, name, m.out_channels)
            n_out = int(out_mask.sum())
            n_in = int(previous.sum()) if previous is not None and previous.numel() == m.in_channels else m.in_channels
            previous = out_mask
            if full and bool(out_mask.all()):
                total += sum(p.numel() for p in m.parameters())
                continue
            kind = _adapter_method(m) if is_adapter(m) else method
            if kind == "splora":
                total += _need_rank(getattr(m, "rank", None) or rank, name) * (n_out + n_in)
            elif kind == "sppara":
                total += n_out * n_in
            else:
                total += n_out * n_in * _kernel(m)
        elif is_adapter(m):  # e.g. an adapted MultiheadAttention
            total += m.learned_parameter_count()
    return total


def _exact_params(
    net: nn.Module, masks: dict[str, Tensor], method: Method, rank: int | None, has_adapters: bool, graph: Any
) -> int:
    convs = {name: m for name, m in net.named_modules() if isinstance(m, _CONVS)}
    bn_sources = _norm_sources(graph)
    total = 0
    for name, m in _walk(net):
        if isinstance(m, _CONVS):
            out_mask = _out_mask(masks, name, m.out_channels)
            in_mask = _input_mask(graph, masks, convs, name, m.in_channels)
            if is_adapter(m):
                total += m.learned_parameter_count(in_mask=in_mask, out_mask=out_mask)
            elif method != "finetune" and not has_adapters:  # an unconverted net counted as its adapted self
                total += _analytic_adapter(m, name, method, rank, out_mask, in_mask)
            else:
                if m.weight.requires_grad:
                    total += _grouped_kept(out_mask, in_mask, m.groups, m.in_channels) * _kernel(m)
                total += int(out_mask.sum()) if m.bias is not None and m.bias.requires_grad else 0
        elif isinstance(m, nn.Linear):
            in_mask = _input_mask(graph, masks, convs, name, m.in_features)
            if is_adapter(m):
                total += m.learned_parameter_count(in_mask=in_mask)
                continue
            n_in = m.in_features if in_mask is None else int(in_mask.sum())
            total += n_in * m.out_features if m.weight.requires_grad else 0
            total += _numel(m.bias, trainable_only=True)
        elif is_adapter(m):  # e.g. an adapted MultiheadAttention: not channel-pruned here
            total += m.learned_parameter_count()
        elif isinstance(m, _NORMS):
            kept_mask = _or_masks(masks, convs, bn_sources.get(name, []))
            kept = m.num_features if kept_mask is None or kept_mask.numel() != m.num_features else int(kept_mask.sum())
            total += sum(kept for p in (m.weight, m.bias) if p is not None and p.requires_grad)
        else:
            total += sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad)
    return total


def _analytic_adapter(
    m: nn.Module, name: str, method: Method, rank: int | None, out_mask: Tensor, in_mask: Tensor | None
) -> int:
    """ΔParams of the adapter ``m`` would get: SPLoRA r·(n_in + n_out) with n_in over Ci/G (column j
    lives while channel j of any group is kept), SPPaRA the live (out, in) pairs; the bias trains when present."""
    n_out = int(out_mask.sum())
    bias = n_out if m.bias is not None else 0
    if method == "sppara":
        return _grouped_kept(out_mask, in_mask, m.groups, m.in_channels) + bias
    per_group = m.in_channels // m.groups
    n_in = per_group if in_mask is None else int(in_mask.reshape(m.groups, per_group).any(0).sum())
    return _need_rank(rank, name) * (n_in + n_out) + bias


def _graph(net: nn.Module, graph: Any, input_size: tuple[int, ...]) -> Any:
    """``graph`` (checked against ``net`` where it can be), or a ``ChannelGraph`` traced on ``zeros(input_size)``."""
    if graph is None:
        from .graph import ChannelGraph

        return ChannelGraph(net, _probe(net, input_size))
    check = getattr(graph, "check", None)
    if callable(check):
        check(net)  # a graph traced before splora()/sppara() names replaced modules
    return graph


# --- FLOPs --------------------------------------------------------------------------------------------------------
@contextmanager
def _probe_mode(net: nn.Module) -> Iterator[None]:
    """Eval mode and no grad for a probe forward; every module's training flag is restored afterwards (BN running
    statistics must not move)."""
    flags = {m: m.training for m in net.modules()}
    net.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _probe(net: nn.Module, input_size: tuple[int, ...]) -> Tensor:
    p = next(net.parameters(), None)
    return torch.zeros(input_size, device=p.device if p is not None else None, dtype=p.dtype if p is not None else None)


Hook = Callable[[str, nn.Module, Tensor, Tensor], int]


def _run_hooks(net: nn.Module, input_size: tuple[int, ...], hook: Hook) -> int:
    """Sum of ``hook(name, module, input, output)`` over every call of every module ``_walk`` yields, on one probe
    forward of ``zeros(input_size)`` in eval mode."""
    total = [0]

    def make(name: str) -> Callable[..., None]:
        def fn(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if inputs and isinstance(inputs[0], Tensor) and isinstance(output, Tensor):
                total[0] += hook(name, module, inputs[0], output)

        return fn

    handles = [m.register_forward_hook(make(name)) for name, m in _walk(net) if name]
    try:
        with _probe_mode(net):
            net(_probe(net, input_size))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def masked_flops(
    net: nn.Module,
    masks: Masks | None = None,
    *,
    input_size: tuple[int, ...] = (1, 3, 32, 32),
    convention: Convention,
    graph: Any = None,
) -> int:
    """Multiply-accumulates of one forward of ``zeros(input_size)`` under channel ``masks`` (called FLOPs, as in
    the paper).

    ``convention="legacy"`` is channel-spa-experiments ``src/flops_counter_mask.py``, module hooks in eval mode:
    conv k_h·k_w·Ci·(out // G)·H_out·W_out with out = Co − pruned (**Ci not reduced**) + out·H_out·W_out for a
    bias; BatchNorm 2·numel(input) if affine; nn.ReLU/PReLU/ELU/LeakyReLU/ReLU6 and nn.MaxPool/AvgPool numel(input);
    Linear numel(input)·out. Functional ops (F.relu), adaptive pools and residual adds are not counted. The
    published numbers use a 1×3×32×32 probe for every dataset.

    ``convention="exact"``: conv and Linear MACs only (no bias, BN, activation or pooling terms), with **both**
    input channels (from the true producers in ``graph``, built when None) and output channels reduced, at the
    given ``input_size``: what the physically pruned, fused net computes in its convs and linears. Only module
    calls are seen: ``nn.MultiheadAttention`` (which calls none of its submodules) and functional matmuls count 0.
    """
    flat = _check_masks(net, masks)
    if convention == "legacy":
        return _run_hooks(net, input_size, lambda n, m, x, y: _legacy_flops(n, m, x, y, flat))
    if convention == "exact":
        graph = _graph(net, graph, input_size)
        convs = {name: m for name, m in net.named_modules() if isinstance(m, _CONVS)}
        return _run_hooks(net, input_size, lambda n, m, x, y: _exact_flops(n, m, x, y, flat, graph, convs))
    raise ValueError(f"unknown convention {convention!r}; use 'legacy' or 'exact'")


def count_flops(*args: Any, **kwargs: Any) -> int:
    """Deprecated alias of ``masked_flops`` (``modules.profiling.count_flops`` counts the calls a net executes)."""
    warnings.warn(
        "modules.pruning.counting.count_flops is renamed masked_flops; the alias goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return masked_flops(*args, **kwargs)


def _legacy_flops(name: str, m: nn.Module, x: Tensor, y: Tensor, masks: dict[str, Tensor]) -> int:
    if isinstance(m, _CONVS):
        out = int(_out_mask(masks, name, m.out_channels).sum())
        positions = y.numel() // m.out_channels  # N·H_out·W_out
        bias = out * positions if m.bias is not None else 0
        return _kernel(m) * m.in_channels * (out // m.groups) * positions + bias
    if isinstance(m, _NORMS):
        return x.numel() * (2 if m.affine else 1)
    if isinstance(m, (*_ACTIVATIONS, *_POOLS)):
        return x.numel()
    if isinstance(m, nn.Linear):
        return x.numel() * m.out_features
    return 0


def _exact_flops(
    name: str, m: nn.Module, x: Tensor, y: Tensor, masks: dict[str, Tensor], graph: Any, convs: dict[str, nn.Module]
) -> int:
    if isinstance(m, _CONVS):
        out_mask = _out_mask(masks, name, m.out_channels)
        in_mask = _input_mask(graph, masks, convs, name, m.in_channels)
        positions = y.numel() // m.out_channels
        return _grouped_kept(out_mask, in_mask, m.groups, m.in_channels) * _kernel(m) * positions
    if isinstance(m, nn.Linear):
        in_mask = _input_mask(graph, masks, convs, name, m.in_features)
        n_in = m.in_features if in_mask is None else int(in_mask.sum())
        return (y.numel() // m.out_features) * n_in * m.out_features
    return 0
