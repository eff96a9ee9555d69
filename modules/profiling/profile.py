"""``profile_model``: parameters, FLOPs per prediction, peak memory and throughput of a net in clip or frame mode.

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

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from modules.continual import fast_step, fold_batchnorm
from modules.continual.replay import warm_until_output

from . import timing
from .conventions import CONVENTIONS, FlopCounter
from .macs import countable
from .memory import peak_memory

__all__ = ["count_params", "profile_model"]

log = logging.getLogger(__name__)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones once); ``trainable_only`` counts those with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


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
    warm_until_output(net, step_input())
    return lambda: net.forward_step(step_input())


def _predict_by_steps(net: nn.Module, step: Callable[[], Tensor | None], steps: int) -> Tensor:
    out = None
    for _ in range(steps):
        out = step()
    if out is None:
        raise RuntimeError(f"{type(net).__name__}: no output after {steps} steps (stride[0]) past warm-up")
    return out


def _fast_predict(
    net: nn.Module, mode: str, host_clip: Tensor, host_step: Tensor, device: torch.device, compile: bool, timeout: float
) -> tuple[nn.Module, Callable[[], Tensor], dict[str, Any]]:
    """The deployed form of ``net`` (BatchNorm folded, compiled where asked and possible) and one prediction."""
    if hasattr(net, "clean_state"):
        net.clean_state()  # the counted steps' state is not the copy's (nor copyable if it carries autograd history)
    folded = fold_batchnorm(copy.deepcopy(net), inplace=True)
    if mode == "clip":
        fn, ran = folded, {"fold_bn": True, "compiled": False, "reason": "compile=false"}
        if compile:
            try:  # the first call compiles
                compiled = torch.compile(folded, dynamic=False)
                compiled(host_clip.to(device))
                fn, ran = compiled, {**ran, "compiled": True, "reason": "torch.compile"}
            except Exception as error:  # any compiler failure: time it eagerly, say why
                ran["reason"] = f"compilation failed: {type(error).__name__}: {error}"
                log.warning(f"{type(net).__name__}: {ran['reason']}; timing it eagerly")
        return folded, lambda: fn(host_clip.to(device)).to("cpu"), ran
    stepper = fast_step(folded, host_step.to(device), compile, timeout)
    for _ in range(int(net.delay) + 1):  # the warm-up: from here every block of `stride` steps emits once
        if stepper(host_step.to(device)) is not None:
            break
    steps = int(net.stride[0])
    ran = {"fold_bn": True, "compiled": stepper.compiled, "reason": stepper.reason}
    return folded, lambda: _predict_by_steps(net, lambda: stepper(host_step.to(device)), steps).to("cpu"), ran


def _count_prediction(
    net: nn.Module, mode: str, predict: Callable[[], Any], step: Callable[[], Any] | None, steps: int
) -> dict[str, int]:
    """FLOPs of one prediction in every convention. In frame mode each step has its own counter, so that
    ``co3d_published`` can take the emitting (last) step alone (module docstring)."""
    with countable():
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
    fast_path: bool = False,
    compile: bool = False,
    compile_timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Profile ``net`` on random input of ``(batch_size, *input_shape)`` (``input_shape = (C, T, *spatial)``).

    Returns params, FLOPs per prediction, peak memory in bytes and throughput in predictions/s: the median and
    quartiles over the timed calls (``timing.throughput_stats``), which follow ``warmup`` untimed calls and last
    at least ``repeats`` calls and ``min_time_s`` seconds (``timed_calls`` says how many ran). ``throughput_busy``
    flags (and a warning and ``busy_reasons`` report) a spread above ``timing.BUSY_SPREAD`` or, on CPU, other
    processes using the cores that torch's threads need (``competing_cores``, ``timing.BUSY_SLACK_CORES``): signs
    that the machine was busy. ``gflops_per_prediction`` is in ``convention`` (``conventions``);
    ``gflops_by_convention`` has every convention and ``macs_per_prediction`` the executed conv/matmul MACs,
    whatever ``convention`` says. Each timed call includes the host→device copy of its input and the device→host
    copy of its output. Peak memory is ``memory.peak_memory`` over one call (weights, state and input included).

    ``fast_path`` times what a deployment runs: a copy of ``net`` with BatchNorm
    folded, and with ``compile`` compiled by inductor (``torch.compile`` in clip mode; ``modules.continual.
    fast_step`` in frame mode, eager if compilation fails or outlasts ``compile_timeout_s``); ``fast_path`` in the
    result says what ran. FLOPs are always counted on ``net`` as given (the conventions count its modules).
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
        # peak memory of the net as built: a compiled program cannot run under the tracking dispatch mode
        peak = peak_memory(net, predict, device, [host_clip if mode == "clip" else host_step])
        ran = {"fold_bn": False, "compiled": False, "reason": "fast_path=false"}
        if fast_path:
            _, predict, ran = _fast_predict(net, mode, host_clip, host_step, device, compile, compile_timeout_s)
        with torch.inference_mode():  # timing only (the counters above need no_grad): no version counting
            timed = lambda: timing.time_calls(predict, device, warmup, repeats, min_time_s)  # noqa: E731
            seconds, competing = timing.competing_cores(timed)

    rates = timing.throughput_stats(seconds, batch_size)
    reasons = timing.busy_reasons(rates, device, competing)
    rates["throughput_busy"] = bool(reasons)
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
        "fast_path": ran,
        "params": count_params(net),
        "trainable_params": count_params(net, trainable_only=True),
        "macs_per_prediction": flops["macs"],
        "convention": convention,
        "gflops_per_prediction": flops[convention] / 1e9,
        "gflops_by_convention": {c: n / 1e9 for c, n in flops.items()},
        "peak_memory_bytes": peak,
        **rates,
        "throughput_unit": "predictions/s",
        "busy_reasons": reasons,
        "competing_cores": competing,
        "warmup": warmup,
        "repeats": repeats,
        "min_time_s": min_time_s,
        "torch_version": torch.__version__,
    }
