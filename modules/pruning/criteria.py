"""Per-channel pruning scores and the global selection (LukasHedegaard/channel-spa-experiments
``src/filterprune.py``).

A ranking pass feeds every training batch to ``ChannelScorer.update`` (no optimiser step), then ``normalised()``
rescales per layer and ``select`` picks the n globally lowest channels.

* ``grad`` (Sun et al. 2017): s_c += Σ_{n,h,w} g / (N·H·W), g = ∂L/∂a at the conv output a; signed.
* ``taylor`` (Molchanov et al. 2017): s_c += Σ_{n,h,w} a·g / (N·H·W); signed.
* ``weight`` (Li et al. 2017): s_c += ‖W̃_c‖₁ every batch, W̃ the BN-folded *base* weight (adapters ignored).
* ``lrp`` (Yeom et al. 2021): s_c += Σ_{n,h,w} |R_c|, see ``lrp.py``.

Already-pruned channels get 99,999,999 added every batch, so they are never picked again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .graph import ChannelGraph
from .lrp import HIGHEST, LOWEST, conv_relevance, folded_weight

__all__ = ["EXTREMELY_HIGH_VALUE", "ChannelScorer", "Criterion", "normalise", "select"]

Criterion = Literal["weight", "grad", "taylor", "lrp"]
Coupling = Literal["none", "group"]
EXTREMELY_HIGH_VALUE = 99_999_999  # the published EHV for pruned channels


class ChannelScorer:
    """Accumulates one criterion's per-channel scores for every conv of ``graph`` over batches.

    grad/taylor/lrp run the net in whatever mode it is in. The published ranking pass used ``train()``, so for
    grad/taylor BN statistics moved (a side effect legacy runs reproduce); its lrp/weight pass ran on a folded copy
    and left the net's statistics alone, so put the net in ``eval()`` for lrp to match. ``weight`` needs no forward.
    Parameters' ``.grad`` are never written (``autograd.grad`` w.r.t. the conv outputs only).
    """

    def __init__(
        self,
        net: nn.Module,
        graph: ChannelGraph,
        masks: Mapping[str, Tensor],
        criterion: Criterion,
        *,
        lrp_bounds: tuple[float, float] = (LOWEST, HIGHEST),
    ) -> None:
        if criterion not in ("weight", "grad", "taylor", "lrp"):
            raise ValueError(f"unknown criterion {criterion!r}; use 'weight', 'grad', 'taylor' or 'lrp'")
        graph.check(net)
        self.net, self.graph, self.masks, self.criterion = net, graph, masks, criterion
        self.lrp_bounds = lrp_bounds
        self.reset()

    def reset(self) -> None:
        """Zero the scores (the published pruner resets after each selection)."""
        self.scores = {name: torch.zeros(m.out_channels, dtype=torch.float64) for name, m in self.graph.layers.items()}
        self.num_batches = 0

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> None:
        """Add one batch's scores (``x`` inputs, ``y`` targets; ``loss_fn`` for grad/taylor)."""
        if self.criterion == "weight":
            values = self._weight()
        elif self.criterion == "lrp":
            low, high = self.lrp_bounds
            relevance = conv_relevance(self.graph, x, y, low=low, high=high).convs
            values = {name: _sum_over_channels(r.abs()) for name, r in relevance.items()}
        else:
            values = self._gradient(x, y, loss_fn)
        for name, score in self.scores.items():
            v = values.get(name)
            v = torch.zeros_like(score) if v is None else v.detach().to("cpu", torch.float64)
            v[~self.masks[name].cpu()] = EXTREMELY_HIGH_VALUE
            score += v
        self.num_batches += 1

    def _weight(self) -> dict[str, Tensor]:
        modules = dict(self.net.named_modules())
        values = {}
        for name, conv in self.graph.layers.items():
            bn = self.graph.norm_after[name]
            w = folded_weight(conv, modules[bn] if bn else None)
            values[name] = w.abs().flatten(1).sum(1)
        return values

    def _gradient(self, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> dict[str, Tensor]:
        """g = ∂L/∂a at each conv output via ``autograd.grad`` (so no parameter ``.grad`` is written)."""
        outputs: dict[str, Tensor] = {}

        def keep(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
                outputs[name] = out

            return hook

        handles = [conv.register_forward_hook(keep(name)) for name, conv in self.graph.layers.items()]
        try:
            with torch.enable_grad():
                # the input needs grad so that convs of a frozen net (VGG features, frozen as published) still get ∂L/∂a
                x = x.detach().requires_grad_(x.is_floating_point())
                loss = loss_fn(self.net(x), y)
                names = list(outputs)
                grads = torch.autograd.grad(loss, [outputs[n] for n in names], allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        values = {}
        for name, g in zip(names, grads):
            if g is None:
                continue
            a = outputs[name].detach()
            per = g if self.criterion == "grad" else a * g
            values[name] = _sum_over_channels(per) / (per.numel() / per.shape[1])
        return values

    def normalised(self, norm: bool = True) -> dict[str, Tensor]:
        """The accumulated scores, rescaled per layer as the published ``--norm`` did."""
        return normalise(self.scores, self.masks, self.criterion, norm)


def _sum_over_channels(t: Tensor) -> Tensor:
    """Σ over every dim but the channel dim 1."""
    return t.transpose(0, 1).flatten(1).sum(1)


def normalise(
    scores: Mapping[str, Tensor], masks: Mapping[str, Tensor], criterion: Criterion, norm: bool = True
) -> dict[str, Tensor]:
    """grad/taylor: v = |s| / ‖|s|‖₂; weight/lrp: v = s / Σ s; sums over the layer's unpruned channels only.
    Without ``norm``: |s| for grad/taylor, raw s for weight/lrp. A layer whose unpruned sum is 0 is left as is."""
    out = {}
    for name, s in scores.items():
        kept = masks[name].to(s.device)
        if criterion in ("grad", "taylor"):
            v = s.abs()
            denom = v[kept].pow(2).sum().sqrt() if norm else None
        else:
            v = s.clone()
            denom = v[kept].sum() if norm else None
        out[name] = v / denom if denom is not None and bool(denom != 0) else v
    return out


def select(
    scores: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    n: int,
    coupling: Coupling = "none",
    *,
    graph: ChannelGraph | None = None,
) -> dict[str, Tensor]:
    """The ``n`` globally lowest-scored unpruned channels, ``{conv: sorted indices}``.

    Layers are taken in name order and ties go to the earlier layer and lower index (``heapq.nsmallest`` on the
    concatenation, as published). A channel that would be its layer's last is passed over for the next one (the
    published guard left one and then failed its count assert).

    ``coupling="group"`` (needs ``graph``): the convs of a residual group share their channels, so channel c of a
    group is one candidate scored by the sum over its members that keep it and pruned in all of them, costing that
    many filters; candidates that would overshoot ``n`` are passed over, so exactly ``n`` go where possible.
    """
    if coupling not in ("none", "group"):
        raise ValueError(f"unknown coupling {coupling!r}; use 'none' or 'group'")
    if coupling == "group" and graph is None:
        raise ValueError("coupling='group' needs the ChannelGraph (graph=...) for its residual groups")
    units = _units(scores, masks, graph.groups if coupling == "group" else [])
    kept = {name: int(m.sum()) for name, m in masks.items()}
    chosen: dict[str, list[int]] = {}
    budget = n
    order = torch.sort(torch.tensor([score for score, _ in units], dtype=torch.float64), stable=True).indices
    for i in order.tolist():
        if budget == 0:
            break
        _, members = units[i]
        if len(members) > budget or any(kept[name] <= 1 for name, _ in members):
            continue
        for name, c in members:
            chosen.setdefault(name, []).append(c)
            kept[name] -= 1
        budget -= len(members)
    return {name: torch.tensor(sorted(idx), dtype=torch.long) for name, idx in sorted(chosen.items())}


def _units(
    scores: Mapping[str, Tensor], masks: Mapping[str, Tensor], groups: list[list[str]]
) -> list[tuple[float, list[tuple[str, int]]]]:
    """Candidates ``(score, [(conv, channel), ...])`` in name/index order; pruned channels are never candidates."""
    grouped = {name: g for g in groups for name in g}
    units: list[tuple[str, float, list[tuple[str, int]]]] = []
    for name in sorted(scores):
        if name in grouped:
            continue
        s, m = scores[name].tolist(), masks[name].tolist()
        units += [(name, s[c], [(name, c)]) for c in range(len(s)) if m[c]]
    for group in groups:
        s = {name: scores[name].tolist() for name in group}
        m = {name: masks[name].tolist() for name in group}
        for c in range(len(m[group[0]])):
            members = [(name, c) for name in group if m[name][c]]
            if members:
                units.append((min(group), sum(s[name][c] for name, _ in members), members))
    # stable on (layer name, channel): a group sits where its first member's name would
    units.sort(key=lambda u: (u[0], u[2][0][1]))
    return [(score, members) for _, score, members in units]
