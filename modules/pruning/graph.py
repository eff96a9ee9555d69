"""Which conv's output channels reach which layer's input channels: the channel graph of a net. It gives each
layer's input channels from their true producers (a residual sum keeps a channel if any summand does) for the
``exact`` counts, and the residual-coupled groups for ``coupling="group"``.

The net is traced with ``torch.fx``; convs, linears, norms and attention (adapter subclasses included) are leaves.
Each tensor in the trace carries the set of prunable convs whose output channels it holds, index for index:
zero-preserving element-wise ops (ReLU, pooling, dropout, flatten, a multiply by a number) pass that set on, a sum
(``out + shortcut``) takes the union and couples its members, and BatchNorm passes it on too (its output for a
pruned channel is zero only where the BN is masked as well, see ``masks.apply_masks``). A tracked tensor that
reaches anything else (a concat, an add of a constant, a grouped conv, the net's output, attention, LayerNorm...)
*pins* its convs: masks still act on them, but ``export_pruned`` keeps all their channels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..adapters import is_adapter

__all__ = ["ChannelGraph", "GraphError", "input_mask", "is_prunable"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LEAVES = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.MultiheadAttention,
)
# f(0) = 0 element-wise or per-channel ops: a pruned (all-zero) channel stays zero and stays in place
_ZERO_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Hardswish,
    nn.Mish,
    nn.Identity,
    nn.Upsample,
    nn.modules.dropout._DropoutNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)
_ZERO_OPS = {
    "relu", "relu_", "relu6", "leaky_relu", "elu", "gelu", "silu", "tanh", "hardswish", "mish", "neg",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "feature_alpha_dropout", "alpha_dropout",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "interpolate", "contiguous", "clone", "detach", "float", "to",
}  # fmt: skip
_RESHAPE_OPS = {"flatten", "view", "reshape", "squeeze"}
_REDUCE_OPS = {"mean", "sum", "amax"}
_ADD_OPS = {"add", "add_", "iadd", "sub", "sub_", "isub"}
_SCALE_OPS = {"mul", "mul_", "imul", "truediv", "div", "div_", "itruediv"}
_META_OPS = {"size", "dim", "numel", "getattr", "len"}


class GraphError(RuntimeError):
    """The net cannot be described as a channel graph (untraceable, or a prunable conv used twice)."""


class _Flow(NamedTuple):
    """Prunable convs whose channels a tensor holds at dim 1; ``factor`` > 1 after flattening ``(N, C, *S)`` into
    ``(N, C·factor)`` (channel ``c`` then owns features ``c·factor ... (c+1)·factor - 1``)."""

    sources: frozenset[str] = frozenset()
    factor: int = 1


_NONE = _Flow()


def is_prunable(m: nn.Module) -> bool:
    """Every ``nn.ConvNd`` (adapters included) has prunable output channels, as published; transposed convs do not."""
    return isinstance(m, _CONVS)


class _Tracer(fx.Tracer):
    """Stops at convs, linears, norms and attention (and adapter subclasses of them, which live outside
    ``torch.nn`` and so would otherwise be traced into)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES) or is_adapter(m) or super().is_leaf_module(m, qualname)


def _trace(net: nn.Module) -> fx.GraphModule:
    try:
        graph = _Tracer().trace(net)
    except Exception as e:  # fx raises TraceError, TypeError, RuntimeError... for data-dependent Python
        raise GraphError(
            f"ChannelGraph: torch.fx cannot trace {type(net).__name__} ({type(e).__name__}: {e}). Channel pruning "
            "needs a forward without data-dependent control flow; move such code into a leaf module or rewrite it."
        ) from e
    return fx.GraphModule(net, graph)


def _op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target)).lower()


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _tensor_nodes(node: fx.Node) -> list[fx.Node]:
    """The node's inputs that are nodes (tensors or not), args and kwargs, nested containers flattened."""
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, names: Iterable[str]) -> None:
        names = list(names)
        for other in names[1:]:
            self.parent[self.find(other)] = self.find(names[0])


class ChannelGraph:
    """Producer/consumer relations between the output channels of a net's convs and its layers' inputs.

    Attributes (names are ``net.named_modules()`` names):
        layers: every prunable ``nn.ConvNd`` the forward calls (adapters included), in module order.
        producers: for each conv and each ``nn.Linear``, the convs whose output channels reach its input channels
            through BN/ReLU/pool/flatten/identity; several = a residual sum (a channel lives if ANY keeps it);
            ``[]`` = fed by the network input or by something untracked.
        norm_after: the BatchNorm consuming each conv's output directly, else ``None``.
        norms: for each BatchNorm on a tracked tensor, the convs whose channels it normalises.
        groups: sets of convs whose outputs are summed (residual coupling), connected components, module order.
        pinned: convs whose channels reach an op the graph cannot follow, so ``export_pruned`` keeps them all.
        in_shapes, out_shapes: input/output shapes of each conv and linear on the example input.
        module: the traced ``fx.GraphModule`` (shares its submodules with ``net``; used by LRP).
    """

    def __init__(self, net: nn.Module, example_input: Tensor) -> None:
        self.net = net
        self.module = _trace(net)
        modules = dict(net.named_modules())
        self._propagate_shapes(example_input)
        order = {name: i for i, name in enumerate(modules)}
        called = [n.target for n in self.module.graph.nodes if n.op == "call_module"]
        self.layers: dict[str, nn.Module] = {
            name: modules[name] for name in sorted(set(called), key=order.__getitem__) if is_prunable(modules[name])
        }
        self.producers: dict[str, list[str]] = {}
        self.norm_after: dict[str, str | None] = dict.fromkeys(self.layers)
        self.norms: dict[str, list[str]] = {}
        self.pinned: set[str] = set()
        self.in_shapes: dict[str, tuple[int, ...]] = {}
        self.out_shapes: dict[str, tuple[int, ...]] = {}
        self._order = order
        self._coupled = _UnionFind()
        self._flow: dict[fx.Node, _Flow] = {}
        for node in self.module.graph.nodes:
            self._flow[node] = self._visit(node, modules)
        self.groups = self._groups()
        for group in self.groups:  # members share one channel index: pin one, pin all
            if self.pinned.intersection(group):
                self.pinned.update(group)

    # --- construction ---------------------------------------------------------------------------------------
    def _propagate_shapes(self, example_input: Tensor) -> None:
        """Shapes on the example input, in eval mode and without grad so BN statistics are not touched."""
        training = {m: m.training for m in self.net.modules()}
        self.net.eval()
        try:
            with torch.no_grad():
                ShapeProp(self.module).propagate(example_input)
        finally:
            for m, mode in training.items():
                m.training = mode

    def _sorted(self, names: Iterable[str]) -> list[str]:
        return sorted(names, key=self._order.__getitem__)

    def _pin(self, node: fx.Node) -> _Flow:
        """``node`` is beyond the graph's understanding: every tracked tensor it reads is pinned."""
        for arg in _tensor_nodes(node):
            self.pinned.update(self._flow.get(arg, _NONE).sources)
        return _NONE

    def _visit(self, node: fx.Node, modules: Mapping[str, nn.Module]) -> _Flow:
        if node.op in ("placeholder", "get_attr"):
            return _NONE
        tracked = [a for a in _tensor_nodes(node) if self._flow.get(a, _NONE).sources]
        if node.op == "call_module":
            return self._visit_module(node, str(node.target), modules[str(node.target)], tracked)
        if not tracked:
            return _NONE
        if node.op == "output":
            return self._pin(node)  # a channel of the net's output cannot be removed
        return self._visit_op(node, tracked)

    def _visit_module(self, node: fx.Node, name: str, m: nn.Module, tracked: list[fx.Node]) -> _Flow:
        flow = self._flow.get(node.args[0], _NONE) if node.args else _NONE
        if is_prunable(m):
            return self._visit_conv(node, name, m, flow)
        if isinstance(m, nn.Linear):
            in_shape = _shape(node.args[0])
            self._record_shapes(node, name)
            if flow.sources and (in_shape is None or len(in_shape) != 2 or len(tracked) != 1):
                return self._pin(node)  # a Linear over (N, C, ...) mixes the last dim, not the channels
            self.producers[name] = self._sorted(flow.sources)
            return _NONE
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and len(tracked) == 1 and flow.factor == 1:
            if name in self.norms:
                raise GraphError(f"ChannelGraph: BatchNorm {name!r} is called twice; use one BN per call")
            self.norms[name] = self._sorted(flow.sources)
            source = node.args[0]
            if isinstance(source, fx.Node) and source.op == "call_module" and source.target in self.layers:
                self.norm_after[str(source.target)] = name
            return flow
        if isinstance(m, _ZERO_MODULES) and len(tracked) <= 1:
            return flow
        if isinstance(m, nn.Flatten) and len(tracked) == 1:
            return self._reshaped(node, flow)
        return self._pin(node) if tracked else _NONE

    def _visit_conv(self, node: fx.Node, name: str, m: nn.Module, flow: _Flow) -> _Flow:
        if name in self.producers:
            raise GraphError(
                f"ChannelGraph: conv {name!r} is called more than once; each prunable conv must be called once "
                "(its channels would be shared by several tensors)"
            )
        self._record_shapes(node, name)
        if flow.factor != 1:
            self.pinned.update(flow.sources)
            flow = _NONE
        self.producers[name] = self._sorted(flow.sources)
        if m.groups > 1:  # slicing would break the group structure: keep this conv and its inputs whole
            self.pinned.update(flow.sources)
            self.pinned.add(name)
        return _Flow(frozenset({name}))

    def _record_shapes(self, node: fx.Node, name: str) -> None:
        in_shape, out_shape = _shape(node.args[0]) if node.args else None, _shape(node)
        if in_shape is not None:
            self.in_shapes[name] = in_shape
        if out_shape is not None:
            self.out_shapes[name] = out_shape

    def _visit_op(self, node: fx.Node, tracked: list[fx.Node]) -> _Flow:
        op = _op_name(node)
        first = self._flow[tracked[0]]
        if op in _META_OPS and _shape(node) is None:
            return _NONE  # x.size(0), x.shape: no channel data flows
        if op in _ADD_OPS:
            return self._visit_add(node, tracked)
        if len(tracked) != 1:
            return self._pin(node)
        if op in _ZERO_OPS or (op in _SCALE_OPS and self._scaled_by_number(node, tracked[0])):
            return first if self._keeps_channels(node, tracked[0]) else self._pin(node)
        if op in _RESHAPE_OPS:
            return self._reshaped(node, first)
        if op in _REDUCE_OPS and self._reduces_spatial(node):
            return self._reshaped(node, first)
        if op == "getitem" and self._spatial_index(node):
            return first
        return self._pin(node)

    def _visit_add(self, node: fx.Node, tracked: list[fx.Node]) -> _Flow:
        operands = [a for a in (*node.args[:2], node.kwargs.get("other")) if a is not None]
        flows = [self._flow.get(a, _NONE) if isinstance(a, fx.Node) else _NONE for a in operands]
        if len(operands) != 2 or not all(f.sources for f in flows) or len({f.factor for f in flows}) != 1:
            return self._pin(node)  # adding a constant or an untracked tensor: a pruned channel is no longer zero
        sources = frozenset().union(*(f.sources for f in flows))
        self._coupled.union(sources)
        return _Flow(sources, flows[0].factor)

    @staticmethod
    def _scaled_by_number(node: fx.Node, arg: fx.Node) -> bool:
        """``x * 2`` or ``x / x.size(1)`` keep a zero channel zero; ``x * tensor`` is not followed."""
        numbers = [a for a in node.args if a is not arg]
        return not node.kwargs and all(
            isinstance(a, (int, float)) or (isinstance(a, fx.Node) and _shape(a) is None) for a in numbers
        )

    @staticmethod
    def _keeps_channels(node: fx.Node, arg: fx.Node) -> bool:
        before, after = _shape(arg), _shape(node)
        return before is not None and after is not None and before[:2] == after[:2]

    def _reshaped(self, node: fx.Node, flow: _Flow) -> _Flow:
        """(N, C, *S) → (N, C, *S') keeps the channels; → (N, C·prod(S)) flattens them with that factor."""
        before, after = _shape(node.args[0]), _shape(node)
        if before is None or after is None or len(after) < 2 or after[0] != before[0]:
            return self._pin(node)
        if after[1] == before[1]:
            return flow
        if flow.factor == 1 and len(after) == 2 and after[1] == math.prod(before[1:]):
            return _Flow(flow.sources, math.prod(before[2:]))
        return self._pin(node)

    @staticmethod
    def _reduces_spatial(node: fx.Node) -> bool:
        """``x.mean((2, 3))`` reduces only spatial dims; a reduction over dims 0 or 1 mixes channels or samples."""
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        ndim = len(_shape(node.args[0]) or ())
        dims = (dims,) if isinstance(dims, int) else dims
        return isinstance(dims, (tuple, list)) and all(isinstance(d, int) and d % ndim >= 2 for d in dims)

    @staticmethod
    def _spatial_index(node: fx.Node) -> bool:
        """``x[:, :, ::2, ::2]``: batch and channel dims untouched."""
        index = node.args[1]
        full = slice(None, None, None)
        return (
            isinstance(index, tuple)
            and len(index) >= 2
            and index[0] == full
            and index[1] == full
            and all(isinstance(i, (slice, int)) for i in index[2:])
        )

    def _groups(self) -> list[list[str]]:
        components: dict[str, list[str]] = {}
        for name in self.layers:
            if name in self._coupled.parent:
                components.setdefault(self._coupled.find(name), []).append(name)
        return [self._sorted(c) for c in components.values() if len(c) > 1]

    # --- queries --------------------------------------------------------------------------------------------
    def group_of(self, name: str) -> list[str]:
        """The residual group holding conv ``name``, or ``[name]`` where it is not coupled."""
        return next((g for g in self.groups if name in g), [name])

    def check(self, net: nn.Module) -> None:
        """Raise if ``net``'s layers are not the ones traced (e.g. adapters were inserted after tracing)."""
        modules = dict(net.named_modules())
        stale = [name for name, m in self.layers.items() if modules.get(name) is not m]
        if stale:
            raise GraphError(
                f"ChannelGraph is stale for layers {stale[:5]}: the net's modules were replaced after tracing "
                "(e.g. by splora()/sppara()); build the ChannelGraph again on the current net"
            )

    def __repr__(self) -> str:
        return (
            f"ChannelGraph({len(self.layers)} convs, {sum(len(g) for g in self.groups)} coupled in "
            f"{len(self.groups)} groups, {len(self.pinned)} pinned)"
        )


def input_mask(graph: ChannelGraph, masks: Mapping[str, Tensor], name: str, size: int | None = None) -> Tensor | None:
    """Kept input channels of layer ``name``: the OR of the out masks of its producers (a residual sum keeps a
    channel if any summand keeps it; a producer without a mask keeps all its channels); ``None`` where nothing
    prunable feeds ``name``. Given ``size`` (the layer's number of inputs), a mask shorter than it by an integer
    factor is a flattened (C, H, W) feature map: each channel covers H·W inputs. The one rule for export and
    counting."""
    producers = graph.producers.get(name, [])
    if not producers:
        return None
    kept = None
    for p in producers:
        m = masks[p] if p in masks else torch.ones(graph.layers[p].out_channels, dtype=torch.bool)
        kept = m.clone() if kept is None else kept | m
    if size is None or kept.numel() == size:
        return kept
    if size % kept.numel() == 0:
        return kept.repeat_interleave(size // kept.numel())
    raise ValueError(f"{name} has {size} inputs but its producers {producers} give {kept.numel()} channels")
