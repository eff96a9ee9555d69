"""Replay a warmed-up continual step as a CUDA graph, or as one compiled program (any device).

A step is a chain of small kernels; launching them one by one from Python bounds a single stream's frame rate by
launch overhead, not arithmetic. Because the core writes its state in place and keeps step counters on the host,
a step taken once the window is full does the same thing at every step (or every ``stride`` steps): it can be
captured once and replayed.

* ``CudaGraphStep``: each replay reads the new frame from a static input buffer, updates the state tensors where
  they are, and writes the output into a static buffer.
* ``CompiledStep``: the steady-state step is traced to an aten graph (``make_fx``; weights and state tensors are
  constants of the graph, the state updated in place) and compiled, by default with inductor, which fuses the
  elementwise work between convolutions and matrix products and runs the step as one generated program: on CPU
  that removes most of a step's per-operator cost (about 40 % of a CoX3D-S step on 2 cores).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx

__all__ = ["CompiledStep", "CudaGraphStep", "warm_until_output"]


def warm_until_output(net: nn.Module, step: Tensor, extra_steps: int = 0) -> int:
    """Feed ``step`` until the net emits (``net.delay + 1`` steps from a clean state), then ``extra_steps`` more;
    returns the number of steps fed."""
    fed, out = 0, None
    while out is None:
        if fed > net.delay:
            raise RuntimeError(f"{type(net).__name__} emitted nothing after net.delay + 1 = {fed} steps")
        out = net.forward_step(step)
        fed += 1
    for _ in range(extra_steps):
        net.forward_step(step)
    return fed + extra_steps


class CudaGraphStep:
    """``CudaGraphStep(net, first_step)`` captures ``net.forward_step`` after stepping ``first_step`` through it
    until it emits; calling it with a step returns the next output (a view of a static buffer: clone it to keep).

    Requirements: CUDA, eval mode, no autograd, and a net whose temporal stride is 1 (with stride ``s`` only one
    step in ``s`` emits, so a single captured step cannot stand for all of them).
    """

    def __init__(self, net: nn.Module, first_step: Tensor, warmup_steps: int = 3) -> None:
        if first_step.device.type != "cuda":
            raise ValueError("CudaGraphStep needs the step on a CUDA device")
        if net.stride[0] != 1:
            raise ValueError(f"CudaGraphStep needs temporal stride 1, the net has {net.stride[0]}")
        if net.training:
            raise ValueError("CudaGraphStep needs net.eval(): training-mode layers cannot step")
        self.net = net
        with torch.no_grad():
            # Fill the window (and choose kernels) eagerly: capture records kernels without running them.
            warm_until_output(net, first_step, warmup_steps)
            self.static_in = first_step.clone()
            self.graph = torch.cuda.CUDAGraph()
            torch.cuda.synchronize(first_step.device)
            with torch.cuda.graph(self.graph):
                self.static_out = net.forward_step(self.static_in)

    def __call__(self, step: Tensor) -> Tensor:
        self.static_in.copy_(step, non_blocking=True)
        self.graph.replay()
        return self.static_out


class CompiledStep:
    """``CompiledStep(net, first_step)`` starts a fresh stream in ``net``, steps ``first_step`` through it until it
    emits (plus ``warmup_steps``), then traces the next ``net.stride[0]`` steps, one graph per phase, and compiles
    them with ``torch.compile(backend=backend)``. Calling it with a step runs the next phase's program and returns
    its output (a new tensor) or None on a step that does not emit.

    ``backend="inductor"`` (default) generates fused kernels: the first call of each phase compiles (tens of
    seconds for X3D-S on 2 CPU cores; cached by inductor across processes); ``"eager"`` replays the traced graph
    op by op (no compilation; the same results, for checking); any other torch.compile backend name works.
    ``options`` go to ``torch.compile`` (inductor settings, e.g. ``{"cpp_wrapper": True}``).

    The compiled programs hold ``net``'s state tensors: while it is in use, step the stream only through it
    (``net.forward_step``, ``clean_state`` or ``set_state`` would desynchronise the two); for a new stream build a
    new ``CompiledStep`` (the same net traces to the same program, which inductor loads from its cache: 7-12 s
    for CoX3D-S on 2 CPU cores, warm-up and tracing included). Requirements: eval mode; steps are taken without
    autograd.

    ``cuda_graph=True`` (CUDA) also records each compiled phase as a CUDA graph, so a step is one graph launch of
    the fused kernels; the output is then a static buffer that the next call of that phase overwrites.
    """

    def __init__(
        self,
        net: nn.Module,
        first_step: Tensor,
        backend: str = "inductor",
        warmup_steps: int = 3,
        cuda_graph: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        if net.training:
            raise ValueError("CompiledStep needs net.eval(): training-mode layers cannot step")
        if cuda_graph and first_step.device.type != "cuda":
            raise ValueError("CompiledStep(cuda_graph=True) needs the step on a CUDA device")
        self.net = net
        self.backend = backend
        self.options = options
        # Not in inference mode: the state must stay ordinary tensors that the programs may update in place.
        with torch.inference_mode(False), torch.no_grad():
            self.static_in = first_step.clone()  # one input tensor for every call: stable compile guards
            net.clean_state()
            warm_until_output(net, self.static_in, warmup_steps)
            self._phases = [
                self._compile(make_fx(lambda x: self._traced(x))(self.static_in)) for _ in range(self._period)
            ]
            if cuda_graph:
                self._phases = [self._capture(phase) for phase in self._phases]
        self._next = 0

    @property
    def _period(self) -> int:
        return int(self.net.stride[0])

    def _capture(self, phase: Callable[[Tensor], Any]) -> Callable[[Tensor], Any]:
        """``phase`` recorded as a CUDA graph, after one real call (it compiles and steps the stream once, so the
        phases, captured in order, stay in turn)."""
        phase(self.static_in)
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.static_in.device)
        with torch.cuda.graph(graph):
            static_out = phase(self.static_in)

        def replay(_: Tensor) -> Any:
            graph.replay()
            return static_out

        return replay

    def _traced(self, step: Tensor) -> tuple[Tensor, ...]:
        out = self.net.forward_step(step)
        # A fresh output tensor: a net may return a view of its state, which the next step overwrites.
        return () if out is None else (out.clone(),)

    def _compile(self, graph: torch.fx.GraphModule) -> Callable[[Tensor], Any]:
        if self.backend == "eager":
            return graph
        return torch.compile(graph, backend=self.backend, dynamic=False, fullgraph=True, options=self.options)

    def __call__(self, step: Tensor) -> Tensor | None:
        with torch.inference_mode(False), torch.no_grad():  # as traced: no autograd, ordinary tensors
            self.static_in.copy_(step)
            out = self._phases[self._next](self.static_in)
        self._next = (self._next + 1) % len(self._phases)
        return out[0] if out else None
