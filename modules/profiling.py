"""Model profiling: parameters, multiply-accumulates per prediction, peak memory and throughput.

Papers in this field call multiply-accumulates "FLOPs"; so do we: ``gflops = MACs / 1e9``. MACs are counted
from the aten operations a call actually executes (a ``TorchDispatchMode``), so a continual step is charged
for what its implementation runs, not for a formula. Only conv/matmul-type ops are counted (table below);
element-wise ops, normalisation, pooling and softmax are not, as in ptflops/fvcore-style counts of CNNs.

Frame mode profiles the continual step protocol: ``clean_state()``, warm-up until the stream emits, then one
prediction is ``stride[0]`` calls of ``forward_step`` (a net with temporal stride ``s`` predicts once every ``s``
frames), the last of which returns the output. Clip mode is one ``net(clip)`` call per prediction.
"""

from __future__ import annotations

import math
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

__all__ = ["MacCounter", "count_macs", "count_params", "peak_live_bytes", "profile_model"]

aten = torch.ops.aten


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
def _frame_predictor(net: nn.Module, step_input: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """Warm the stream up, then return a callable making one prediction (``stride[0]`` steps)."""
    for attr in ("forward_step", "forward_steps", "clean_state", "delay", "stride"):
        if not hasattr(net, attr):
            raise TypeError(
                f"mode='frame' needs a continual net; {type(net).__name__} has no `{attr}`. Profile it with "
                "mode=clip, or profile its continual twin."
            )
    steps = int(net.stride[0])
    net.clean_state()
    # `delay` steps fill the state; one more emits the first output, so each later block of `steps` steps
    # ends on an output.
    warm = torch.stack([step_input() for _ in range(net.delay + 1)], dim=2)
    if net.forward_steps(warm) is None:
        raise RuntimeError(f"{type(net).__name__} emitted nothing after delay + 1 = {net.delay + 1} steps")

    def predict() -> Tensor:
        out = None
        for _ in range(steps):
            out = net.forward_step(step_input())
        if out is None:
            raise RuntimeError(f"{type(net).__name__}: no output after {steps} steps (stride[0]) past warm-up")
        return out

    return predict


def _time_calls(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call, synchronising CUDA so that each sample covers the whole call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def profile_model(
    net: nn.Module,
    mode: str = "clip",
    input_shape: Sequence[int] = (3, 8, 112, 112),
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 10,
    repeats: int = 50,
) -> dict[str, Any]:
    """Profile ``net`` on random input of ``(batch_size, *input_shape)`` (``input_shape = (C, T, *spatial)``).

    Returns params, MACs and GFLOPs (= MACs / 1e9) per prediction, peak memory in bytes and throughput in
    predictions/s (mean ± std over ``repeats`` timed calls after ``warmup`` calls). Each timed call includes
    the host→device copy of its input and the device→host copy of its output. Peak memory is CUDA's
    ``max_memory_allocated`` over one call (weights, state and input included); on CPU it is the peak of live
    tensor storages over one call (``_LiveBytes``), also including weights, state and input.
    """
    if mode not in ("clip", "frame"):
        raise ValueError(f"mode must be 'clip' or 'frame', got {mode!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but CUDA is not available; use device=cpu")
    net = net.to(device).eval()
    c, t, *spatial = input_shape
    host_clip = torch.randn(batch_size, c, t, *spatial)
    host_step = torch.randn(batch_size, c, *spatial)

    with torch.no_grad():
        if mode == "clip":
            steps = 1

            def predict() -> Tensor:
                return net(host_clip.to(device)).to("cpu")

        else:
            step_predict = _frame_predictor(net, lambda: host_step.to(device))
            steps = int(net.stride[0])

            def predict() -> Tensor:
                return step_predict().to("cpu")

        # conv/matmul MACs grow exactly with the batch, so this division is exact
        macs = count_macs(predict) // batch_size
        peak = _peak_memory(net, predict, device, [host_clip if mode == "clip" else host_step])
        seconds = _time_calls(predict, device, warmup, repeats)

    rates = [batch_size / s for s in seconds]
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
        "macs_per_prediction": macs,
        "gflops_per_prediction": macs / 1e9,
        "peak_memory_bytes": peak,
        "throughput_mean": statistics.fmean(rates),
        "throughput_std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "throughput_unit": "predictions/s",
        "warmup": warmup,
        "repeats": repeats,
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
