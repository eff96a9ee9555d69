"""Correct counts from the third-party FLOP counters ptflops and fvcore on continual nets, in clip and step mode.

Neither counter knows continual layers out of the box:

* **ptflops** (``get_model_complexity_info``, its default pytorch backend) hooks modules whose *exact* type is in
  its ``MODULES_MAPPING``. ``co.Conv3d``, ``co.AvgPool3d``, ``co.Linear`` and the step-capable copies of BatchNorm
  and ReLU that ``co.continual`` makes are subclasses, so every continual layer counts 0 (so does a subclass such as
  a channels-first ``nn.Linear``). A step fails outright: containers call their children's ``forward_step``
  directly and ``net(step)`` under ``co.call_mode("forward_step")`` dispatches straight to ``forward_step``, so no
  forward hook fires, not even ptflops' batch counter on the net; ptflops divides by that count of 0 and returns
  ``(None, None)``.
* **fvcore** (``FlopCountAnalysis``) traces with ``torch.jit`` and counts aten ops, so a clip counts right. A step
  traces too, but the trace keeps only the ops that the step's *output* depends on: work whose result only enters
  the state is dropped as dead code, so a step is under-counted (CoX3D-S: its four strided 1x1x1 shortcut
  projections, which reach the output one step later through a delay) and a step that emits nothing counts 0.
  Per-module counts of the children are 0 (fvcore scopes modules with hooks, which ``forward_step`` calls bypass),
  its ``aten::matmul`` rule drops the batch of a broadcast second factor (a continual 1x1 conv steps as ``W @ x``)
  and it has no rule for ``scaled_dot_product_attention``. The trace runs lazily, at the first ``total()``: a
  ``call_mode`` context left before then traces ``net(step)`` as a clip.

ptflops' aten backend (``backend="aten"``, ptflops >= 0.7.3) needs none of this: like ``count_macs`` it counts the
aten ops a call dispatches, so a clip, and a step under ``co.call_mode("forward_step")``, give ``count_macs`` plus
the bias adds of the convolutions and ``addmm``s that are given a bias (a continual conv adds its bias outside the
convolution on a step).

What this module gives the pytorch backend and fvcore:

``ptflops_custom_hooks(net)``
    ``custom_modules_hooks`` for ptflops: every continual layer of ``net`` (and each ``nn.Linear`` subclass) counts
    like its torch counterpart on what it executes. In clip mode that is ptflops' own formula, so a continual net
    counts what its offline net counts. In step mode a conv is charged the taps it runs: one output frame's
    multiply-accumulates per step (all ``k`` temporal taps of the newest frame, see ``modules.continual.conv``),
    also on a strided step that emits nothing, except for a CPU depthwise conv, which convolves its input window
    only on the steps that emit. A pool is charged ``numel(input)`` per call and a linear ``numel(output) *
    in_features``, both as ptflops charges their torch layers.
``visible_steps(net)``
    Context in which ``net(step)`` runs ``forward_step`` and every ``forward_step`` of ``net``'s continual modules
    runs the module's forward hooks (pre and post), as ``module(x)`` would; ptflops' tensor-op counters
    (``torch.matmul``, ``torch.add``, ...) are paused inside the continual layers that the hooks above charge
    whole; the stream state is restored on exit, so counting leaves the stream as it was.
``fvcore_handles()``, ``FvcoreStep`` and ``fvcore_step_analysis``
    Op handles that make fvcore count what ``count_macs`` counts (conv/matmul-type MACs; norms and pools free),
    and a module that runs one step with state updates made out of place and returns the new state with the
    output, so that the trace keeps every op the step executes.

ptflops' convention against ours (``modules.profiling``): ptflops reports MACs per sample (it divides by the batch
size), ``count_macs`` and fvcore count the whole batch. ptflops adds element-wise terms that ``count_macs`` leaves
out: a bias add per output element of a conv or linear with a bias, ``numel`` of a BatchNorm's input (twice with
affine parameters), of a ReLU's output and of a pool's input: exactly the terms of ``ptflops_term``. So with
``backend_specific_config={"count_functional": False}`` ptflops gives ``count_macs`` plus those terms. Left at its
default (``True``), ptflops 0.7 also counts functional calls, among them the ``F.relu`` and ``F.*pool*`` calls that
``nn.ReLU`` and the torch pools make inside their hooked ``forward``: activations and pools count twice, offline and
continual alike, and ``F.silu`` (Swish, whose module ptflops does not hook) counts once. Against the ``"ptflops"``
convention of ``conventions``: that one charges a conv on what it returns (a strided step that emits nothing is
free, as in the Co3D paper's counts) and charges ``register_pool_like`` modules (CoX3D's per-frame
squeeze-excitation mean) as pools; ptflops with these hooks charges a conv what it executes and does not see a mean.

Usage (a step; the net warmed up so that the counted step emits and every layer runs)::

    from ptflops import get_model_complexity_info
    from modules.profiling.counters import ptflops_custom_hooks, visible_steps

    net.eval().clean_state()
    frame = torch.randn(1, 3, 160, 160)
    for _ in range(net.delay):
        net.forward_step(frame)
    with visible_steps(net):
        macs, params = get_model_complexity_info(
            net, (3, 160, 160), as_strings=False, print_per_layer_stat=False,
            custom_modules_hooks=ptflops_custom_hooks(net), backend_specific_config={"count_functional": False},
        )

Clip mode needs no context: ``get_model_complexity_info(net, (3, T, H, W), custom_modules_hooks=...)``. Only
``forward_step`` is made visible: ``co.call_mode("forward_steps")`` is not supported (containers call their
children's ``forward_steps``, which local layers run as one clip).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

import modules.continual as co
from modules.continual.local import StepLocal

__all__ = ["FvcoreStep", "fvcore_handles", "fvcore_step_analysis", "ptflops_custom_hooks", "visible_steps"]

Hook = Callable[[nn.Module, tuple, Any], None]

_CONVS = (co.Conv1d, co.Conv2d, co.Conv3d)
_POOLS = (
    co.AvgPool1d, co.AvgPool2d, co.AvgPool3d, co.MaxPool1d, co.MaxPool2d, co.MaxPool3d,
    co.AdaptiveAvgPool2d, co.AdaptiveAvgPool3d, co.AdaptiveMaxPool2d, co.AdaptiveMaxPool3d,
)  # fmt: skip
#: continual layers whose steps the ptflops hooks charge whole (their implementation's tensor ops are not counted)
_CHARGED_WHOLE = (*_CONVS, *_POOLS, co.Linear)


# --- ptflops ------------------------------------------------------------------------------------------------------
def _add(module: nn.Module, flops: int) -> None:
    module.__flops__ += int(flops)


def _conv_out_spatial(conv: nn.Module, step: Tensor) -> list[int]:
    """Spatial output sizes of ``conv``'s step convolution on ``step`` (torch's conv arithmetic)."""
    sizes = []
    for i, size in enumerate(step.shape[2:], start=1):
        span = conv.dilation[i] * (conv.kernel_size[i] - 1) + 1
        sizes.append((size + 2 * conv.padding[i] - span) // conv.stride[i] + 1)
    return sizes


def _conv_hook(conv: nn.Module, inputs: tuple, output: Any) -> None:
    """ptflops' conv formula, ``numel(output) * in_channels / groups * prod(kernel)`` plus a bias add per output
    element, on a clip; on a step, the MACs the step executes (module docstring)."""
    x = inputs[0]
    per_output = conv.in_channels // conv.groups * math.prod(conv.kernel_size)
    bias = 0 if conv.bias is None or output is None else output.numel()
    if x.dim() == conv.weight.dim():  # a clip (B, C, T, *S), as the weight (C_out, C_in / g, k_t, *k_S)
        _add(conv, output.numel() * per_output + bias)
        return
    # A CPU depthwise conv keeps an input window and convolves it only when it emits; the others convolve every
    # step with all taps (``modules.continual.conv``), whether or not that step emits.
    if output is None and getattr(conv, "_buffered", False):
        return
    frame = x.shape[0] * conv.out_channels * math.prod(_conv_out_spatial(conv, x))
    _add(conv, frame * per_output + bias)


def _pool_hook(pool: nn.Module, inputs: tuple, output: Any) -> None:
    """ptflops' pool rule: ``numel(input)`` per call, a clip or a step."""
    _add(pool, inputs[0].numel())


def _linear_hook(linear: nn.Module, inputs: tuple, output: Any) -> None:
    """``numel(output) * in_features`` MACs plus a bias add per output element: ptflops' linear formula, read
    along the feature dim wherever it is (ptflops reads the last dim, which for ``co.Linear(channel_dim=1)`` and
    channels-first linears is time or space)."""
    bias = output.numel() if linear.bias is not None else 0
    _add(linear, output.numel() * linear.in_features + bias)


def _torch_hook(cls: type[nn.Module]) -> Hook | None:
    """ptflops' own hook for the nearest torch class of ``cls`` that ptflops maps (for ``StepLocal`` copies)."""
    from ptflops.pytorch_ops import MODULES_MAPPING

    return next((MODULES_MAPPING[base] for base in cls.__mro__[1:] if base in MODULES_MAPPING), None)


def _hook_for(cls: type[nn.Module]) -> Hook | None:
    if issubclass(cls, _CONVS):
        return _conv_hook
    if issubclass(cls, _POOLS):
        return _pool_hook
    if issubclass(cls, nn.Linear):
        return _linear_hook
    if issubclass(cls, StepLocal):
        return _torch_hook(cls)
    return None


def ptflops_custom_hooks(net: nn.Module) -> dict[type[nn.Module], Hook]:
    """``custom_modules_hooks`` for ``ptflops.get_model_complexity_info``: a hook for each module type of ``net``
    that ptflops would miss (it matches exact types): continual convs, pools and linears, the step-capable copies
    of torch layers that ``co.continual`` makes (BatchNorm, ReLU, ...: ptflops' own hook for the torch class) and
    ``nn.Linear`` subclasses. See the module docstring for what each charges, in clip and step mode."""
    from ptflops.pytorch_ops import MODULES_MAPPING

    hooks: dict[type[nn.Module], Hook] = {}
    for module in net.modules():
        cls = type(module)
        if cls in hooks or cls in MODULES_MAPPING:  # ptflops' own hook applies
            continue
        hook = _hook_for(cls)
        if hook is not None:
            hooks[cls] = hook
    return hooks


#: where ptflops 0.7 patches tensor ops while it counts (``patch_tensor_ops``); a patched one has an ``op``
_PTFLOPS_TENSOR_OPS = (
    (torch, ("matmul", "mm", "bmm", "addmm", "baddbmm", "mul", "add")),
    (torch.Tensor, ("matmul", "mm", "bmm", "addmm", "mul", "add")),
)


@contextlib.contextmanager
def _ptflops_tensor_ops_paused() -> Iterator[None]:
    """Restore torch's own tensor ops while a continual layer charged whole by its hook runs: its step is a
    matrix product (``torch.matmul``) and accumulator adds (``torch.add``) that ptflops would count again."""
    patched = [(ns, name, getattr(ns, name)) for ns, names in _PTFLOPS_TENSOR_OPS for name in names]
    patched = [(ns, name, fn) for ns, name, fn in patched if hasattr(fn, "op")]
    for ns, name, fn in patched:
        setattr(ns, name, fn.op)
    try:
        yield
    finally:
        for ns, name, fn in patched:
            setattr(ns, name, fn)


# --- hooks on steps ----------------------------------------------------------------------------------------------
def _run_with_hooks(module: nn.Module, method: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """``method(*args, **kwargs)`` between ``module``'s forward pre-hooks and forward hooks, as
    ``nn.Module.__call__`` runs them around ``forward`` (hooks registered with ``with_kwargs`` included)."""
    for hook_id, hook in list(module._forward_pre_hooks.items()):
        if hook_id in module._forward_pre_hooks_with_kwargs:
            result = hook(module, args, kwargs)
            if result is not None:
                args, kwargs = result
        else:
            result = hook(module, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
    out = method(*args, **kwargs)
    for hook_id, hook in list(module._forward_hooks.items()):
        if hook_id in module._forward_hooks_with_kwargs:
            result = hook(module, args, kwargs, out)
        else:
            result = hook(module, args, out)
        if result is not None:
            out = result
    return out


def _hooked_step(module: nn.Module, method: Callable[..., Any]) -> Callable[..., Any]:
    charged_whole = isinstance(module, _CHARGED_WHOLE)

    def forward_step(*args: Any, **kwargs: Any) -> Any:
        if charged_whole:
            with _ptflops_tensor_ops_paused():
                return _run_with_hooks(module, method, args, kwargs)
        return _run_with_hooks(module, method, args, kwargs)

    forward_step.runs_hooks = True  # type: ignore[attr-defined]  # a nested visible_steps leaves it as it is
    return forward_step


@contextlib.contextmanager
def visible_steps(net: nn.Module, restore_state: bool = True) -> Iterator[nn.Module]:
    """Within the context ``net(step)`` runs ``net.forward_step(step)``, and each ``forward_step`` of a continual
    module of ``net`` runs that module's forward hooks around it, so that hook-based counters (ptflops, fvcore's
    module scopes) see steps as they see ``module(x)``. A hook may receive ``None`` as output: the step emitted
    nothing. ptflops' tensor-op counters are paused inside the steps of continual convs, pools and linears, which
    ``ptflops_custom_hooks`` charge whole. With ``restore_state`` the stream state of ``net`` is the same after
    the context as before it."""
    if not callable(getattr(net, "forward_step", None)):
        raise TypeError(f"visible_steps needs a continual net (with forward_step); got {type(net).__name__}")
    saved = net.get_state() if restore_state else None
    wrapped = []
    for module in net.modules():
        method = getattr(module, "forward_step", None)
        if isinstance(module, co.CoModule) and callable(method) and not getattr(method, "runs_hooks", False):
            had_own = "forward_step" in module.__dict__
            module.__dict__["forward_step"] = _hooked_step(module, method)
            wrapped.append((module, method, had_own))
    try:
        with co.call_mode("forward_step"):
            yield net
    finally:
        for module, method, had_own in reversed(wrapped):
            if had_own:
                module.__dict__["forward_step"] = method
            else:
                module.__dict__.pop("forward_step", None)
        if restore_state:
            net.set_state(saved)


# --- fvcore ------------------------------------------------------------------------------------------------------
def _shapes(inputs: list[Any]) -> list[list[int] | None]:
    from fvcore.nn.jit_handles import get_shape

    return [get_shape(v) for v in inputs]


def _matmul_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::matmul`` with broadcasting: every output element takes ``K`` MACs (fvcore's own rule multiplies the
    first factor's size by the second's last dim, which drops the batch of a broadcast second factor)."""
    k = _shapes(inputs[:1])[0][-1]
    out = _shapes(outputs[:1])[0]
    return math.prod(out) * k if out else k  # a 1-d @ 1-d product is a scalar


def _addmm_like(mat_a: int, mat_b: int) -> Callable[[list[Any], list[Any]], int]:
    """``(b)addmm`` / ``baddbmm``-type ops: the product ``A @ B`` only (the added term is element-wise)."""

    def macs(inputs: list[Any], outputs: list[Any]) -> int:
        a, b = _shapes([inputs[mat_a], inputs[mat_b]])
        return math.prod(a) * b[-1]

    return macs


def _vector_macs(index: int) -> Callable[[list[Any], list[Any]], int]:
    """``mv`` / ``addmv`` / ``dot``: one MAC per element of the matrix (or vector) at ``index``."""

    def macs(inputs: list[Any], outputs: list[Any]) -> int:
        return math.prod(_shapes([inputs[index]])[0])

    return macs


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``scaled_dot_product_attention(q (..., L, E), k (..., S, E), v (..., S, Ev))``: ``Q·Kᵀ`` and ``A·V``, i.e.
    ``L·S·(E + Ev)`` per batch and head, masked entries included (as ``count_macs``)."""
    q, k, v = _shapes(inputs[:3])
    return math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def _free(inputs: list[Any], outputs: list[Any]) -> int:
    return 0


#: ops that ``count_macs`` treats as free (element-wise, normalisation, pooling) but fvcore counts by default
_FREE_IN_MACS = (
    "aten::batch_norm", "aten::group_norm", "aten::layer_norm", "aten::instance_norm",
    "aten::upsample_nearest2d", "aten::upsample_bilinear2d", "aten::adaptive_avg_pool2d", "aten::grid_sampler",
)  # fmt: skip
#: element-wise, reduction and data-movement ops of continual steps: free in both conventions (no warning)
_SILENT = (
    "aten::add", "aten::add_", "aten::sub", "aten::mul", "aten::mul_", "aten::div", "aten::mean", "aten::sum",
    "aten::amax", "aten::flip", "aten::movedim", "aten::stack", "aten::cat", "aten::clone", "aten::copy_",
    "aten::zeros_like", "aten::new_zeros", "aten::new_full", "aten::expand", "aten::unbind", "aten::relu",
    "aten::relu_", "aten::silu", "aten::silu_", "aten::sigmoid", "aten::softmax", "aten::dropout", "aten::max_pool2d",
    "aten::avg_pool2d", "aten::avg_pool3d", "aten::adaptive_avg_pool3d", "aten::adaptive_max_pool2d",
    "aten::contiguous", "aten::unsqueeze", "aten::squeeze", "aten::flatten", "aten::pad", "aten::constant_pad_nd",
    "aten::zero_", "aten::fill_", "aten::select", "aten::slice", "aten::narrow", "aten::transpose", "aten::permute",
)  # fmt: skip


def fvcore_handles(convention: str = "macs") -> dict[str, Callable[..., Any] | None]:
    """Op handles for ``fvcore.nn.FlopCountAnalysis(...).set_op_handle(**fvcore_handles())``.

    Both conventions count a multiply-add as one, as ``count_macs`` does, and add what fvcore lacks: a broadcast
    ``aten::matmul`` (fvcore drops the batch of its second factor), ``aten::baddbmm``, ``mv``, ``addmv``, ``dot``
    and ``scaled_dot_product_attention``. ``"macs"`` also makes norms, pools and upsampling free, so the total is
    ``count_macs``'s; ``"fvcore"`` keeps fvcore's element-wise terms for those (e.g. ``2 * numel`` per BatchNorm
    with affine parameters in eval). The element-wise and data-movement ops of continual steps are marked free,
    which silences fvcore's unsupported-op warnings for them.
    """
    if convention not in ("macs", "fvcore"):
        raise ValueError(f"convention must be 'macs' or 'fvcore', got {convention!r}")
    handles: dict[str, Callable[..., Any] | None] = dict.fromkeys(_SILENT)
    handles |= {
        "aten::matmul": _matmul_macs,
        "aten::baddbmm": _addmm_like(1, 2),
        "aten::addbmm": _addmm_like(1, 2),
        "aten::mv": _vector_macs(0),
        "aten::addmv": _vector_macs(1),
        "aten::dot": _vector_macs(0),
        "aten::scaled_dot_product_attention": _sdpa_macs,
    }
    if convention == "macs":
        # a handle that counts 0, not None: fvcore 0.1.5 keeps its own handle for an op set to None
        handles |= dict.fromkeys(_FREE_IN_MACS, _free)
    return handles


class FvcoreStep(nn.Module):
    """One ``forward_step`` of ``net`` as a module that fvcore can trace whole: ``forward(step)`` returns the step's
    output (an empty tensor when it emits nothing) followed by every state tensor the step wrote.

    Updates are made out of place (``co.out_of_place``) and the new state is returned, so the jit trace keeps the
    work whose result only enters the state, which it would otherwise drop as dead code (module docstring). Steps
    run inside ``visible_steps``, so fvcore's per-module counts (``by_module``) see the continual modules. The net's
    state is restored after each call: tracing runs the step, and counting should not advance the stream.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(net, "forward_step", None)):
            raise TypeError(f"FvcoreStep needs a continual net (with forward_step); got {type(net).__name__}")
        self.net = net

    def forward(self, step: Tensor) -> tuple[Tensor, ...]:
        with visible_steps(self.net), co.out_of_place():
            out = self.net.forward_step(step)
            state = [getattr(m, name) for m, name in co.state_slots(self.net)]
        head = out if isinstance(out, Tensor) else step.new_zeros(0)
        return (head, *(t for t in state if isinstance(t, Tensor)))


def fvcore_step_analysis(net: nn.Module, step: Tensor, convention: str = "macs") -> Any:
    """``fvcore.nn.FlopCountAnalysis`` of one ``forward_step(step)`` of ``net`` (``FvcoreStep``) with
    ``fvcore_handles(convention)``; ``total()`` is the step's count. Warm the net up first (``net.delay`` steps) to
    count a step on which every layer runs. ``net``'s state is left as it was."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(FvcoreStep(net), (step,)).set_op_handle(**fvcore_handles(convention))
    analysis.unsupported_ops_warnings(False)
    return analysis
