"""Model profiling: parameters, FLOPs per prediction, peak memory and throughput.

FLOPs are counted in one of three conventions (``CONVENTIONS``); all of them count a call by what it executes.

``"macs"`` (ours, the default)
    Multiply-accumulates of the conv/matmul-type aten operations a call actually executes (a
    ``TorchDispatchMode``, rules in ``_MAC_RULES``), so a continual step is charged for what its implementation
    runs, not for a formula. Element-wise ops, normalisation, pooling and softmax are free, as in fvcore and the
    X3D paper (Feichtenhofer, CVPR 2020, Table 3). Papers in this field call MACs "FLOPs"; so do we:
    ``gflops = MACs / 1e9``.

``"ptflops"``
    What ``ptflops.get_model_complexity_info`` (Sovrasov, flops-counter.pytorch 0.6.x, ``MODULES_MAPPING``; the
    counter of the Co3D paper, spec video.md A5) reports for the same calls: the conv/linear MACs above plus, for
    every executed call of a module of these types, its element-wise terms (``ptflops_term``):

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
    The convention of the Co3D paper's GFLOPs column (Hedegaard & Iosifidis, arXiv 2106.00050, results table;
    spec video.md A5): ptflops as it met the ``continual-inference`` library (LukasHedegaard/continual-inference)
    and ``co3d``, which reproduces every row of the table within 1.5 % (its rounding). It is ``"ptflops"`` with
    two artefacts of that set-up, both in frame mode only (clip rows ran in plain forward mode):

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

Frame mode profiles the continual step protocol: ``clean_state()``, warm-up until the stream emits, then one
prediction is ``stride[0]`` calls of ``forward_step`` (a net with temporal stride ``s`` predicts once every ``s``
frames), the last of which returns the output. Clip mode is one ``net(clip)`` call per prediction.

The two ptflops conventions count the modules of the net they are given, so profile the unfolded net for them:
``modules.continual.fold_batchnorm`` replaces each norm by ``Identity`` and gives its conv a bias, so a folded
net is charged one bias add per element where the norm was charged two (``"macs"`` is the same either way). A
norm that stays in the tree but that a step path skips (folded on the fly) is charged from the output of the
module before it; see ``FlopCounter``.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = [
    "CONVENTIONS",
    "FlopCounter",
    "MacCounter",
    "count_flops",
    "count_macs",
    "count_params",
    "peak_live_bytes",
    "profile_model",
    "ptflops_term",
    "throughput_stats",
]

aten = torch.ops.aten
log = logging.getLogger(__name__)


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _conv_macs(args: tuple, out: Tensor) -> int:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups).
    # Each output element of a regular conv takes (C_in / groups) * prod(kernel) MACs: weight.shape[1:].
    # A transposed conv scatters each input element over (C_out / groups) * prod(kernel) outputs.
    x, w, transposed = args[0], args[1], args[6]
    per_element = _numel(w.shape[1:])
    return (x.numel() if transposed else out.numel()) * per_element


def _sdpa_macs(args: tuple, out: Any) -> int:
    # q (B, H, L, E), k (B, H, S, E), v (B, H, S, Ev): Q·Kᵀ is L·S·E and A·V is L·S·Ev per batch and head.
    # Masked (causal) entries are counted too: dense attention, as the papers' formulas.
    q, k, v = args[0], args[1], args[2]
    batch_heads = _numel(q.shape[:-2])
    return batch_heads * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _native_mha_macs(args: tuple, out: Any) -> int:
    # _native_multi_head_attention(query (B, L, E), key (B, S, E), value, embed_dim, num_heads, ...): the
    # fused fast path of nn.MultiheadAttention. In-projection of q (L·E²) and k, v (2·S·E²), attention
    # (2·L·S·E over all heads) and out-projection (L·E²).
    q, k = args[0], args[1]
    b, length, e = q.shape
    s = k.shape[1]
    return b * (2 * length * e * e + 2 * s * e * e + 2 * length * s * e)


#: MACs of each counted op, from its arguments and output. mm (n,k)@(k,m): n·k·m; bmm: b·n·k·m;
#: addmm/baddbmm: the product only (the bias add is element-wise); mv/addmv: n·k; dot: n.
_MAC_RULES: dict[Any, Callable[[tuple, Any], int]] = {
    aten.mm.default: lambda a, o: a[0].shape[0] * a[0].shape[1] * a[1].shape[1],
    aten.addmm.default: lambda a, o: a[1].shape[0] * a[1].shape[1] * a[2].shape[1],
    aten._addmm_activation.default: lambda a, o: a[1].shape[0] * a[1].shape[1] * a[2].shape[1],
    aten.bmm.default: lambda a, o: a[0].shape[0] * a[0].shape[1] * a[0].shape[2] * a[1].shape[2],
    aten.baddbmm.default: lambda a, o: a[1].shape[0] * a[1].shape[1] * a[1].shape[2] * a[2].shape[2],
    aten.mv.default: lambda a, o: a[0].numel(),
    aten.addmv.default: lambda a, o: a[1].numel(),
    aten.dot.default: lambda a, o: a[0].numel(),
    aten.convolution.default: _conv_macs,
    aten._convolution.default: _conv_macs,
    aten._scaled_dot_product_flash_attention.default: _sdpa_macs,
    aten._scaled_dot_product_flash_attention_for_cpu.default: _sdpa_macs,
    aten._scaled_dot_product_efficient_attention.default: _sdpa_macs,
    aten._scaled_dot_product_cudnn_attention.default: _sdpa_macs,
    aten._native_multi_head_attention.default: _native_mha_macs,
}

#: Fused ops whose MACs we cannot see; counting fails loudly rather than under-count.
_UNCOUNTABLE = {aten._transformer_encoder_layer_fwd.default}


class MacCounter(TorchDispatchMode):
    """Sums the MACs of the conv/matmul-type aten ops executed inside the context; ``by_op`` splits them."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _UNCOUNTABLE:
            raise NotImplementedError(
                f"count_macs cannot see inside the fused op {func}; disable the fast path "
                "(torch.backends.mha.set_fastpath_enabled(False)) while counting"
            )
        out = func(*args, **kwargs)
        rule = _MAC_RULES.get(func)
        if rule is not None:
            self.by_op[str(func.overloadpacket.__name__)] += int(rule(args, out))
        return out


@contextmanager
def _countable() -> Any:
    # Inside inference_mode, composite ops such as aten.linear reach the dispatch mode undecomposed and their
    # parts (addmm, ...) are never seen; plain no_grad decomposes them. The MHA fast path is a fused kernel.
    mha_fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode(False):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(mha_fastpath)


def count_macs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """MACs executed by ``fn(*args, **kwargs)`` (conv/matmul-type aten ops; see ``_MAC_RULES``)."""
    with _countable(), MacCounter() as counter:
        fn(*args, **kwargs)
    return counter.total


# --- ptflops' element-wise terms ---------------------------------------------------------------------
#: Counting conventions of ``count_flops`` / ``profile_model`` (module docstring).
CONVENTIONS = ("macs", "ptflops", "co3d_published")

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU)
_POOLS = (
    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)  # fmt: skip
_BIASED = (nn.modules.conv._ConvNd, nn.Linear)


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
        self._undo: list[Callable[[], None]] = []

    def total(self, convention: str) -> int:
        """Conv/matmul MACs plus the element-wise terms that ``convention`` counts."""
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if convention == "macs":
            return self.macs.total
        twice = convention == "co3d_published" and self.stepping
        doubled = self.terms["norm"] + self.terms["activation"] if twice else 0
        return self.macs.total + sum(self.terms.values()) + doubled

    # --- recording --------------------------------------------------------------------------------------
    def _enter(self, module: nn.Module) -> None:
        self._depth[module] += 1

    def _leave(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self._depth[module] -= 1
        if self._depth[module]:
            return  # nested in an outer call of the same module, which counts
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
        for m in self._watched_counted | set(self._norm_inputs.values()):
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
    with _countable(), FlopCounter(net, stepping=stepping) as counter:
        fn(*args, **kwargs)
    return counter.total(convention)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones once); ``trainable_only`` counts those with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# --- memory ------------------------------------------------------------------------------------------
class _LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storages alive at once, sampled after every aten op.

    It sees what torch allocates for op outputs (not allocator caching or an op's internal workspace), which
    on CPU is the closest analogue of CUDA's ``max_memory_allocated``: process RSS or ``tracemalloc`` cannot
    isolate one call (torch allocates through C, outside Python's allocator).
    """

    def __init__(self, existing: Sequence[Tensor]) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        for t in existing:
            self._track(t)
        self.peak = self.current

    @property
    def current(self) -> int:
        return sum(n for _, n in self.live.values())

    def _track(self, t: Tensor) -> None:
        storage = t.untyped_storage()
        ref = StorageWeakRef(storage)
        if ref.cdata not in self.live:
            self.live[ref.cdata] = (ref, storage.nbytes())

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.device.type != "meta":
                self._track(t)
        self.peak = max(self.peak, self.current)
        return out


def peak_live_bytes(fn: Callable[[], Any], existing: Sequence[Tensor] = ()) -> int:
    """Peak bytes of live tensor storages while ``fn()`` runs, ``existing`` tensors (weights, inputs) included."""
    with _countable(), _LiveBytes(existing) as tracker:
        fn()
    return tracker.peak


def _state_tensors(net: nn.Module) -> list[Tensor]:
    state = net.get_state() if hasattr(net, "get_state") else None
    return [t for t in tree_leaves(state) if isinstance(t, Tensor)]


# --- the profile ------------------------------------------------------------------------------------
def _frame_stepper(net: nn.Module, step_input: Callable[[], Tensor]) -> Callable[[], Tensor | None]:
    """Warm the stream up; return one step. From then on every block of ``stride[0]`` steps is one
    prediction, its last step the one that emits."""
    for attr in ("forward_step", "forward_steps", "clean_state", "delay", "stride"):
        if not hasattr(net, attr):
            raise TypeError(
                f"mode='frame' needs a continual net; {type(net).__name__} has no `{attr}`. Profile it with "
                "mode=clip, or profile its continual twin."
            )
    net.clean_state()
    # `delay` steps fill the state; one more emits the first output, so each later block of `stride` steps
    # ends on an output.
    warm = torch.stack([step_input() for _ in range(net.delay + 1)], dim=2)
    if net.forward_steps(warm) is None:
        raise RuntimeError(f"{type(net).__name__} emitted nothing after delay + 1 = {net.delay + 1} steps")
    return lambda: net.forward_step(step_input())


def _predict_by_steps(net: nn.Module, step: Callable[[], Tensor | None], steps: int) -> Tensor:
    out = None
    for _ in range(steps):
        out = step()
    if out is None:
        raise RuntimeError(f"{type(net).__name__}: no output after {steps} steps (stride[0]) past warm-up")
    return out


def _count_prediction(
    net: nn.Module, mode: str, predict: Callable[[], Any], step: Callable[[], Any] | None, steps: int
) -> dict[str, int]:
    """FLOPs of one prediction in every convention. In frame mode each step has its own counter, so that
    ``co3d_published`` can take the emitting (last) step alone (module docstring)."""
    with _countable():
        if mode == "clip":
            with FlopCounter(net) as counter:
                predict()
            return {c: counter.total(c) for c in CONVENTIONS}
        counters = []
        for _ in range(steps):
            with FlopCounter(net, stepping=True) as counter:
                out = step()
            counters.append(counter)
    if out is None:
        raise RuntimeError(f"{type(net).__name__}: no output after {steps} steps (stride[0]) past warm-up")
    totals = {c: sum(k.total(c) for k in counters) for c in CONVENTIONS}
    totals["co3d_published"] = counters[-1].total("co3d_published")
    return totals


#: A profile whose per-call rates have an interquartile range above this fraction of their median is flagged
#: ``throughput_busy``. Measured with co_conv_stack (make profile-demo) on 2 CPU cores: IQR/median 0.15-0.25 with
#: the cores to itself, 0.31-1.9 while a matmul loop in another process competed for them.
BUSY_SPREAD = 0.3
#: A CPU profile is also flagged when other processes kept more cores busy during the timing than torch's
#: threads leave free, plus this many cores of slack for background daemons. Competing processes can slow every
#: call alike, which no spread shows: make profile-demo on 2 cores measured co_conv_stack's clip at 13.9
#: predictions/s with an IQR of 13.88-13.9 against 460-1170 otherwise, while other jobs ran.
BUSY_SLACK_CORES = 0.5


def _time_calls(
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int,
    repeats: int,
    min_time_s: float = 1.0,
    max_calls: int = 100_000,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds per call, synchronising CUDA so that each sample covers the whole call.

    After ``warmup`` untimed calls, calls are timed until at least ``repeats`` calls and ``min_time_s`` seconds
    of timing have passed (so that a fast net gets enough samples for a stable median), or ``max_calls`` calls.
    """
    if repeats < 1 or max_calls < repeats:
        raise ValueError(f"need 1 <= repeats <= max_calls, got repeats={repeats}, max_calls={max_calls}")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    seconds: list[float] = []
    began = clock()
    while len(seconds) < max_calls and (len(seconds) < repeats or clock() - began < min_time_s):
        sync()
        start = clock()
        fn()
        sync()
        seconds.append(clock() - start)
    return seconds


def throughput_stats(seconds: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Median and quartiles of the per-call rates (``batch_size`` / seconds, predictions/s), their interquartile
    range, the number of timed calls and ``throughput_busy``: IQR / median above ``BUSY_SPREAD``.

    The median, unlike the mean of rates, is not pulled by a few calls that a busy machine slowed down (or by
    the fast outliers that the reciprocal inflates). Quartiles interpolate linearly between calls (numpy's
    default, ``statistics.quantiles(method="inclusive")``).
    """
    if not seconds:
        raise ValueError("no timed calls: throughput needs at least one")
    rates = sorted(batch_size / s for s in seconds)
    q1, median, q3 = statistics.quantiles(rates, n=4, method="inclusive") if len(rates) > 1 else rates * 3
    return {
        "throughput_median": median,
        "throughput_q1": q1,
        "throughput_q3": q3,
        "throughput_iqr": q3 - q1,
        "throughput_busy": q3 - q1 > BUSY_SPREAD * median,
        "timed_calls": len(rates),
        "timed_seconds": math.fsum(seconds),
    }


def _machine_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent since boot, all cores together (Linux ``/proc/stat``: user, nice,
    system, irq, softirq and steal time); None where the OS does not tell."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _competing_cores(
    fn: Callable[[], Any],
    machine_seconds: Callable[[], float | None] = _machine_cpu_seconds,
    own_seconds: Callable[[], float] = time.process_time,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Any, float | None]:
    """``fn()`` and how many cores other processes kept busy meanwhile: the machine's CPU seconds less this
    process's (all its threads), per second of wall time; None where the OS does not tell."""
    machine, own, start = machine_seconds(), own_seconds(), clock()
    out = fn()
    machine_end, own_end, end = machine_seconds(), own_seconds(), clock()
    if machine is None or machine_end is None or end <= start:
        return out, None
    return out, max(0.0, (machine_end - machine) - (own_end - own)) / (end - start)


def _busy_reasons(stats: dict[str, Any], device: torch.device, competing: float | None) -> list[str]:
    """Why the timed calls may not show the net's speed: a wide spread, or (on CPU) other processes' load."""
    reasons = []
    if stats["throughput_busy"]:
        spread = stats["throughput_iqr"] / stats["throughput_median"]
        reasons.append(f"the per-call rates spread over an IQR of {spread:.0%} of their median (> {BUSY_SPREAD:.0%})")
    free = (os.cpu_count() or 1) - torch.get_num_threads()
    if device.type == "cpu" and competing is not None and competing > free + BUSY_SLACK_CORES:
        reasons.append(
            f"other processes kept {competing:.2f} cores busy, where torch's {torch.get_num_threads()} threads leave "
            f"{free} of {os.cpu_count()} free"
        )
    return reasons


def profile_model(
    net: nn.Module,
    mode: str = "clip",
    input_shape: Sequence[int] = (3, 8, 112, 112),
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 10,
    repeats: int = 50,
    convention: str = "macs",
    min_time_s: float = 1.0,
) -> dict[str, Any]:
    """Profile ``net`` on random input of ``(batch_size, *input_shape)`` (``input_shape = (C, T, *spatial)``).

    Returns params, FLOPs per prediction, peak memory in bytes and throughput in predictions/s: the median and
    quartiles over the timed calls (``throughput_stats``), which follow ``warmup`` untimed calls and last at least
    ``repeats`` calls and ``min_time_s`` seconds (``timed_calls`` says how many ran); ``throughput_busy`` flags
    (and a warning and ``busy_reasons`` report) a spread above ``BUSY_SPREAD`` or, on CPU, other processes using
    the cores that torch's threads need (``competing_cores``, ``BUSY_SLACK_CORES``): signs that the machine was
    busy. ``gflops_per_prediction`` is in
    ``convention`` (module docstring); ``gflops_by_convention`` has every convention and ``macs_per_prediction``
    the executed conv/matmul MACs, whatever ``convention`` says. Each timed call includes the host→device copy
    of its input and the device→host copy of its output. Peak memory is CUDA's ``max_memory_allocated`` over one
    call (weights, state and input included); on CPU it is the peak of live tensor storages over one call
    (``_LiveBytes``), also including weights, state and input.
    """
    if mode not in ("clip", "frame"):
        raise ValueError(f"mode must be 'clip' or 'frame', got {mode!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but CUDA is not available; use device=cpu")
    net = net.to(device).eval()
    c, t, *spatial = input_shape
    host_clip = torch.randn(batch_size, c, t, *spatial)
    host_step = torch.randn(batch_size, c, *spatial)

    with torch.no_grad():
        step = None
        if mode == "clip":
            steps = 1

            def predict() -> Tensor:
                return net(host_clip.to(device)).to("cpu")

        else:
            step = _frame_stepper(net, lambda: host_step.to(device))
            steps = int(net.stride[0])

            def predict() -> Tensor:
                return _predict_by_steps(net, step, steps).to("cpu")

        # every counted term (MACs, numel-based terms) grows exactly with the batch: the division is exact
        flops = {c: n // batch_size for c, n in _count_prediction(net, mode, predict, step, steps).items()}
        peak = _peak_memory(net, predict, device, [host_clip if mode == "clip" else host_step])
        with torch.inference_mode():  # timing only (the counters above need no_grad): no version counting
            seconds, competing = _competing_cores(lambda: _time_calls(predict, device, warmup, repeats, min_time_s))

    timing = throughput_stats(seconds, batch_size)
    reasons = _busy_reasons(timing, device, competing)
    timing["throughput_busy"] = bool(reasons)
    if reasons:
        log.warning(
            f"{type(net).__name__} ({mode}, {device}, batch {batch_size}): the machine was probably busy while timing: "
            f"{'; '.join(reasons)}. Rerun on an idle machine for a throughput to quote."
        )
    return {
        "model": type(net).__name__,
        "mode": mode,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch_size": batch_size,
        "input_shape": list(input_shape),
        "steps_per_prediction": steps,
        "params": count_params(net),
        "trainable_params": count_params(net, trainable_only=True),
        "macs_per_prediction": flops["macs"],
        "convention": convention,
        "gflops_per_prediction": flops[convention] / 1e9,
        "gflops_by_convention": {c: n / 1e9 for c, n in flops.items()},
        "peak_memory_bytes": peak,
        **timing,
        "throughput_unit": "predictions/s",
        "busy_reasons": reasons,
        "competing_cores": competing,
        "warmup": warmup,
        "repeats": repeats,
        "min_time_s": min_time_s,
        "torch_version": torch.__version__,
    }


def _peak_memory(net: nn.Module, predict: Callable[[], Any], device: torch.device, inputs: list[Tensor]) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        predict()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    existing = [*net.parameters(), *net.buffers(), *_state_tensors(net), *inputs]
    return peak_live_bytes(predict, existing)
