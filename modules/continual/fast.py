"""The fast way to step a continual net: ``fast_step(net, example_step)``.

It returns a stepper with one interface whatever runs underneath: ``stepper(step)`` gives what
``net.forward_step(step)`` gives (the output, or None while warming up and on skipped strided steps), plus
``clean_state(rows=None)``, ``get_state()`` / ``set_state()``, ``delay``, ``stride`` and ``compiled``. With
``compile=True`` the warmed-up step runs as a ``CompiledStep`` (inductor's fused kernels; a new stream warms up
eagerly, then joins the compiled program: no recompile), provided compilation finishes within ``timeout_s``; a
compilation that fails or takes longer is logged and the stepper steps eagerly. Fold BatchNorm first
(``modules.nets.build(name, inference=True)`` or ``co.fold_batchnorm``): that is not done here, since it changes
the net's ``state_dict``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .replay import CompiledStep

__all__ = ["EagerStep", "fast_step"]

log = logging.getLogger(__name__)


class EagerStep:
    """``net.forward_step`` behind the stepper interface (see the module docstring); no compilation."""

    compiled = False

    def __init__(self, net: nn.Module, reason: str = "compile=False") -> None:
        if net.training:
            raise ValueError(f"stepping {type(net).__name__} needs net.eval(): training-mode layers cannot step")
        self.net = net
        self.reason = reason  # why this stepper is not compiled

    @property
    def delay(self) -> int:
        return int(self.net.delay)

    @property
    def stride(self) -> int:
        return int(self.net.stride[0])

    def __call__(self, step: Tensor) -> Tensor | None:
        with torch.no_grad():
            return self.net.forward_step(step)

    def clean_state(self, rows: Sequence[int] | None = None) -> None:
        if rows is not None:
            raise ValueError(
                "an eager stepper restarts the whole batch (clean_state()); per-row restarts need a CompiledStep"
            )
        self.net.clean_state()

    def get_state(self) -> Any:
        return self.net.get_state()

    def set_state(self, state: Any) -> None:
        self.net.set_state(state)


def fast_step(
    net: nn.Module,
    example_step: Tensor,
    compile: bool = True,
    timeout_s: float = 300.0,
    backend: str = "inductor",
    options: dict[str, Any] | None = None,
) -> EagerStep | CompiledStep:
    """A clean stepper for ``net`` on steps like ``example_step`` (shape, dtype, device; its values only warm the
    compilation up): a ``CompiledStep`` when ``compile`` and compilation succeeds within ``timeout_s`` seconds,
    else an ``EagerStep`` (the reason logged and kept in ``stepper.reason``). Compilation runs on a copy of ``net``
    in a background thread; one that outlives ``timeout_s`` is abandoned (its result unused)."""
    if not compile:
        return EagerStep(net)
    result: dict[str, Any] = {}
    target = copy.deepcopy(net)

    def build() -> None:
        try:
            stepper = CompiledStep(target, example_step, backend=backend, options=options)
            for _ in range(stepper.phases):  # a backend other than inductor compiles on the first call of a phase
                stepper(example_step)
            stepper.clean_state()
            result["stepper"] = stepper
        except Exception as error:  # any compiler failure: step eagerly, say why
            result["error"] = error

    start = time.perf_counter()
    worker = threading.Thread(target=build, name=f"compile-{type(net).__name__}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if "stepper" in result:
        log.info(f"{type(net).__name__}: steady-state step compiled ({backend}) in {time.perf_counter() - start:.1f} s")
        return result["stepper"]
    if "error" in result:
        reason = f"compilation failed: {type(result['error']).__name__}: {result['error']}"
    else:
        reason = f"compilation did not finish within timeout_s={timeout_s:g} s"
    log.warning(f"{type(net).__name__}: {reason}; stepping eagerly")
    net.clean_state()
    return EagerStep(net, reason)
