"""Output-channel masks of a net's convs, and the two ways of making them act (``paper/structured-pruning-adapters.md``,
known defects).

* ``enforced`` (the default): forward hooks zero the pruned channels of each conv's output, which
  equals masking the rows of W + ΔW and of b (for adapters too), and, with ``mask_bn``, the same after the
  BatchNorm that follows, so a pruned channel is zero downstream whatever the optimiser does to its weights.
  Consumers' inputs are masked by their producers' masks (= masking the columns of W + ΔW). A net pruned this way
  exports exactly to a smaller dense one (``export_pruned``).
* ``legacy`` (what channel-spa-experiments ``src/prune_layer.py`` did): the rows of the base W (and b) of the convs
  pruned since the last call are zeroed once, in place; no hooks, adapter rows (B, P) and BN untouched. Fine-pruned
  filters regrow during recovery and SPLoRA keeps adding B_c·A to "pruned" channels, as in the published runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .graph import ChannelGraph

__all__ = ["ChannelMasks", "MaskHandle", "apply_masks", "strip_mask_hooks"]

Mode = Literal["enforced", "legacy"]


class ChannelMasks(Mapping[str, Tensor]):
    """One bool mask per conv over its output channels (``True`` = kept), all ``True`` at the start.

    A read-only ``Mapping[str, Tensor]``: change masks through ``prune``, so that ``version`` (read by the enforcing
    hooks) and the set of layers pruned since the last legacy application stay right.
    """

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self._masks = {name: torch.ones(int(c), dtype=torch.bool) for name, c in sizes.items()}
        self.version = 0
        self.touched: set[str] = set()  # pruned since the last apply_masks(mode="legacy")

    @classmethod
    def from_graph(cls, graph: ChannelGraph) -> ChannelMasks:
        """All-kept masks for every prunable conv of ``graph``."""
        return cls({name: m.out_channels for name, m in graph.layers.items()})

    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    @property
    def total(self) -> int:
        """T, the number of filters before pruning."""
        return sum(m.numel() for m in self._masks.values())

    @property
    def num_kept(self) -> int:
        return sum(int(m.sum()) for m in self._masks.values())

    @property
    def num_pruned(self) -> int:
        return self.total - self.num_kept

    @property
    def density(self) -> float:
        """Fraction of filters kept: the tables' "density" (filters, not weights, as the published code counted)."""
        return self.num_kept / self.total

    def prune(self, name: str, idx: Sequence[int] | Tensor) -> int:
        """Mark channels ``idx`` of conv ``name`` pruned; returns how many. Pruning a channel twice, or a layer's
        last channel, is an error (the selection in ``criteria.select`` never asks for either)."""
        if name not in self._masks:
            raise KeyError(f"no conv {name!r} in the masks; known: {', '.join(list(self._masks)[:8])}...")
        mask = self._masks[name]
        idx = torch.as_tensor(idx, dtype=torch.long).flatten()
        if idx.numel() == 0:
            return 0
        if idx.unique().numel() != idx.numel() or int(idx.min()) < 0 or int(idx.max()) >= mask.numel():
            raise ValueError(f"{name}: channel indices must be unique and in [0, {mask.numel()}), got {idx.tolist()}")
        if not bool(mask[idx].all()):
            raise ValueError(f"{name}: channels {idx[~mask[idx]].tolist()} are already pruned")
        if int(mask.sum()) == idx.numel():
            raise ValueError(f"{name}: pruning {idx.numel()} channels would remove all its filters; keep at least one")
        mask[idx] = False
        self.version += 1
        self.touched.add(name)
        return idx.numel()

    def prune_many(self, selection: Mapping[str, Tensor | Sequence[int]]) -> int:
        """``prune`` every ``{name: idx}`` of a selection; returns the total."""
        return sum(self.prune(name, idx) for name, idx in selection.items())

    def state_dict(self) -> dict[str, Tensor]:
        return {name: m.clone() for name, m in self._masks.items()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore masks saved by ``state_dict``; names and sizes must match the convs these masks cover."""
        if set(state) != set(self._masks):
            missing, unexpected = set(self._masks) - set(state), set(state) - set(self._masks)
            raise KeyError(f"mask names differ: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for name, m in state.items():
            if m.shape != self._masks[name].shape:
                have = self._masks[name].numel()
                raise ValueError(f"{name}: the saved mask has {m.numel()} channels, the conv has {have}")
            self._masks[name] = m.to(torch.bool).cpu().clone()
            if not bool(self._masks[name].all()):
                self.touched.add(name)
        self.version += 1

    def __repr__(self) -> str:
        return f"ChannelMasks({len(self)} convs, {self.num_kept}/{self.total} filters kept, density {self.density:.4f})"


# --- hooks ----------------------------------------------------------------------------------------------------
class _ChannelMask:
    """Multiplies dim 1 by the OR of ``names``' masks (features ``c·k ... c·k+k-1`` after a flatten by ``k``).
    Cached per masks version and device, so a step costs one multiply."""

    def __init__(self, masks: Mapping[str, Tensor], names: Sequence[str]) -> None:
        self.masks, self.names = masks, list(names)
        self._cache: tuple[object, ...] = ()

    def factor(self, x: Tensor) -> Tensor:
        key = (getattr(self.masks, "version", None), x.device, x.dtype, x.shape[1], x.dim())
        if self._cache and self._cache[0] == key and key[0] is not None:
            return self._cache[1]
        mask = self.masks[self.names[0]].clone()
        for name in self.names[1:]:
            mask |= self.masks[name]
        mask = mask.repeat_interleave(x.shape[1] // mask.numel()).to(device=x.device, dtype=x.dtype)
        mask = mask.view(1, -1, *([1] * (x.dim() - 2)))
        self._cache = (key, mask)
        return mask


class _OutputMask(_ChannelMask):
    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return output * self.factor(output)


class _InputMask(_ChannelMask):
    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (args[0] * self.factor(args[0]), *args[1:])


_HANDLES: weakref.WeakKeyDictionary[nn.Module, MaskHandle] = weakref.WeakKeyDictionary()


class MaskHandle:
    """What ``apply_masks`` installed on a net; ``remove()`` takes the hooks off again."""

    def __init__(self, net: nn.Module, mode: Mode, handles: list[RemovableHandle]) -> None:
        self.net, self.mode, self.handles = net, mode, handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        if _HANDLES.get(self.net) is self:
            del _HANDLES[self.net]

    def __repr__(self) -> str:
        return f"MaskHandle(mode={self.mode!r}, {len(self.handles)} hooks)"


def strip_mask_hooks(net: nn.Module) -> None:
    """Remove this module's hooks from every submodule (e.g. of a deep copy, which carries copies of them)."""
    for m in net.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks):
            for key in [k for k, h in hooks.items() if isinstance(h, _ChannelMask)]:
                del hooks[key]


def apply_masks(
    net: nn.Module,
    graph: ChannelGraph,
    masks: Mapping[str, Tensor],
    mode: Mode = "enforced",
    mask_bn: bool = True,
) -> MaskHandle:
    """Make ``masks`` act on ``net``. Call again after each prune step: hooks are replaced, never
    stacked (enforced hooks read the masks live, so after ``ChannelMasks.prune`` they are already up to date).

    ``enforced``: pruned output channels of each conv (and, if ``mask_bn``, of each BatchNorm over them) are exactly
    zero in every forward; consumers' input channels are masked by their producers' OR (residual sums live if any
    member keeps a channel). ``legacy``: zero the base weight rows (and bias) of the convs pruned since the last
    legacy call, once, in place; no hooks.
    """
    graph.check(net)
    if net in _HANDLES:
        _HANDLES[net].remove()
    if mode == "legacy":
        _zero_rows(graph, masks)
        handle = MaskHandle(net, mode, [])
    elif mode == "enforced":
        handle = MaskHandle(net, mode, _enforce(net, graph, masks, mask_bn))
    else:
        raise ValueError(f"unknown mask mode {mode!r}; use 'enforced' or 'legacy'")
    _HANDLES[net] = handle
    return handle


def _enforce(net: nn.Module, graph: ChannelGraph, masks: Mapping[str, Tensor], mask_bn: bool) -> list[RemovableHandle]:
    modules = dict(net.named_modules())
    handles = []
    for name, conv in graph.layers.items():
        handles.append(conv.register_forward_hook(_OutputMask(masks, [name])))
    for name, producers in graph.producers.items():
        if producers:
            handles.append(modules[name].register_forward_pre_hook(_InputMask(masks, producers)))
    if mask_bn:
        for name, sources in graph.norms.items():
            if sources:
                handles.append(modules[name].register_forward_hook(_OutputMask(masks, sources)))
    return handles


@torch.no_grad()
def _zero_rows(graph: ChannelGraph, masks: Mapping[str, Tensor]) -> None:
    """The published ``prune_conv_layer``: ``custom_from_mask`` + ``remove`` on ``weight`` (the frozen base W of an
    adapter) and ``bias``, for the layers pruned this step."""
    touched = getattr(masks, "touched", None)
    names = list(graph.layers) if touched is None else [n for n in graph.layers if n in touched]
    for name in names:
        conv, pruned = graph.layers[name], ~masks[name].to(graph.layers[name].weight.device)
        conv.weight[pruned] = 0
        if conv.bias is not None:
            conv.bias[pruned] = 0
    if touched is not None:
        touched.clear()
