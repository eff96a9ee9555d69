"""Export a warmed-up continual step as a pure function and run it outside PyTorch (onnxruntime).

Once a continual net's window is full, a step does the same computation at every step, or, with temporal stride
``s``, the same ``s`` computations in turn (only every ``s``-th step emits). ``export`` warms a net up on a fresh
stream eagerly, then traces each of these steady-state steps as a pure function of explicit tensors::

    (step, *state) -> (output, *next_state)      # a step that emits
    (step, *state) -> (*next_state,)             # a step that does not (stride > 1): no output at all

``state`` is every state tensor of the net after warm-up, in ``get_state`` order, each named by its module path
(a part kept outside the module tree, such as the delay that aligns parallel branches, as ``<container>.~<i>``);
``next_state`` holds the ones the step changes. The Python step counters are fixed at their steady-state values,
one program per phase. The programs are
``torch.export`` programs (``format="torch_export"``) or ONNX models from the dynamo exporter (``format="onnx"``);
``OnnxStepRunner`` steps a stream through onnxruntime with the state fed back, ``TorchExportRunner`` through the
exported programs in PyTorch. Shapes are fixed: the batch size and step shape of ``first_step``.

The programs cover the steady state only: the warm-up of a stream (its first ``warmup_length`` steps) runs
eagerly on the net (``runner.warm_up(net, clip)``), or a runner starts from the exported warmed-up state.

The public ``continual-inference`` library exports ``_forward_step`` through TorchScript with tensor-valued
counters; on torch 2.x its ONNX path fails (the dynamo exporter is the default). Here the counters stay on the host
and the exporter sees a plain tensor program per phase.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .base import CoModule, StatefulModule, out_of_place
from .replay import cycle_counters, steady_period, warm_to_cycle

if TYPE_CHECKING:  # numpy is imported where arrays are made: the core imports torch only
    import numpy as np

__all__ = ["ExportError", "ExportedStep", "OnnxStepRunner", "TorchExportRunner", "export"]

FORMATS = ("onnx", "torch_export")
_META_KEY = "continual_step"  # ONNX metadata_props key / torch.export.save extra file holding the facts below

Slot = tuple[nn.Module, str]


class ExportError(RuntimeError):
    """A net's steady-state step cannot be exported (the message names the net, the failing op and the fix)."""


@dataclass
class ExportedStep:
    """The exported steady-state step of a continual net.

    ``programs[i]`` is phase ``i``: the ``i``-th step after ``initial_state`` (then every ``len(programs)`` steps).
    Its inputs are ``input_names`` (``"step"``, then ``"state_<j>"``); its outputs ``output_names[i]``: ``"output"``
    first where ``emits[i]``, then ``"next_state_<j>"`` for each state ``j`` that the phase changes (the others go
    on as they were). ``state_names[j]`` says which module attribute state ``j`` is (``"s1.conv._buf"``).
    ``initial_state`` is the warmed-up state, reached after ``warmup_length`` steps of a fresh stream; ``delay`` and
    ``stride`` are the net's. ``metadata``: ``net`` (class name), ``step_shape``, ``dtype``. ``paths``: the files
    written by ``save`` (``export(..., path=...)``).
    """

    format: str
    programs: list[Any]
    emits: tuple[bool, ...]
    initial_state: tuple[Tensor, ...]
    state_names: tuple[str, ...]
    input_names: tuple[str, ...]
    output_names: tuple[tuple[str, ...], ...]
    delay: int
    stride: int
    warmup_length: int
    metadata: dict[str, Any]
    paths: tuple[str, ...] = field(default=())

    @property
    def phases(self) -> int:
        return len(self.programs)

    @property
    def net_name(self) -> str:
        return str(self.metadata["net"])

    @property
    def step_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["step_shape"])

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, str(self.metadata["dtype"]).removeprefix("torch."))

    def facts(self) -> dict[str, Any]:
        """Everything but the programs and the state tensors, JSON-ready (stored beside saved programs)."""
        return {
            "format": self.format,
            "emits": list(self.emits),
            "state_names": list(self.state_names),
            "state_shapes": [list(s.shape) for s in self.initial_state],
            "input_names": list(self.input_names),
            "output_names": [list(n) for n in self.output_names],
            "delay": self.delay,
            "stride": self.stride,
            "warmup_length": self.warmup_length,
            "metadata": self.metadata,
        }

    def state_from(self, net: nn.Module) -> tuple[Tensor, ...]:
        """``net``'s current state as this program's state inputs (clones), after checking that ``net`` has the
        same state tensors (names and shapes): use it to hand an eagerly warmed-up stream to a runner."""
        active = _active(_slots(net))
        names = tuple(name for name, _ in active)
        if names != self.state_names:
            missing = sorted(set(self.state_names) - set(names)) or sorted(set(names) - set(self.state_names))
            raise ValueError(
                f"the state of this {type(net).__name__} does not fit the step exported from a {self.net_name}: "
                f"state tensors {missing[:3]} differ ({len(names)} vs {len(self.state_names)} tensors). Hand over a "
                "net of the exported architecture, warmed up as long as the export (warmup_length="
                f"{self.warmup_length} steps)."
            )
        state = tuple(getattr(m, n).detach().clone() for _, (m, n) in active)
        _check_state(self, state, "state_from")
        return state

    def save(self, path: str | Path) -> tuple[str, ...]:
        """Write the programs (``path`` is phase 0; phase ``i > 0`` goes to ``<stem>.phase<i><suffix>``) and the
        warmed-up state (``<stem>.state.npz``); returns the paths written. ``ExportedStep.load(path)`` reads them."""
        path = Path(path)
        files = _phase_paths(path, self.phases)
        facts = json.dumps(self.facts())
        for program, file in zip(self.programs, files):
            if self.format == "onnx":
                import onnx

                onnx.helper.set_model_props(program, {_META_KEY: facts})
                onnx.save_model(program, str(file))
            else:
                torch.export.save(program, str(file), extra_files={_META_KEY: facts})
        state_file = _state_path(path)
        import numpy as np

        np.savez(state_file, *(s.detach().cpu().numpy() for s in self.initial_state))
        self.paths = (*map(str, files), str(state_file))
        return self.paths

    @classmethod
    def load(cls, path: str | Path) -> ExportedStep:
        """Read an exported step written by ``save`` (or ``export(..., path=...)``): ``path`` is its phase-0 file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no exported step at {path}: pass the file written by co.export(..., path=...)")
        if path.suffix == ".onnx":
            import onnx

            first = onnx.load_model(str(path))
            facts = json.loads(_onnx_props(first).get(_META_KEY, "null") or "null")
            load: Callable[[Path], Any] = lambda p: onnx.load_model(str(p))  # noqa: E731
        else:
            extra = {_META_KEY: ""}
            first = torch.export.load(str(path), extra_files=extra)
            facts = json.loads(extra[_META_KEY] or "null")
            load = lambda p: torch.export.load(str(p))  # noqa: E731
        if not isinstance(facts, dict):
            raise ValueError(f"{path} is not a step written by co.export: it carries no {_META_KEY!r} facts")
        files = _phase_paths(path, len(facts["emits"]))
        programs = [first, *(load(p) for p in files[1:])]
        import numpy as np

        with np.load(_state_path(path)) as arrays:
            state = tuple(torch.from_numpy(arrays[f"arr_{j}"]) for j in range(len(facts["state_names"])))
        return cls(
            format=facts["format"],
            programs=programs,
            emits=tuple(facts["emits"]),
            initial_state=state,
            state_names=tuple(facts["state_names"]),
            input_names=tuple(facts["input_names"]),
            output_names=tuple(tuple(n) for n in facts["output_names"]),
            delay=facts["delay"],
            stride=facts["stride"],
            warmup_length=facts["warmup_length"],
            metadata=facts["metadata"],
            paths=(*map(str, files), str(_state_path(path))),
        )


def export(
    net: nn.Module,
    first_step: Tensor,
    format: str = "onnx",
    path: str | Path | None = None,
    warmup_steps: int = 0,
    max_phases: int = 32,
    onnx_options: dict[str, Any] | None = None,
) -> ExportedStep:
    """Export ``net``'s steady-state step (see the module docstring); returns an ``ExportedStep``.

    ``net`` (eval mode) starts a fresh stream and steps ``first_step`` (``(B, C, *spatial)``; its shape, dtype and
    batch size are fixed in the programs) until it emits and its step counters cycle, then ``warmup_steps`` more.
    Each phase is traced with ``torch.export.export``; ``format="onnx"`` converts it with the dynamo ONNX exporter
    (``torch.onnx.export(..., dynamo=True, **onnx_options)``, e.g. ``custom_translation_table``). ``path`` also
    writes the programs and the warmed-up state (``ExportedStep.save``). Afterwards ``net`` holds the exported
    warmed-up state, so stepping it eagerly continues in step with a runner started from that state.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if not isinstance(net, CoModule):
        raise TypeError(f"co.export needs a continual net (a CoModule), got {type(net).__name__}")
    if net.training:
        raise ValueError(f"co.export needs {type(net).__name__}.eval(): training-mode layers cannot step")
    period = steady_period(net)
    if period > max_phases:
        raise ExportError(
            f"{type(net).__name__}'s step repeats only every {period} steps ({period} programs): raise max_phases "
            "if that many programs are wanted"
        )
    with torch.inference_mode(False), torch.no_grad():
        step = first_step.detach().clone()
        fed = warm_to_cycle(net, step, period, ExportError) + _feed(net, step, warmup_steps)
        exported = _trace_phases(net, step, period, fed, format, onnx_options or {})
    if path is not None:
        exported.save(path)
    return exported


# --- tracing --------------------------------------------------------------------------------------------------------
class _PhaseStep(nn.Module):
    """One phase of ``net``'s steady-state step as a pure function ``(step, *state) -> (output?, *next_state)``.

    ``next_state`` holds only the state tensors that the phase changes (``updated``, their indices): a state the
    phase leaves as it is (e.g. the layers after a strided conv on a step it skips) is not an output, which would
    merely alias an input (and the ONNX exporter would rename that input after the output).
    """

    def __init__(
        self,
        net: nn.Module,
        slots: list[tuple[str, Slot]],
        idle: list[tuple[str, Slot]],
        counters: list[tuple[StatefulModule, int]],
    ) -> None:
        super().__init__()
        self.net = net
        self._slots, self._idle, self._counters = [s for _, s in slots], idle, counters
        # Set by a first, eager call; tracing (which may run on a copy of this module) then returns these.
        self.updated: list[int] | None = None
        self.emitted: bool | None = None

    def forward(self, step: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        for (module, name), value in zip(self._slots, state):
            setattr(module, name, value)
        for module, count in self._counters:  # the phase's host counters, whatever tracing did before
            module.__dict__["_t"] = count
        with out_of_place():
            out = self.net.forward_step(step)
        appeared = [name for name, (m, n) in self._idle if getattr(m, n) is not None]
        if appeared:
            raise ExportError(
                f"{type(self.net).__name__}: state {appeared[:3]} appeared after warm-up: the window is not full "
                "yet; export with more warmup_steps"
            )
        new = [getattr(module, name) for module, name in self._slots]
        updated = [j for j, (old, value) in enumerate(zip(state, new)) if value is not old]
        if self.updated is None:
            self.updated, self.emitted = updated, out is not None
        elif updated != self.updated or (out is not None) != self.emitted:
            raise ExportError(f"{type(self.net).__name__}: the traced step and the eager step update different state")
        next_state = tuple(new[j] for j in self.updated)
        if out is None:
            return next_state
        if not isinstance(out, Tensor):
            raise ExportError(
                f"{type(self.net).__name__}.forward_step returns a {type(out).__name__}; co.export supports nets "
                "whose step output is one tensor: wrap the net so that it returns one"
            )
        # A new tensor: a net may return a view of its state, and programs should not alias their outputs.
        return (out.clone(), *next_state)


def _trace_phases(
    net: nn.Module, step: Tensor, period: int, fed: int, fmt: str, onnx_options: dict[str, Any]
) -> ExportedStep:
    slots_all = _slots(net)
    slots = _active(slots_all)
    idle = [s for s in slots_all if s not in slots]
    names = tuple(name for name, _ in slots)
    start = net.get_state()
    initial = tuple(getattr(m, n).detach().clone() for _, (m, n) in slots)
    cycle0 = cycle_counters(net)
    programs, emits, outputs = [], [], []
    input_names = ("step", *(f"state_{j}" for j in range(len(slots))))
    for phase in range(period):
        saved = net.get_state()
        wrapper = _PhaseStep(net, slots, idle, _counters(net))
        wrapper(step, *(getattr(m, n) for _, (m, n) in slots))  # eagerly: what the phase updates and emits
        after = net.get_state()  # the next phase's state
        net.set_state(saved)
        program = _torch_export(wrapper, (step, *(getattr(m, n) for _, (m, n) in slots)), net, phase)
        net.set_state(after)
        emitted = bool(wrapper.emitted)
        output_names = (*(["output"] if emitted else []), *(f"next_state_{j}" for j in wrapper.updated or ()))
        if fmt == "onnx":
            program = _onnx_export(program, input_names, output_names, net, phase, onnx_options)
        programs.append(program)
        emits.append(emitted)
        outputs.append(output_names)
    if cycle_counters(net) != cycle0:
        raise ExportError(
            f"{type(net).__name__}'s step counters do not repeat after {period} steps: its step is not periodic "
            "in the temporal stride, so a fixed set of programs cannot stand for it"
        )
    net.set_state(start)
    return ExportedStep(
        format=fmt,
        programs=programs,
        emits=tuple(emits),
        initial_state=initial,
        state_names=names,
        input_names=input_names,
        output_names=tuple(outputs),
        delay=int(net.delay),
        stride=int(net.stride[0]),
        warmup_length=fed,
        metadata={"net": type(net).__name__, "step_shape": list(step.shape), "dtype": str(step.dtype)},
    )


def _torch_export(wrapper: nn.Module, args: tuple[Tensor, ...], net: nn.Module, phase: int) -> Any:
    try:
        with warnings.catch_warnings():
            # The state is handed in and out explicitly; torch.export warns that the step assigns tensor attributes.
            warnings.filterwarnings("ignore", message="The tensor attributes? .* assigned during export")
            return torch.export.export(wrapper, args, strict=False)
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(_failure(net, "torch.export", phase, err)) from err


def _onnx_export(
    program: Any,
    input_names: Sequence[str],
    output_names: Sequence[str],
    net: nn.Module,
    phase: int,
    options: dict[str, Any],
) -> Any:
    # the exporter's graph passes log every rewrite at INFO (hundreds of lines for CoX3D-S): keep them out of runs' logs
    for name in ("onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
    try:
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            verbose=False,
            **{"optimize": True, **options},
        )
    except Exception as err:
        raise ExportError(_failure(net, "the ONNX exporter", phase, err)) from err
    return onnx_program.model_proto


def _failure(net: nn.Module, exporter: str, phase: int, err: Exception) -> str:
    text = str(err)
    ops = re.findall(r"aten[.:]{1,2}[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?", text)
    if "data-dependent" in text or "data dependent" in text:
        op = "a tensor value read on the host (.item(), float(), int() or bool() of a tensor)"
    else:
        op = ops[0] if ops else type(err).__name__
    where = _user_frame(err)
    first = text.strip().splitlines()[0][:300] if text.strip() else type(err).__name__
    return (
        f"{exporter} failed on {type(net).__name__}'s step (phase {phase}) at {op}"
        f"{f', called from {where}' if where else ''} ({type(err).__name__}: {first}). Replace that op by "
        "exportable ones; for ONNX, map it with onnx_options={'custom_translation_table': {...}} or use "
        "format='torch_export'; or step the net eagerly or with co.CompiledStep"
    )


def _user_frame(err: BaseException) -> str | None:
    """The innermost frame of the failing step outside torch and this file (the layer that called the op)."""
    torch_dir = str(Path(torch.__file__).parent)
    found = None
    seen: set[int] = set()
    chain: BaseException | None = err
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        tb = chain.__traceback__
        while tb is not None:
            file = tb.tb_frame.f_code.co_filename
            if not file.startswith(torch_dir) and file != __file__ and "site-packages" not in file:
                found = f"{Path(file).name}:{tb.tb_lineno} ({tb.tb_frame.f_code.co_name})"
            tb = tb.tb_next
        chain = chain.__cause__ or chain.__context__
    return found


# --- warm-up and the host counters ----------------------------------------------------------------------------------
def _feed(net: nn.Module, step: Tensor, count: int) -> int:
    for _ in range(count):
        net.forward_step(step)
    return count


# --- state slots ----------------------------------------------------------------------------------------------------
def _state_tree(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every module holding a part of ``net``'s stream state, each once, with its path, in ``get_state`` order.

    Walks the state tree, not the module tree: a container's ``_stateful()`` may hold parts kept out of
    ``modules()`` (the delays that align parallel branches); such a part is named ``<container>.~<i>``, ``i`` its
    index in ``_stateful()``.
    """
    seen: dict[int, tuple[str, nn.Module]] = {}

    def walk(path: str, module: nn.Module) -> None:
        if id(module) in seen:
            return
        seen[id(module)] = (path, module)
        if isinstance(module, StatefulModule):
            return
        names = {id(c): n for n, c in module.named_children()}
        stateful = getattr(module, "_stateful", None)
        children = stateful() if callable(stateful) else list(module.children())
        for i, child in enumerate(children):
            name = names.get(id(child), f"~{i}")
            walk(f"{path}.{name}" if path else name, child)

    walk("", net)
    return list(seen.values())


def _slots(net: nn.Module) -> list[tuple[str, Slot]]:
    """``(name, (module, attribute))`` of every state attribute: a ``StatefulModule``'s ``_state_names``, and the
    tensors other continual modules keep between steps (a retroactive transformer layer's window of inputs)."""
    slots = []
    for path, m in _state_tree(net):
        if isinstance(m, StatefulModule):
            names: Sequence[str] = m._state_names
        elif isinstance(m, CoModule):
            names = [k for k, v in vars(m).items() if isinstance(v, Tensor)]
        else:
            continue
        slots += [(f"{path}.{n}" if path else n, (m, n)) for n in names]
    return slots


def _active(slots: list[tuple[str, Slot]]) -> list[tuple[str, Slot]]:
    return [(name, (m, n)) for name, (m, n) in slots if isinstance(getattr(m, n), Tensor)]


def _counters(net: nn.Module) -> list[tuple[StatefulModule, int]]:
    return [(m, m._t) for _, m in _state_tree(net) if isinstance(m, StatefulModule)]


def _check_state(exported: ExportedStep, state: Sequence[Any], where: str) -> None:
    """Raise unless ``state`` has the exported state's count, shapes and dtypes."""
    want = exported.initial_state
    if len(state) != len(want):
        raise ValueError(
            f"{where}: the step exported from a {exported.net_name} keeps {len(want)} state tensors, got "
            f"{len(state)}: pass a state of this exported net (get_state(), state_from(net) or initial_state)"
        )
    for name, have, ref in zip(exported.state_names, state, want):
        shape, dtype = tuple(have.shape), str(have.dtype).removeprefix("torch.")
        if shape != tuple(ref.shape) or dtype != str(ref.dtype).removeprefix("torch."):
            raise ValueError(
                f"{where}: state {name} is {shape} {dtype}, but the step exported from a {exported.net_name} keeps "
                f"{tuple(ref.shape)} {ref.dtype}: the state comes from another net or batch size"
            )


def _phase_paths(path: Path, phases: int) -> list[Path]:
    return [path, *(path.with_name(f"{path.stem}.phase{i}{path.suffix}") for i in range(1, phases))]


def _state_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.state.npz")


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype


def _onnx_props(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


# --- runners --------------------------------------------------------------------------------------------------------
class _StepRunner:
    """Steps a stream through the exported phases, feeding the state back; see ``OnnxStepRunner``."""

    _where = "runner"

    def __init__(self, exported: ExportedStep | str | Path, initial_state: Sequence[Any] | None = None) -> None:
        self.exported = exported if isinstance(exported, ExportedStep) else ExportedStep.load(exported)
        self._initial = self._as_state(self.exported.initial_state if initial_state is None else initial_state)
        prefix = "next_state_"
        self._updates = [
            [int(n[len(prefix) :]) for n in names if n.startswith(prefix)] for names in self.exported.output_names
        ]
        self.clean_state()

    @property
    def phase(self) -> int:
        """Which exported program the next step runs."""
        return self._phase

    def __call__(self, step: Tensor | np.ndarray) -> Tensor | None:
        """Feed one step ``(B, C, *spatial)``; the output of the newest complete window, or None (stride phases
        that do not emit)."""
        phase = self._phase
        outs = self._run(phase, self._check_step(step), self._state)
        emits = self.exported.emits[phase]
        state = list(self._state)
        for j, value in zip(self._updates[phase], outs[1:] if emits else outs):
            state[j] = value
        self._state = tuple(state)
        self._phase = (phase + 1) % self.exported.phases
        return self._to_tensor(outs[0]) if emits else None

    def get_state(self) -> tuple[Tensor, ...]:
        """The state tensors (copies) before the next step; the next phase is ``phase``."""
        return tuple(self._to_tensor(s).clone() for s in self._state)

    def set_state(self, state: Sequence[Tensor | np.ndarray], phase: int = 0) -> None:
        """Continue from ``state`` (``get_state()``, ``state_from(net)``), with program ``phase`` next."""
        if not 0 <= phase < self.exported.phases:
            raise ValueError(f"phase must be in 0..{self.exported.phases - 1}, got {phase}")
        self._state = self._as_state(state)
        self._phase = phase

    def clean_state(self) -> None:
        """Back to the exported warmed-up state (or the ``initial_state`` given), phase 0. This is not a fresh
        stream: the programs only compute the steady state. Start a new stream with ``warm_up(net, clip)``."""
        self._state, self._phase = self._initial, 0

    def warm_up(self, net: nn.Module, clip: Tensor) -> Tensor | None:
        """Start a new stream: step ``clip`` (``(B, C, T, *spatial)``, its first ``T >= warmup_length`` steps)
        eagerly through ``net`` from a clean state and continue from the net's state; returns the eager outputs
        stacked on dim 2 (None if there are none)."""
        count, need = clip.shape[2], self.exported.warmup_length
        if count < need:
            raise ValueError(
                f"warm_up needs at least warmup_length={need} steps of the new stream to fill the windows of the "
                f"exported {self.exported.net_name}, got a clip of {count}"
            )
        with torch.no_grad():
            net.clean_state()
            outs = [y for t in range(count) if (y := net.forward_step(clip[:, :, t])) is not None]
            self.set_state(self.exported.state_from(net), (count - need) % self.exported.phases)
        return torch.stack(outs, 2) if outs else None

    # --- checks and conversions --------------------------------------------------------------------------------
    def _check_step(self, step: Any) -> Any:
        shape, dtype = self.exported.step_shape, self.exported.dtype
        have_dtype = str(step.dtype).removeprefix("torch.")
        if tuple(step.shape) != shape or have_dtype != str(dtype).removeprefix("torch."):
            raise ValueError(
                f"{self._where} of the step exported from a {self.exported.net_name} expects steps {shape} "
                f"{dtype}, got {tuple(step.shape)} {step.dtype}: the programs have a fixed batch size and step "
                "shape; export again with a first_step of the new shape"
            )
        return self._convert(step, dtype)

    def _as_state(self, state: Sequence[Any]) -> tuple[Any, ...]:
        if not isinstance(state, list | tuple):
            raise ValueError(
                f"{self._where}.set_state expects a list or tuple of state tensors, got {type(state).__name__}"
            )
        _check_state(self.exported, state, f"{self._where}.set_state")
        return tuple(self._convert(s, ref.dtype) for s, ref in zip(state, self.exported.initial_state))

    def _run(self, phase: int, step: Any, state: tuple[Any, ...]) -> Sequence[Any]:
        raise NotImplementedError

    def _convert(self, value: Any, dtype: torch.dtype) -> Any:
        """``value`` as the runtime's input of ``dtype``."""
        raise NotImplementedError

    def _to_tensor(self, value: Any) -> Tensor:
        raise NotImplementedError


class OnnxStepRunner(_StepRunner):
    """``OnnxStepRunner(exported_or_path, initial_state=None, providers=("CPUExecutionProvider",))`` steps a stream
    through the ONNX programs of an ``ExportedStep`` (or the file written by ``export(..., path=...)``) in
    onnxruntime, one session per phase, the state fed back as numpy arrays between steps.

    It starts from the exported warmed-up state (``initial_state`` replaces it), i.e. it continues the stream that
    ``export`` warmed up; ``warm_up(net, clip)`` starts another stream eagerly and hands the state over.
    ``OnnxStepRunner.from_net(net, first_step)`` exports and opens in one call.
    """

    _where = "OnnxStepRunner"

    def __init__(
        self,
        exported: ExportedStep | str | Path,
        initial_state: Sequence[Tensor | np.ndarray] | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        session_options: Any = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:  # an optional dependency: pip install .[export]
            raise ImportError("OnnxStepRunner needs onnxruntime: pip install 'onnxruntime>=1.17'") from err
        step = exported if isinstance(exported, ExportedStep) else ExportedStep.load(exported)
        if step.format != "onnx":
            raise ValueError(
                f"OnnxStepRunner runs ONNX programs, this step was exported as {step.format!r}: export with "
                "format='onnx', or run it with TorchExportRunner"
            )
        self._sessions = [
            ort.InferenceSession(p.SerializeToString(), sess_options=session_options, providers=list(providers))
            for p in step.programs
        ]
        self._names = step.input_names
        super().__init__(step, initial_state)

    @classmethod
    def from_net(
        cls,
        net: nn.Module,
        first_step: Tensor,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        session_options: Any = None,
        **export_kwargs: Any,
    ) -> OnnxStepRunner:
        """Export ``net``'s step (``export(net, first_step, "onnx", **export_kwargs)``) and open it: a callable
        that continues the warmed-up stream of ``first_step``'s shape in onnxruntime (``net`` continues it too).
        ``session_options``: an ``onnxruntime.SessionOptions`` (e.g. ``intra_op_num_threads``)."""
        return cls(
            export(net, first_step, "onnx", **export_kwargs), providers=providers, session_options=session_options
        )

    def _run(self, phase: int, step: Any, state: tuple[Any, ...]) -> Sequence[Any]:
        return self._sessions[phase].run(None, dict(zip(self._names, (step, *state))))

    def _convert(self, value: Any, dtype: torch.dtype) -> np.ndarray:
        import numpy as np

        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        return np.ascontiguousarray(array, dtype=_numpy_dtype(dtype))

    def _to_tensor(self, value: Any) -> Tensor:
        return torch.from_numpy(value)


class TorchExportRunner(_StepRunner):
    """Steps a stream through the ``torch.export`` programs of an ``ExportedStep`` (``format="torch_export"``), or
    the ``.pt2`` file written by ``export(..., path=...)``; the same interface as ``OnnxStepRunner``."""

    _where = "TorchExportRunner"

    def __init__(self, exported: ExportedStep | str | Path, initial_state: Sequence[Tensor] | None = None) -> None:
        step = exported if isinstance(exported, ExportedStep) else ExportedStep.load(exported)
        if step.format != "torch_export":
            raise ValueError(
                f"TorchExportRunner runs torch.export programs, this step was exported as {step.format!r}: export "
                "with format='torch_export', or run it with OnnxStepRunner"
            )
        self._modules = [p.module() for p in step.programs]
        super().__init__(step, initial_state)

    def _run(self, phase: int, step: Any, state: tuple[Any, ...]) -> Sequence[Any]:
        with torch.no_grad():
            return self._modules[phase](step, *state)

    def _convert(self, value: Any, dtype: torch.dtype) -> Tensor:
        return torch.as_tensor(value, dtype=dtype).detach()

    def _to_tensor(self, value: Any) -> Tensor:
        return value
