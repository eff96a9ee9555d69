"""FLOPs in the conventions of the papers' counters (``CONVENTIONS``, ``count_flops``, ``FlopCounter``).

FLOPs are counted in one of three conventions (``CONVENTIONS``); all of them count a call by what it executes.

``"macs"`` (ours, the default)
    Multiply-accumulates of the conv/matmul-type aten operations a call actually executes (a
    ``TorchDispatchMode``, rules in ``_MAC_RULES``), so a continual step is charged for what its implementation
    runs, not for a formula. Element-wise ops, normalisation, pooling and softmax are free, as in fvcore and the
    X3D paper (Feichtenhofer, CVPR 2020, Table 3). Papers in this field call MACs "FLOPs"; so do we:
    ``gflops = MACs / 1e9``.

``"ptflops"``
    What ``ptflops.get_model_complexity_info`` (Sovrasov, flops-counter.pytorch 0.6.x, ``MODULES_MAPPING``; the
    counter of the Co3D and Continual ST-GCN papers) reports for the same calls. ptflops sees modules, not ops:

    * a conv call (continual convs too) is charged by ptflops' formula from what it returns:
      ``numel(output) * in_channels / groups * prod(kernel_size)``. A continual conv's step that emits nothing
      costs nothing, however many taps it ran: a temporally strided conv is charged for the outputs it emits;
    * a ``Linear`` or ``MultiheadAttention`` call is charged the MACs it executes;
    * products computed outside such modules (ST-GCN's ``x·A``, AGCN's adaptive graph, S-TR's attention
      products, a functional ``scaled_dot_product_attention``) are not counted, as ptflops never saw them;

    plus, for every executed call of a module of these types, its element-wise terms (``ptflops_term``):

    ==============================================  ===========================================================
    BatchNorm1-3d, InstanceNorm1-3d, GroupNorm,     ``numel(input)``, twice that with affine parameters
    LayerNorm                                       (``bn_flops_counter_hook``)
    ReLU, ReLU6, PReLU, ELU, LeakyReLU              ``numel(output)`` (``relu_flops_counter_hook``)
    (Adaptive)Avg/MaxPool1-3d, continual ones too   ``numel(input)`` (``pool_flops_counter_hook``)
    Upsample                                        ``numel(output)`` (``upsample_flops_counter_hook``)
    Conv / Linear with a bias                       ``numel(output)`` (the bias term of the conv/linear hooks)
    ==============================================  ===========================================================

    Sigmoid, SiLU/Swish, Softmax, Dropout and tensor arithmetic (residual sums, the SE product) are free, as in
    ptflops. A module is charged once per call, whether the call is ``module(x)`` (a forward hook, as ptflops),
    ``forward_step`` or ``forward_steps`` (our containers call those directly). CoX3D's frame-scoped SE pools with
    a functional mean; it is charged as the ``co.AdaptiveAvgPool3d`` the original model calls there
    (the net registers it with ``register_pool_like``).

``"co3d_published"``
    The convention of the Co3D paper's GFLOPs column (Hedegaard & Iosifidis, arXiv 2106.00050, results table,
    also in the LukasHedegaard/co3d README): ptflops as it met the ``continual-inference`` library
    (LukasHedegaard/continual-inference) and ``co3d``, which reproduces every row of the table within 1.5 % (its
    rounding). It is ``"ptflops"`` with two artefacts of that set-up, both in frame mode only (clip rows ran in plain
    forward mode):

    1. *Norms and activations count twice per step.* ``co.Sequential`` calls each child as ``module(x)`` with
       ``call_mode="forward_steps"`` ("ptflops only works when __call__ is triggered", ``continual/container.py``).
       BatchNorm and activations are torch modules wrapped by ``co.forward_stepping`` (``continual/convert.py``),
       whose new ``forward`` calls ``CoModule._call_impl(module, ...)`` outside forward mode: a copy of
       ``nn.Module._call_impl`` that runs the module's forward hooks itself. ptflops' hook thus fires in that
       inner call and again in the outer ``nn.Module._call_impl``. Convs, pools and linears are ``CoModule``
       subclasses and fire once. No step needs that work twice: it is a counting artefact, not cost.
    2. *One step per prediction.* Co3D warms the net up, resets every module's ``stride_index`` to 0
       (``models/common/base.py`` ``on_init_end``) and lets ptflops feed one frame: a step on which every layer
       runs. A net with temporal stride ``s`` (CoI3D: 2) runs ``s`` steps per prediction; only this emitting one
       was counted (CoI3D 5.68 GFLOPs per frame vs 7.15 per prediction by ``"ptflops"``).

    Not reproduced: ptflops read the ``co.Linear`` projection (``channel_dim=1``) as ``numel(input) * 1`` MACs
    (its hook takes the output's last dim, which is there a singleton spatial dim), 0.0008 GFLOPs less per frame
    than executed, below the table's rounding.

Nets whose modules compute with tensor ops what the original model computed with a pooling module register
those classes with ``register_pool_like`` (the profiler knows no architecture).

Where the original code gave ptflops its own hook for a module (a ``MODULES_MAPPING`` entry: the Continual
Transformers' CoRe/CoSi attention, ``continual_transformers/ptflops.py``), the net registers the class that
computes the same thing here with ``register_ptflops_rule``: the ptflops conventions charge each of its calls the
rule's count instead of the products executed inside it (``"macs"`` stays the executed count).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from .macs import MacCounter, countable

__all__ = ["CONVENTIONS", "FlopCounter", "count_flops", "ptflops_term", "register_pool_like", "register_ptflops_rule"]


#: Counting conventions of ``count_flops`` / ``profile_model`` (module docstring).
CONVENTIONS = ("macs", "ptflops", "co3d_published")

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU)
_POOLS = (
    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)  # fmt: skip
_BIASED = (nn.modules.conv._ConvNd, nn.Linear)
_CONVS = (nn.modules.conv._ConvNd,)
#: modules whose executed MACs ptflops charges (its linear and multi-head attention hooks)
_PRODUCTS = (nn.Linear, nn.MultiheadAttention)


def _first_tensor(value: Any) -> Tensor | None:
    return next((t for t in tree_leaves(value) if isinstance(t, Tensor)), None)


def _tensor_numel(value: Any) -> int:
    t = _first_tensor(value)
    return 0 if t is None else t.numel()


#: modules that pool with a tensor op where the original model called a pooling module (``register_pool_like``)
_POOL_LIKE: list[type[nn.Module]] = []


def register_pool_like(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator for a net's module that pools with a tensor op where the original model called a pooling
    module: the ptflops conventions charge it ``numel(input)`` as that module. Nets register their own (e.g.
    CoX3D's squeeze-excitation, whose per-frame spatial mean is Co3D's ``co.AdaptiveAvgPool3d`` call), so the
    profiler knows no architecture."""
    if cls not in _POOL_LIKE:
        _POOL_LIKE.append(cls)
    return cls


def _functional_pools() -> tuple[type[nn.Module], ...]:
    return tuple(_POOL_LIKE)


#: rule(module, inputs, output) -> the products ptflops charged that call, or None: what it executed
PtflopsRule = Callable[[nn.Module, tuple, Any], "int | None"]
_RULES: dict[type[nn.Module], PtflopsRule] = {}


def register_ptflops_rule(cls: type[nn.Module], rule: PtflopsRule) -> None:
    """Charge every call of a ``cls`` module ``rule(module, inputs, output)`` conv/matmul MACs in the ptflops
    conventions, in place of the products executed inside the call (its nested Linear / MultiheadAttention calls
    included; their bias and the norms' element-wise terms still count). ``None`` from the rule charges what the
    call executed. For modules that the original code hooked into ptflops with a formula of its own (module
    docstring); nets register their own classes, so the profiler knows no architecture."""
    _RULES[cls] = rule


def _rule(module: nn.Module) -> PtflopsRule | None:
    return next((rule for cls, rule in _RULES.items() if isinstance(module, cls)), None)


def ptflops_term(module: nn.Module, inputs: tuple, output: Any) -> tuple[str, int]:
    """``(kind, flops)`` that ptflops adds for one call of ``module`` beyond conv/linear MACs (module docstring).

    ``kind`` is ``norm``, ``activation``, ``pool``, ``upsample``, ``bias`` or ``""`` (not counted).
    """
    if isinstance(module, _NORMS):
        affine = getattr(module, "affine", False) or getattr(module, "elementwise_affine", False)
        return "norm", _tensor_numel(inputs) * (2 if affine else 1)
    if isinstance(module, _ACTIVATIONS):
        return "activation", _tensor_numel(output)
    if isinstance(module, _POOLS + _functional_pools()):
        return "pool", _tensor_numel(inputs)
    if isinstance(module, nn.Upsample):
        return "upsample", _tensor_numel(output)
    if isinstance(module, _BIASED) and module.bias is not None:
        return "bias", _tensor_numel(output)
    return "", 0


def _counted(module: nn.Module) -> bool:
    return isinstance(module, _NORMS + _ACTIVATIONS + _POOLS + _functional_pools() + (nn.Upsample,)) or (
        isinstance(module, _BIASED) and module.bias is not None
    )


def _conv_formula(conv: nn.Module, output: Any) -> int:
    """ptflops' conv MACs for a call that returned ``output``: per output element, ``in_channels / groups``
    times the kernel's taps (transposed convs included, as its ``conv_flops_counter_hook``)."""
    return _tensor_numel(output) * conv.in_channels // conv.groups * math.prod(conv.kernel_size)


def _norm_inputs(net: nn.Module) -> dict[nn.Module, nn.Module]:
    """Each norm of ``net`` -> the sibling registered just before it (conv -> bn), whose output it normalises."""
    before: dict[nn.Module, nn.Module] = {}
    for parent in net.modules():
        children = list(parent.children())
        for prev, child in itertools.pairwise(children):
            if isinstance(child, _NORMS):
                before.setdefault(child, prev)
    return before


class FlopCounter:
    """Counts, inside the context, the conv/matmul MACs executed (``MacCounter``) and ptflops' element-wise
    terms of every call of a module of ``net`` (``ptflops_term``); ``total(convention)`` combines them.

    Calls are seen through forward hooks (``module(x)``) and through wrappers of ``forward_step`` and
    ``forward_steps`` (which continual containers call directly); a call nested in another call of the same
    module is part of it. ``stepping=True`` says that the context holds continual steps, whose norm and
    activation terms ``"co3d_published"`` charges twice (module docstring).

    A norm that did not run while the module registered before it in its parent returned a tensor (a
    BatchNorm folded into its conv on the step path) is charged from that tensor, which is the norm's input in
    the unfolded net; such charges are listed in ``charged_from_structure``.
    """

    def __init__(self, net: nn.Module, stepping: bool = False) -> None:
        self.net = net
        self.stepping = stepping
        self.macs = MacCounter()
        self.terms: Counter[str] = Counter()
        self.calls: Counter[nn.Module] = Counter()
        self.charged_from_structure: list[str] = []
        self._norm_inputs = _norm_inputs(net)
        self._outputs: Counter[nn.Module] = Counter()  # summed numel of the tensors these modules returned
        self._depth: Counter[nn.Module] = Counter()
        self._watched_counted: set[nn.Module] = set()
        self.module_macs = 0  # conv formulas and Linear / MultiheadAttention MACs: the MACs ptflops sees
        self._open_products = 0  # Linear / MultiheadAttention calls under way (an inner one is the outer's)
        self._product_start: dict[nn.Module, int] = {}
        self._undo: list[Callable[[], None]] = []

    def total(self, convention: str) -> int:
        """Executed conv/matmul MACs (``"macs"``), or the module MACs ptflops sees plus the element-wise terms that
        ``convention`` counts."""
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if convention == "macs":
            return self.macs.total
        twice = convention == "co3d_published" and self.stepping
        doubled = self.terms["norm"] + self.terms["activation"] if twice else 0
        return self.module_macs + sum(self.terms.values()) + doubled

    # --- recording --------------------------------------------------------------------------------------
    def _enter(self, module: nn.Module) -> None:
        self._depth[module] += 1
        if self._depth[module] == 1 and (isinstance(module, _PRODUCTS) or _rule(module) is not None):
            if not self._open_products:
                self._product_start[module] = self.macs.total
            self._open_products += 1

    def _leave(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self._depth[module] -= 1
        if self._depth[module]:
            return  # nested in an outer call of the same module, which counts
        rule = _rule(module)
        if isinstance(module, _PRODUCTS) or rule is not None:
            self._open_products -= 1
            if module in self._product_start:
                executed = self.macs.total - self._product_start.pop(module)
                charged = None if rule is None else rule(module, inputs, output)
                self.module_macs += executed if charged is None else int(charged)
        elif isinstance(module, _CONVS) and not self._open_products:
            self.module_macs += _conv_formula(module, output)
        if module in self._watched_counted:
            kind, flops = ptflops_term(module, inputs, output)
            self.terms[kind] += flops
            self.calls[module] += 1
        if _first_tensor(output) is not None:
            self._outputs[module] += _tensor_numel(output)

    def _wrap(self, module: nn.Module, name: str) -> None:
        method = getattr(module, name)
        had_own = name in module.__dict__

        def call(x: Any, *args: Any, **kwargs: Any) -> Any:
            self._enter(module)
            out = None
            try:
                out = method(x, *args, **kwargs)
                return out
            finally:
                self._leave(module, (x,), out)

        module.__dict__[name] = call
        self._undo.append(lambda: module.__dict__.__setitem__(name, method) if had_own else module.__dict__.pop(name))

    def _watch(self, module: nn.Module) -> None:
        pre = module.register_forward_pre_hook(lambda m, inputs: self._enter(m))
        post = module.register_forward_hook(lambda m, inputs, out: self._leave(m, inputs, out))
        self._undo += [pre.remove, post.remove]
        for name in ("forward_step", "forward_steps"):
            if callable(getattr(module, name, None)):
                self._wrap(module, name)

    def __enter__(self) -> FlopCounter:
        self._watched_counted = {m for m in self.net.modules() if _counted(m)}
        seen = {m for m in self.net.modules() if isinstance(m, _CONVS + _PRODUCTS) or _rule(m) is not None}
        for m in self._watched_counted | set(self._norm_inputs.values()) | seen:
            self._watch(m)
        self.macs.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.macs.__exit__(*exc)
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        if exc[0] is None:
            self._charge_skipped_norms()

    def _charge_skipped_norms(self) -> None:
        names = {m: n for n, m in self.net.named_modules()}
        for norm, before in self._norm_inputs.items():
            if self.calls[norm] == 0 and self._outputs[before]:
                affine = getattr(norm, "affine", False) or getattr(norm, "elementwise_affine", False)
                self.terms["norm"] += self._outputs[before] * (2 if affine else 1)
                self.charged_from_structure.append(names.get(norm, type(norm).__name__))


def count_flops(
    net: nn.Module, fn: Callable[..., Any], *args: Any, convention: str = "macs", stepping: bool = False, **kwargs: Any
) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` in ``convention`` (``CONVENTIONS``), charging the calls of ``net``'s
    modules; ``stepping=True`` when ``fn`` runs continual steps (see ``FlopCounter``)."""
    with countable(), FlopCounter(net, stepping=stepping) as counter:
        fn(*args, **kwargs)
    return counter.total(convention)
