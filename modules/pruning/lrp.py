"""Layer-wise relevance propagation to every conv output, for the ``lrp`` criterion (Yeom et al. 2021;
LukasHedegaard/channel-spa-experiments ``utils/lrp_general6.py``).

Rules, as the published ResNet wrapper set them (``lrp_params_def1``):

* the first conv (the one reading the network input): zβ, with the bounds of ImageNet-normalised pixels
  [−2.118, 2.640], bias ignored;
* every other conv: z⁺ (α1β0), z = W⁺·x⁺ + W⁻·x⁻ (the positive contributions), bias ignored;
* conv and its BatchNorm are folded first (W·γ/√(σ²+ε), running statistics); the weight is the *base* weight of an
  adapter layer (the published wrapper copied ``conv.weight``, so SPLoRA/SPPaRA deltas were ignored);
* linear, residual sum, average pooling: ε-rule, ε = 1e-6 (the linear's bias is part of z);
* ReLU, BN (folded), dropout, flatten: relevance passes unchanged; max pooling passes it to the winners.

The initial relevance is one-hot on the target (the published ``output·T / Σ output·T``). Activations are the net's
own forward (its mode, its adapters); the published wrapper's quirk of renormalising with batch statistics in reset
BNs (it was never put in eval mode) is not reproduced. Anything else (attention, concat, SE gates...) raises
``LRPError``, as the original supported ResNets only.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .graph import ChannelGraph

__all__ = [
    "EPS",
    "HIGHEST",
    "LOWEST",
    "LRPError",
    "LRPResult",
    "conv_relevance",
    "conv_zbeta",
    "conv_zplus",
    "eps_rule",
    "folded_weight",
    "safe_divide",
    "sum_eps",
]

LOWEST = -2.118  # min over RGB of (0 − μ)/σ with ImageNet μ, σ
HIGHEST = 2.640  # max over RGB of (1 − μ)/σ
EPS = 1e-6

ConvFn = Callable[[Tensor, Tensor], Tensor]


class LRPError(NotImplementedError):
    """The net has an operation without an LRP rule here (supported: ResNet/VGG-style CNNs)."""


@dataclass
class LRPResult:
    """Relevance maps at each conv's output (``(N, C, *S)``, name → map) and at the network input."""

    convs: dict[str, Tensor]
    input: Tensor | None


# --- rules ----------------------------------------------------------------------------------------------------
def safe_divide(num: Tensor, den: Tensor, eps0: float, eps: float) -> Tensor:
    """num / (den + eps0·[den = 0] + eps·sign(den)), the published stabiliser."""
    return num / (den + eps0 * (den == 0).to(den) + eps * den.sign())


def _lrp_backward(x: Tensor, fn: Callable[[Tensor], Tensor], relevance: Tensor, eps0: float, eps: float) -> Tensor:
    """R_in = x ⊙ ∂/∂x [fn(x) · s] with s = R / fn(x): the generic rule for a linear map ``fn``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = fn(x)
        (c,) = torch.autograd.grad(z, x, safe_divide(relevance, z.detach(), eps0, eps))
    return x.detach() * c


def eps_rule(x: Tensor, fn: Callable[[Tensor], Tensor], relevance: Tensor, eps: float = EPS) -> Tensor:
    """ε-rule through a linear/affine map ``fn`` (Linear with its bias, average pooling)."""
    return _lrp_backward(x, fn, relevance, eps, eps)


def conv_zplus(x: Tensor, weight: Tensor, conv: ConvFn, relevance: Tensor) -> Tensor:
    """z⁺ rule: z = conv(x⁺, W⁺) + conv(x⁻, W⁻), no bias; R_in = x ⊙ Jᵀ(R / z)."""
    pos, neg = weight.clamp(min=0), weight.clamp(max=0)
    return _lrp_backward(x, lambda t: conv(t.clamp(min=0), pos) + conv(t.clamp(max=0), neg), relevance, 1e-12, 0.0)


def conv_zbeta(
    x: Tensor, weight: Tensor, conv: ConvFn, relevance: Tensor, low: float = LOWEST, high: float = HIGHEST
) -> Tensor:
    """zβ rule for inputs bounded in [low, high]: z = conv(x, W) − conv(l, W⁺) − conv(h, W⁻), no bias;
    R_in = x⊙c − l⊙c⁺ − h⊙c⁻ (the published ``conv2d_zbeta_wrapper_fct``)."""
    xs = [x.detach(), torch.full_like(x, low), torch.full_like(x, high)]
    xs = [t.requires_grad_(True) for t in xs]
    with torch.enable_grad():
        z = conv(xs[0], weight) - conv(xs[1], weight.clamp(min=0)) - conv(xs[2], weight.clamp(max=0))
        grads = torch.autograd.grad(z, xs, safe_divide(relevance, z.detach(), 1e-6, 1e-6))
    return sum(t.detach() * g for t, g in zip(xs, grads))


def sum_eps(inputs: Sequence[Tensor], relevance: Tensor, eps: float = EPS, total: Tensor | None = None) -> list[Tensor]:
    """ε-rule through a sum z = Σ x_i (+ a constant already in ``total``): R_i = x_i · R / z."""
    z = sum(inputs) if total is None else total
    s = safe_divide(relevance, z, eps, eps)
    return [(x * s).sum_to_size(x.shape) for x in inputs]


def folded_weight(conv: nn.Module, bn: nn.Module | None) -> Tensor:
    """The base weight with the following BatchNorm folded in: W · γ / √(running σ² + ε)."""
    w = conv.weight.detach()
    if bn is None:
        return w
    var = bn.running_var if bn.running_var is not None else torch.ones_like(w[:, 0].flatten())
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return w * scale.view(-1, *([1] * (w.dim() - 1)))


def _conv_fn(conv: nn.Module) -> ConvFn:
    """conv(x, W) with the layer's stride/padding/dilation/groups and no bias."""
    base = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(conv.kernel_size)]
    return lambda t, w: base._conv_forward(conv, t, w, None)


# --- the walk ---------------------------------------------------------------------------------------------------
_PASS_MODULES = (nn.ReLU, nn.Identity, nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
_AVG_MODULES = (nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd)
_MAX_MODULES = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
_PASS_OPS = {"relu", "relu_", "dropout", "dropout2d", "contiguous", "clone", "batch_norm"}
_RESHAPE_OPS = {"flatten", "view", "reshape", "squeeze", "unsqueeze"}
_AVG_OPS = {"avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "mean"}
_AVG_OPS |= {"adaptive_avg_pool3d"}
_MAX_OPS = {"max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool2d"}
_SUM_OPS = {"add", "add_", "iadd"}


def _op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    if node.target in (operator.add, operator.iadd):
        return "add"
    return getattr(node.target, "__name__", str(node.target))


class _Walk:
    """Relevance from the logits back to the input over the traced graph, node by node in reverse order."""

    def __init__(self, graph: ChannelGraph, env: dict[fx.Node, object], low: float, high: float, eps: float) -> None:
        self.graph, self.env, self.low, self.high, self.eps = graph, env, low, high, eps
        self.modules = dict(graph.module.named_modules())
        self.relevance: dict[fx.Node, Tensor] = {}
        self.raw = self._input_derived()

    def _input_derived(self) -> set[fx.Node]:
        """Nodes computed from the input without any parametrised layer: a conv reading one is "the first"."""
        raw: set[fx.Node] = set()
        for node in self.graph.module.graph.nodes:
            if node.op == "placeholder":
                raw.add(node)
            elif node.op in ("call_function", "call_method") or (
                node.op == "call_module" and not list(self.modules[str(node.target)].parameters())
            ):
                inputs = [a for a in node.all_input_nodes if isinstance(self.env.get(a), Tensor)]
                if inputs and all(a in raw for a in inputs):
                    raw.add(node)
        return raw

    def give(self, node: object, r: Tensor) -> None:
        if isinstance(node, fx.Node) and isinstance(self.env.get(node), Tensor):
            self.relevance[node] = self.relevance[node] + r if node in self.relevance else r

    def run(self, logits: fx.Node, target: Tensor) -> LRPResult:
        out = self.env[logits]
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise LRPError(f"LRP needs (N, classes) logits as the net's output, got {type(out).__name__}")
        self.relevance[logits] = F.one_hot(target.to(out.device).long(), out.shape[1]).to(out.dtype)
        convs: dict[str, Tensor] = {}
        result_input = None
        for node in reversed(list(self.graph.module.graph.nodes)):
            r = self.relevance.pop(node, None)
            if r is None:
                continue
            if node.op == "placeholder":
                result_input = r
            elif node.op == "call_module":
                self._module(node, self.modules[str(node.target)], r, convs)
            elif node.op in ("call_function", "call_method"):
                self._op(node, r)
        return LRPResult(convs, result_input)

    def _x(self, node: fx.Node) -> Tensor:
        return self.env[node.args[0]]

    def _module(self, node: fx.Node, m: nn.Module, r: Tensor, convs: dict[str, Tensor]) -> None:
        name, src = str(node.target), node.args[0]
        if name in self.graph.layers:
            convs[name] = r
            bn = self.graph.norm_after[name]
            w = folded_weight(m, self.modules[bn] if bn else None)
            conv = _conv_fn(m)
            if src in self.raw:
                self.give(src, conv_zbeta(self._x(node), w, conv, r, self.low, self.high))
            else:
                self.give(src, conv_zplus(self._x(node), w, conv, r))
        elif isinstance(m, nn.Linear):
            self.give(src, eps_rule(self._x(node), m, r, self.eps))
        elif isinstance(m, _PASS_MODULES):
            self.give(src, r)
        elif isinstance(m, _AVG_MODULES):
            self.give(src, eps_rule(self._x(node), m, r, self.eps))
        elif isinstance(m, _MAX_MODULES):
            self.give(src, _winner_rule(self._x(node), m, r))
        elif isinstance(m, nn.Flatten):
            self.give(src, r.reshape(self._x(node).shape))
        else:
            raise LRPError(f"no LRP rule for module {name!r} ({type(m).__name__}); supported: ResNet-style CNNs")

    def _op(self, node: fx.Node, r: Tensor) -> None:
        op = _op_name(node)
        src = node.args[0]
        if op in _SUM_OPS:
            operands = [a for a in node.args[:2] if isinstance(self.env.get(a), Tensor)]
            shares = sum_eps([self.env[a] for a in operands], r, self.eps, total=self.env[node])
            for a, share in zip(operands, shares):
                self.give(a, share)
        elif op in _PASS_OPS:
            self.give(src, r)
        elif op in _RESHAPE_OPS:
            self.give(src, r.reshape(self.env[src].shape))
        elif op in _AVG_OPS:
            self.give(src, eps_rule(self.env[src], self._rerun(node), r, self.eps))
        elif op in _MAX_OPS:
            self.give(src, _winner_rule(self.env[src], self._rerun(node), r))
        else:
            raise LRPError(f"no LRP rule for {node.op} {op!r} (node {node.name}); supported: ResNet-style CNNs")

    def _rerun(self, node: fx.Node) -> Callable[[Tensor], Tensor]:
        """``node``'s op as a function of its first argument, the others fixed to their forward values."""
        src = node.args[0]

        def fn(t: Tensor) -> Tensor:
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: t if a is src else self.env[a])
            if node.op == "call_method":
                return getattr(args[0], str(node.target))(*args[1:], **kwargs)
            return node.target(*args, **kwargs)

        return fn


def _winner_rule(x: Tensor, fn: Callable[[Tensor], Tensor], relevance: Tensor) -> Tensor:
    """Max pooling: relevance goes to the arg-max inputs (the gradient of the pool), as the published wrapper."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(fn(x), x, relevance)
    return g


class _Recorder(fx.Interpreter):
    """Runs the traced net keeping every node's value."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module, garbage_collect_values=False)


@torch.no_grad()
def conv_relevance(
    graph: ChannelGraph,
    x: Tensor,
    target: Tensor,
    *,
    low: float = LOWEST,
    high: float = HIGHEST,
    eps: float = EPS,
) -> LRPResult:
    """LRP relevance at each conv output of ``graph.net`` for inputs ``x`` and target classes ``target``.

    The net runs forward once (in its current train/eval mode, masks hooks included), then relevance flows back
    by the rules in the module docstring. The ``lrp`` score of channel c is Σ_{n,h,w} |R_c|.
    """
    graph.check(graph.net)
    recorder = _Recorder(graph.module)
    recorder.run(x)
    output = next(n for n in graph.module.graph.nodes if n.op == "output")
    logits = output.args[0]
    if not isinstance(logits, fx.Node):
        raise LRPError("LRP needs a net that returns one logits tensor")
    return _Walk(graph, recorder.env, low, high, eps).run(logits, target)
