"""Continual recurrent layers: ``RNN``, ``GRU``, ``LSTM``.

A recurrent layer is continual by nature: its hidden state is the summary of the stream so far, and a step is
one recurrence update. These subclass the torch layers (same constructor, weights and ``state_dict`` keys) and
add the step protocol with the channels-first layout of this package: a clip is ``(B, C, T)`` and ``forward``
returns ``(B, H, T)``, a step is ``(B, C)`` and ``forward_step`` returns ``(B, H)``, where ``H`` is
``hidden_size`` (``proj_size`` for an LSTM with projections).

Temporal properties: ``delay`` 0 (every step emits), ``stride`` 1, ``padding`` 0 and ``receptive_field`` 1.
An output depends on the whole stream since ``clean_state`` through the hidden state, but no window of past
inputs is kept: ``receptive_field`` counts the input frames a step needs before its output is complete, which
is one, so that ``delay = receptive_field - 1 - padding`` holds as for every continual module (the same value
the continual-inference library reports for its recurrent layers).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base import StatefulModule, _stream_mismatch, ordinary_tensors, store
from .convert import check_build_kwargs, register

__all__ = ["GRU", "LSTM", "RNN"]

Hidden = Tensor | tuple[Tensor, Tensor]


class _ContinualRNN(StatefulModule):
    """The step protocol shared by the three recurrent layers (``_torch_cls`` is the torch class)."""

    _torch_cls: type[nn.RNNBase]
    _state_names: tuple[str, ...] = ("h",)

    def _setup(self) -> None:
        if self.bidirectional:
            raise ValueError(
                f"{type(self).__name__}(bidirectional=True): a bidirectional recurrent layer reads every sequence "
                "backwards from its end, which a stream does not have, so it cannot step; use bidirectional=False"
            )
        # A layer built under inference_mode holds inference tensors; torch's layers also keep a list of their
        # weights (_flat_weights) that must follow the replaced parameters.
        ordinary_tensors(self, recurse=False)
        self._init_flat_weights()
        self._init_state_attrs()

    # --- offline ---------------------------------------------------------------------------------------
    def forward(self, clip: Tensor, hx: Hidden | None = None, return_hidden: bool = False) -> Any:  # type: ignore[override]
        """The layer over a clip ``(B, C, T) -> (B, H, T)``, from the zero state or from ``hx`` (torch's layout,
        ``(num_layers, B, H)``; ``(h_0, c_0)`` for an LSTM). ``return_hidden=True`` also returns the final
        hidden state, as torch's layer does: ``(output, h_n)`` (``(output, (h_n, c_n))`` for an LSTM)."""
        if clip.dim() != 3 or clip.shape[1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}.forward expects a clip (B, C={self.input_size}, T), got {tuple(clip.shape)}"
                + (": a step (B, C) goes to forward_step" if clip.dim() == 2 else "")
            )
        out, hidden = self._run(clip, hx)
        return (out, hidden) if return_hidden else out

    def _run(self, clip: Tensor, hx: Hidden | None) -> tuple[Tensor, Hidden]:
        """torch's recurrence on a channels-first clip, whatever ``batch_first`` says (it only tells torch's
        ``forward`` how we lay the sequence out for it)."""
        seq = clip.transpose(1, 2) if self.batch_first else clip.permute(2, 0, 1)
        out, hidden = self._torch_cls.forward(self, seq, hx)  # type: ignore[arg-type]
        return (out.transpose(1, 2) if self.batch_first else out.permute(1, 2, 0)), hidden

    # --- stepping ------------------------------------------------------------------------------------------
    def _step(self, step: Tensor) -> Tensor:
        out, hidden = self._run(step.unsqueeze(2), self._hidden())
        self._keep(hidden)
        self._tick()
        return out.squeeze(2)

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        """All steps of ``clip`` at once: one call of torch's recurrence from the current state (there is no end
        padding, so ``pad_end`` changes nothing)."""
        if clip.dim() != 3:
            raise ValueError(f"{type(self).__name__}.forward_steps expects a clip (B, C, T), got {tuple(clip.shape)}")
        if clip.shape[2] == 0:
            return None
        self._check_stream(clip[:, :, 0])
        out, hidden = self._run(clip, self._hidden())
        if update_state:
            self._keep(hidden)
        return out

    def _check_stream(self, step: Tensor) -> None:
        """The checks ``forward_step`` makes on a stream's steps, for a clip stepped in one call."""
        stream = self.__dict__.get("_stream")
        if stream is None:
            self._start_stream(step)
        elif step.shape != stream[0] or step.dtype != stream[1] or step.device != stream[2]:
            raise ValueError(_stream_mismatch(type(self).__name__, step, stream))

    def _check_step_form(self, step: Tensor) -> None:
        if step.dim() != 2 or step.shape[1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}.forward_step expects a step (B, C={self.input_size}), got {tuple(step.shape)}"
            )

    def _hidden(self) -> Hidden | None:
        return self.h

    def _keep(self, hidden: Hidden) -> None:
        self.h = store(self.h, hidden)  # type: ignore[arg-type]

    # --- state -------------------------------------------------------------------------------------------
    def _out_size(self) -> int:
        return self.hidden_size

    def _state_spec(self) -> dict[str, tuple[Any, ...]]:
        return {"h": (self.num_layers, "s0", self._out_size())}

    def set_state(self, state: Any) -> None:
        """Restore a ``get_state()`` snapshot, or start from an initial hidden state in torch's layout: ``h_0``
        ``(num_layers, B, H)`` (a tensor, as continual-inference's ``set_state(h0)``), or ``(h_0, c_0)`` for
        an LSTM."""
        if isinstance(state, Tensor):
            state = (state,)
        initial = isinstance(state, tuple | list) and len(state) == len(self._state_names)
        if initial and all(isinstance(s, Tensor) for s in state):
            state = (*state, 0)  # an initial state: no step seen yet
        super().set_state(state)

    @property
    def receptive_field(self) -> int:
        return 1

    # --- conversion ------------------------------------------------------------------------------------
    @classmethod
    def _torch_kwargs(cls, module: nn.RNNBase) -> dict[str, Any]:
        return {}

    @classmethod
    def build_from(cls, module: nn.RNNBase, **kwargs: Any) -> _ContinualRNN:
        """The continual twin of a torch recurrent layer, with its weights (it takes no structural keywords)."""
        check_build_kwargs(f"{cls.__name__}.build_from", kwargs)
        weight = module.weight_ih_l0
        new = cls(  # type: ignore[call-arg]
            module.input_size,
            module.hidden_size,
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=module.dropout,
            bidirectional=module.bidirectional,
            device=weight.device,
            dtype=weight.dtype,
            **cls._torch_kwargs(module),
        )
        new.load_state_dict(module.state_dict())
        return new.train(module.training)


_DOC = """Continual ``{name}``: torch's constructor, weights and ``state_dict`` keys; channels first.

``forward(clip (B, C, T), hx=None, return_hidden=False)`` returns ``(B, H, T)`` (and the final hidden state
with ``return_hidden=True``); ``forward_step(step (B, C))`` returns ``(B, H)`` and keeps the hidden state
(``get_state()``: ``{state}``; ``set_state`` also takes torch's initial state{init}). ``forward_steps`` equals
``forward`` from the kept state. ``batch_first`` is accepted and kept, but the layout is always channels
first: it only tells torch's ``forward`` how the sequence is laid out for it, so weights and outputs do not
depend on it. ``bidirectional=True`` is refused (a stream has no end to read backwards from). Dropout between
layers acts in training mode as in torch (a fresh mask per call, so steps equal ``forward`` only in
distribution); in eval it is off and steps equal ``forward``. Delay 0, receptive field 1 (module docstring).
"""


class RNN(_ContinualRNN, nn.RNN):
    __doc__ = _DOC.format(name="RNN", state="(h, step count)", init=" ``h_0`` ``(num_layers, B, H)``")
    _torch_cls = nn.RNN

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        nn.RNN.__init__(self, *args, **kwargs)
        self._setup()

    @classmethod
    def _torch_kwargs(cls, module: nn.RNNBase) -> dict[str, Any]:
        return {"nonlinearity": module.nonlinearity}


class GRU(_ContinualRNN, nn.GRU):
    __doc__ = _DOC.format(name="GRU", state="(h, step count)", init=" ``h_0`` ``(num_layers, B, H)``")
    _torch_cls = nn.GRU

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        nn.GRU.__init__(self, *args, **kwargs)
        self._setup()


class LSTM(_ContinualRNN, nn.LSTM):
    __doc__ = _DOC.format(name="LSTM", state="(h, c, step count)", init=" ``(h_0, c_0)``")
    _torch_cls = nn.LSTM
    _state_names = ("h", "c")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        nn.LSTM.__init__(self, *args, **kwargs)
        self._setup()

    def _hidden(self) -> Hidden | None:
        return None if self.h is None else (self.h, self.c)

    def _keep(self, hidden: Hidden) -> None:
        h, c = hidden
        self.h, self.c = store(self.h, h), store(self.c, c)

    def _out_size(self) -> int:
        return self.proj_size or self.hidden_size

    def _state_spec(self) -> dict[str, tuple[Any, ...]]:
        return {"h": (self.num_layers, "s0", self._out_size()), "c": (self.num_layers, "s0", self.hidden_size)}

    @classmethod
    def _torch_kwargs(cls, module: nn.RNNBase) -> dict[str, Any]:
        return {"proj_size": module.proj_size}


for _torch_cls, _co_cls in ((nn.RNN, RNN), (nn.GRU, GRU), (nn.LSTM, LSTM)):
    register(_torch_cls, _co_cls.build_from)
