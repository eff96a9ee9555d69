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

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx

from .base import StatefulModule, state_slots, stateful_leaves

__all__ = [
    "CompiledStep",
    "CudaGraphCall",
    "CudaGraphStep",
    "compile_graph",
    "cycle_counters",
    "steady_period",
    "warm_to_cycle",
    "warm_until_output",
]


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


def cycle_counters(net: nn.Module) -> tuple[int, ...]:
    """The host step counters that decide what a step computes. A recycling positional encoding's counter is left
    out: its steps read the device index (a state tensor); the int only serves clips and cycles with the table."""
    from .positional import RecyclingPositionalEncoding

    leaves = (m for m in stateful_leaves(net) if isinstance(m, StatefulModule))
    return tuple(m._t for m in leaves if not isinstance(m, RecyclingPositionalEncoding))


def steady_period(net: nn.Module) -> int:
    """Steps after which a warmed-up step repeats: the temporal stride, and the landmark refresh cycle of a
    continual Nyström attention."""
    from .nystrom import ContinualNystromAttention

    period = int(net.stride[0])
    for m in stateful_leaves(net):
        if isinstance(m, ContinualNystromAttention):
            period = math.lcm(period, m.num_landmarks * m.refresh_period)
    return period


def warm_to_cycle(net: nn.Module, step: Tensor, period: int, error: type[Exception] = RuntimeError) -> int:
    """Start a fresh stream in ``net`` and feed ``step`` until the net has emitted and its step counters repeat
    every ``period`` steps; returns the number of steps fed (``error`` is raised where that does not happen)."""
    net.clean_state()
    try:
        fed = warm_until_output(net, step)
    except RuntimeError as err:
        raise error(str(err)) from None
    history = [cycle_counters(net)]
    limit = fed + int(net.receptive_field) + 2 * period
    while len(history) <= period or history[-1] != history[-1 - period]:
        if fed >= limit:
            raise error(f"{type(net).__name__}'s step counters did not settle into a cycle within {fed} steps")
        net.forward_step(step)
        fed += 1
        history.append(cycle_counters(net))
    return fed


def compile_graph(
    graph: torch.fx.GraphModule, example_inputs: list[Tensor], backend: str, options: dict[str, Any] | None = None
) -> Callable[..., Any]:
    """A graph traced to aten ops (``make_fx``) compiled with ``backend``: ``"eager"`` returns it as it is,
    ``"inductor"`` hands it to inductor directly (``torch._inductor.compile``; ``options`` are config patches),
    any other name goes through ``torch.compile``. Straight to inductor because the graph is already aten ops, and
    torch.compile's guards over every weight and state tensor cost ~0.5 ms per CoX3D-S step on 2 CPU cores (~4 %),
    and recompile once a profiler is on."""
    if backend == "eager":
        return graph
    if backend == "inductor":
        from torch._inductor import compile as inductor_compile

        return inductor_compile(graph, example_inputs, options=options)
    return torch.compile(graph, backend=backend, dynamic=False, fullgraph=True, options=options)


class CudaGraphCall:
    """``CudaGraphCall(fn, example)``: any one-tensor call (a clip model, a compiled clip model) recorded as a CUDA
    graph after ``warmup`` real calls on a side stream (kernel choice, compilation and workspace allocation happen
    there, as capture requires); calling it copies the input into the static input buffer, replays the graph and
    returns the static output (overwritten by the next call: clone it to keep). ``fn`` must not synchronise with the
    host. ``CudaGraphStep`` records a net's step with it; a clip model gets the same treatment, so that the two
    compare fairly."""

    def __init__(self, fn: Callable[[Tensor], Any], example: Tensor, warmup: int = 3) -> None:
        if example.device.type != "cuda":
            raise ValueError("CudaGraphCall needs the example input on a CUDA device")
        self.static_in = example.clone()
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn(self.static_in)
        torch.cuda.current_stream(example.device).wait_stream(side)
        torch.cuda.synchronize(example.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = fn(self.static_in)

    def __call__(self, x: Tensor) -> Any:
        self.static_in.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.static_out


class CudaGraphStep(CudaGraphCall):
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
            # Fill the window eagerly (capture records kernels without running them); the `warmup_steps` more steps
            # that choose kernels run as CudaGraphCall's warm-up.
            warm_until_output(net, first_step)
            super().__init__(net.forward_step, first_step, warmup=warmup_steps)


class CompiledStep:
    """``CompiledStep(net, first_step)`` warms a fresh stream in ``net`` up on ``first_step`` (until it emits and
    its step counters cycle, plus ``warmup_steps`` rounded up to whole cycles), traces the next ``phases`` steps
    (the cycle after which the step repeats: the temporal stride, and a Nyström attention's landmark refresh;
    at most ``max_phases``), one program per phase ``step -> output``, and compiles them. Calling it with
    a step returns the next output (a new tensor) or None on a step that does not emit, exactly as
    ``net.forward_step`` would; the stream goes on from the warm-up (``clean_state()`` starts a new one).

    The programs read and update fixed state buffers in place (the tensors of ``co.state_slots(net)`` that a
    warmed-up stream holds); starting, restarting or restoring a stream copies values into those buffers, so one
    compiled program serves any number of streams:

    * ``clean_state()`` starts a new stream: its first ``net.delay + 1`` steps (the warm-up, where every layer
      fills its window) run eagerly on ``net``, then its state is copied into the compiled program's buffers;
    * ``clean_state(rows=[i, ...])`` (temporal stride 1) restarts some streams of the batch only: each restarted
      row warms up eagerly on its own copy of ``net`` while the other rows go on compiled; until it emits, its row
      of the output is NaN (``ready`` tells which rows hold predictions);
    * ``get_state()`` / ``set_state()``: a snapshot of the streams (never changed by later steps) and its restore.

    None of these recompiles. ``backend="inductor"`` (default) hands the traced graphs to inductor directly
    (``torch._inductor.compile``, no dynamo guards), which generates fused kernels while the CompiledStep is built
    (tens of seconds for X3D-S on 2 CPU cores; cached by inductor across processes); ``"eager"`` replays the
    traced graph op by op (the same results, for checking); any other torch.compile backend works (compiled on
    the first call of each phase); ``options`` are inductor's config patches (or ``torch.compile``'s options).
    Requirements: eval mode; steps of the shape, dtype and device of ``first_step``; no autograd (the programs
    run without it). While it is in use, step the stream only through
    it: ``net.forward_step`` on the same net would desynchronise the two.

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
        max_phases: int = 16,
    ) -> None:
        if net.training:
            raise ValueError("CompiledStep needs net.eval(): training-mode layers cannot step")
        if cuda_graph and first_step.device.type != "cuda":
            raise ValueError("CompiledStep(cuda_graph=True) needs the step on a CUDA device")
        self.net, self.backend, self.options = net, backend, options
        self._row_streams: dict[int, tuple[nn.Module, int]] = {}  # row -> (its eager stream, steps fed)
        self._row_template: nn.Module | None = None
        self._period = steady_period(net)
        if self._period > max_phases:
            raise ValueError(
                f"{type(net).__name__}'s step repeats only every {self._period} steps (temporal stride and landmark "
                f"refresh cycle): that is {self._period} programs to compile, more than max_phases={max_phases}; "
                "step it eagerly or raise max_phases"
            )
        # Not in inference mode: the state must stay ordinary tensors that the programs may update in place.
        with torch.inference_mode(False), torch.no_grad():
            self.static_in = first_step.clone()  # one input tensor for every call: stable compile guards
            fed = warm_to_cycle(net, self.static_in, self._period)
            extra = -(-(fed + warmup_steps) // self._period) * self._period - fed  # start on a whole cycle
            for _ in range(extra):
                net.forward_step(self.static_in)
            self._warmup_length = fed + extra
            self._cycle = cycle_counters(net)  # phase 0: a new stream joins the programs where its counters match
            self._slots = [(m, n) for m, n in state_slots(net) if getattr(m, n) is not None]
            self._buffers = [getattr(m, n) for m, n in self._slots]
            self._counters = [(m, m.__dict__["_t"]) for m in stateful_leaves(net) if "_t" in m.__dict__]
            self._phases = [self._compile(self._trace()) for _ in range(self._period)]
            if cycle_counters(net) != self._cycle:
                raise ValueError(
                    f"{type(net).__name__}'s step counters do not repeat after {self._period} steps: a fixed set "
                    "of compiled programs cannot stand for its step; step it eagerly"
                )
            self._bind()
            if cuda_graph:
                self._phases = [self._capture(phase) for phase in self._phases]
        self._next, self._fed = 0, 0
        self._eager = False  # True while a new stream warms up on `net` (``_fed`` steps so far)

    compiled = True
    reason = "compiled"

    @property
    def delay(self) -> int:
        return int(self.net.delay)

    @property
    def stride(self) -> int:
        return int(self.net.stride[0])

    @property
    def warmup_length(self) -> int:
        """Steps the construction fed before tracing: the stream the programs go on from has seen this many."""
        return self._warmup_length

    @property
    def phases(self) -> int:
        """Compiled programs, one per step of the cycle after which the step repeats."""
        return self._period

    @property
    def ready(self) -> Tensor:
        """Per batch row: whether the row's stream is past its warm-up (its outputs are predictions)."""
        rows = torch.full((self.static_in.shape[0],), not self._eager, dtype=torch.bool)
        rows[list(self._row_streams)] = False
        return rows

    # --- tracing ----------------------------------------------------------------------------------------------
    def _trace(self) -> torch.fx.GraphModule:
        """The next phase as a program ``(step,) -> output`` over the fixed state buffers, which the graph holds
        as constants and updates in place; tracing runs the step for real, so the buffers are restored after it
        (the stream does not advance) while the step counters advance to the following phase.

        Why constants and not program inputs: inductor keeps an in-place update of a constant in place (a window
        stays channels-last and the convolution reads it where it is), while an input mutated through views is
        functionalised into a fresh copy of the whole window per layer in the default layout plus a copy back:
        3.4x slower for CoX3D-S on 2 CPU cores (50.7 vs 14.8 ms per step). New streams, restarted rows and
        snapshots copy values into the same buffers, so one program still serves them all."""
        with self._buffers_kept():
            graph = make_fx(lambda step: self._step_in_buffers(step))(self.static_in)
        self._bind_state()
        return graph

    @contextlib.contextmanager
    def _buffers_kept(self) -> Iterator[None]:
        """Run a real step (a trace, a capture) without advancing the stream: the buffers' values are restored."""
        saved = [b.clone() for b in self._buffers]
        yield
        for buffer, value in zip(self._buffers, saved):
            buffer.copy_(value)

    def _step_in_buffers(self, step: Tensor) -> tuple[Tensor, ...]:
        self._bind_state()
        out = self.net.forward_step(step)
        for (module, name), buffer in zip(self._slots, self._buffers):
            new = module.__dict__[name]
            if new is not buffer:  # a layer replaced its state instead of writing it: write it into the buffer
                buffer.copy_(new)
        # A fresh output tensor: a net may return a view of its state, which the next step overwrites.
        return () if out is None else (out.clone(),)

    def _compile(self, graph: torch.fx.GraphModule) -> Callable[..., Any]:
        return compile_graph(graph, [self.static_in], self.backend, self.options)

    def _capture(self, phase: Callable[..., Any]) -> Callable[..., Any]:
        """``phase`` recorded as a CUDA graph over the fixed state buffers, after one real call (it compiles);
        the stream's state is restored afterwards, so capturing does not advance it."""
        with self._buffers_kept():
            phase(self.static_in)
            graph = torch.cuda.CUDAGraph()
            torch.cuda.synchronize(self.static_in.device)
            with torch.cuda.graph(graph):
                static_out = phase(self.static_in)

        def replay(_: Tensor) -> Any:
            graph.replay()
            return static_out

        return replay

    def _bind(self) -> None:
        """Point ``net``'s state at the compiled stream's buffers (so ``net`` shows the live state) and set its
        counters to the steady state."""
        self._bind_state()
        for module, t in self._counters:
            module.__dict__["_t"] = t

    def _bind_state(self) -> None:
        for (module, name), tensor in zip(self._slots, self._buffers):
            module.__dict__[name] = tensor

    # --- stepping ---------------------------------------------------------------------------------------------
    def __call__(self, step: Tensor) -> Tensor | None:
        if self._eager:
            return self._warm_step(step)
        self._check(step)
        with torch.inference_mode(False), torch.no_grad():  # as traced: no autograd, ordinary tensors
            self.static_in.copy_(step)
            out = self._phases[self._next](self.static_in)
        self._next = (self._next + 1) % len(self._phases)
        result = out[0] if out else None
        if self._row_streams:
            result = self._row_warm_steps(step, result)
        return result

    def _check(self, step: Tensor) -> None:
        ref = self.static_in
        if step.shape != ref.shape or step.dtype != ref.dtype or step.device != ref.device:
            raise ValueError(
                f"CompiledStep of {type(self.net).__name__} was compiled for steps {tuple(ref.shape)} {ref.dtype} on "
                f"{ref.device}, got {tuple(step.shape)} {step.dtype} on {step.device}: build another CompiledStep "
                "for another batch size or step shape (or pad the batch)"
            )

    def _warm_step(self, step: Tensor) -> Tensor | None:
        """A step of a new stream's warm-up, eager on ``net``; once every state tensor exists and the step
        emitted, the state moves into the compiled buffers."""
        self._check(step)
        with torch.inference_mode(False), torch.no_grad():
            out = self.net.forward_step(step)
            self._fed += 1
            if self._joins(self.net, self._slots, self._fed):
                for (module, name), buffer in zip(self._slots, self._buffers):
                    buffer.copy_(getattr(module, name))
                self._bind()
                self._next, self._eager = 0, False
        return out

    def _joins(self, stream: nn.Module, slots: list[tuple[nn.Module, str]], fed: int) -> bool:
        """Whether a warming-up stream may go on in the compiled programs: it has emitted (every state tensor
        exists) and its counters are at the start of the traced cycle. Past the traced warm-up's length it never
        will: that is a bug, not a slow stream."""
        if fed < int(stream.delay) + 1 or any(getattr(m, n) is None for m, n in slots):
            return False
        if cycle_counters(stream) == self._cycle:
            return True
        if fed > self._warmup_length + self._period:
            raise RuntimeError(
                f"a new stream of {type(stream).__name__} did not reach the compiled cycle's step counters "
                f"{self._cycle} within {fed} steps"
            )
        return False

    def _row_warm_steps(self, step: Tensor, out: Tensor | None) -> Tensor | None:
        """Step each restarted row on its own eager copy of ``net``; splice its state into the batch once it
        emits (that output is the row's), NaN in its output row before."""
        out = None if out is None else out.clone()
        with torch.inference_mode(False), torch.no_grad():
            for row, (stream, fed) in list(self._row_streams.items()):
                emitted = stream.forward_step(step[row : row + 1])
                if out is not None:
                    out[row] = emitted[0] if emitted is not None else float("nan")
                slots = self._matching_slots(stream)
                if emitted is not None and self._joins(stream, slots, fed + 1):
                    self._splice(row, slots)
                    del self._row_streams[row]
                else:
                    self._row_streams[row] = (stream, fed + 1)
        return out

    def _splice(self, row: int, slots: list[tuple[nn.Module, str]]) -> None:
        """Row ``row`` of every compiled state buffer from a one-row stream's state (``slots``)."""
        for buffer, (module, name) in zip(self._buffers, slots):
            value = getattr(module, name)
            dims = [d for d in range(buffer.dim()) if buffer.shape[d] != value.shape[d]]
            if len(dims) != 1 or value.shape[dims[0]] != 1:
                raise RuntimeError(f"cannot find the batch dim of state {name} {tuple(buffer.shape)} of {module!r:.80}")
            buffer.narrow(dims[0], row, 1).copy_(value)

    def _matching_slots(self, stream: nn.Module) -> list[tuple[nn.Module, str]]:
        """``stream``'s state slots in the order of the compiled ones (``stream`` is a copy of ``net``)."""
        index = {id(m): i for i, m in enumerate(stateful_leaves(self.net))}
        theirs = stateful_leaves(stream)
        return [(theirs[index[id(m)]], n) for m, n in self._slots]

    # --- streams ----------------------------------------------------------------------------------------------
    def clean_state(self, rows: Sequence[int] | None = None) -> None:
        """Start new streams: all of them (``rows=None``), or only the given batch rows (temporal stride 1)."""
        if rows is None:
            self._row_streams.clear()
            self.net.clean_state()
            self._eager, self._fed = True, 0
            return
        if self._period != 1:
            raise ValueError(
                f"CompiledStep.clean_state(rows=...) needs a step that repeats every step (this one repeats every "
                f"{self._period}: temporal stride or landmark refresh): a restarted row would run out of phase with "
                "the others; restart the whole batch with clean_state()"
            )
        if self._eager:
            raise ValueError("clean_state(rows=...) while the whole batch warms up: its rows start fresh anyway")
        batch = self.static_in.shape[0]
        for row in rows:
            if not 0 <= row < batch:
                raise ValueError(f"row {row} is not a row of the batch of {batch} streams")
            if self._row_template is None:
                self._row_template = copy.deepcopy(self.net)
            stream = copy.deepcopy(self._row_template)
            stream.clean_state()
            self._row_streams[row] = (stream, 0)

    def get_state(self) -> dict[str, Any]:
        """A snapshot of every stream (restore it with ``set_state``; later steps do not change it)."""
        if self._eager:
            return {"eager": self.net.get_state(), "fed": self._fed}
        rows = {r: (s.get_state(), fed) for r, (s, fed) in self._row_streams.items()}
        return {"buffers": [b.clone() for b in self._buffers], "phase": self._next, "rows": rows}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot taken with ``get_state`` of this CompiledStep (or of one of the same net)."""
        if not isinstance(state, dict) or not ({"eager"} <= state.keys() or {"buffers", "phase"} <= state.keys()):
            raise ValueError("CompiledStep.set_state expects a snapshot from CompiledStep.get_state()")
        self._row_streams.clear()
        if "eager" in state:
            self.net.set_state(state["eager"])
            self._eager, self._fed = True, int(state.get("fed", 0))
            return
        if len(state["buffers"]) != len(self._buffers) or any(
            a.shape != b.shape for a, b in zip(state["buffers"], self._buffers)
        ):
            raise ValueError("CompiledStep.set_state: the snapshot holds the state of another net or batch size")
        for buffer, value in zip(self._buffers, state["buffers"]):
            buffer.copy_(value)
        self._bind()
        self._next, self._eager = int(state["phase"]), False
        for row, (row_state, fed) in state.get("rows", {}).items():
            stream = copy.deepcopy(self._row_template or self.net)
            stream.set_state(row_state)
            self._row_streams[row] = (stream, fed)
