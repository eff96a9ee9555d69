"""Continual Transformer encoder layers and stacks of any depth.

Continual Transformers (Hedegaard et al., arXiv 2201.06268) run a Transformer encoder over a sliding window of
the last ``n`` steps (``sequence_len``) and emit, at every step, the encoder output of the newest position. The
modules here have the parameters and ``state_dict`` keys of ``nn.TransformerEncoderLayer`` /
``nn.TransformerEncoder`` (``layers.0.self_attn.in_proj_weight``, ``layers.0.linear1.weight``,
``layers.0.norm1.weight``, ``norm.weight``, ...), post-norm or pre-norm, any activation (``"relu"``, ``"gelu"``
or a callable), and any number of layers.

Layout is channels first: a clip is ``(B, E, T)``, a step ``(B, E)``. ``forward(clip)`` is the offline
computation, equal to the nn module's output on the permuted clip (all ``T`` positions; nn's layers also run
their attention with ``need_weights=False``, and no attention weights are returned here either; with dropout in
training mode each draws its own masks). Step outputs are windowed:
``None`` for the first ``n - 1`` steps (delay ``n - 1``), then the step at input index ``t`` returns
``nn(clip[:, :, t - n + 1 : t + 1])[:, :, -1]``, the newest position of the encoder applied to the last ``n``
frames; they equal ``forward`` of the whole clip only when ``T == n``. ``forward_steps(clip)`` stacks those
outputs to ``(B, E, T - n + 1)`` (``None`` when ``T < n``). There is no end padding, so ``pad_end=True`` changes
nothing: the last output is the window that ends with the last input frame.

How a stack of ``L`` layers steps exactly (the reference library builds only 1 or 2 layers and maps ``"gelu"``
to ReLU; neither limitation applies here). With ``E`` = d_model, ``F`` = dim_feedforward, MACs per step:

* ``L == 1``: one single-output layer; the K/V window of its input is cached, so a step costs the projections
  of the new token and one attention row: ``4 E^2 + 2 n E + 2 E F``.
* ``L >= 2``: layer 1 is retroactive: it updates the outputs of all ``n`` window positions, since every one of
  them attends to the token that arrived and to the one that left: ``(3 + n) E^2 + O(n E log n) + 2 n E F``.
  The input window of every later layer has therefore changed in all ``n`` positions, so layers 2 .. L-1 run
  in full on the window (``4 n E^2 + 2 n^2 E + 2 n E F`` each; nothing of an earlier step is reusable), and the
  last layer computes its newest position only: K/V projections of ``n`` tokens and one query row,
  ``(2 n + 2) E^2 + 2 n E + 2 E F``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import (
    MHA_MODES,
    RetroactiveMultiheadAttention,
    SingleOutputMultiheadAttention,
    _check_layout,
    layout_tokens,
    single_query_attention,
)
from .base import CoModule, clone_state, store
from .convert import check_build_kwargs, register

__all__ = ["TransformerEncoder", "TransformerEncoderLayer"]

Activation = str | Callable[[Tensor], Tensor]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}
_ATTENTION: dict[str, type[RetroactiveMultiheadAttention | SingleOutputMultiheadAttention]] = {
    "single_output": SingleOutputMultiheadAttention,
    "retroactive": RetroactiveMultiheadAttention,
}


def _activation(activation: Activation) -> Callable[[Tensor], Tensor]:
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be 'relu', 'gelu' or a callable, got {activation!r}")
        return _ACTIVATIONS[activation]
    if not callable(activation):
        raise TypeError(f"activation must be 'relu', 'gelu' or a callable, got {type(activation).__name__}")
    return activation


def _check_mode(mode: str) -> str:
    if mode not in MHA_MODES:
        raise ValueError(f"mode must be one of {MHA_MODES}, got {mode!r}")
    return mode


def _needs_sequence_len(module: nn.Module, sequence_len: int | None) -> int:
    if sequence_len is None:
        raise ValueError(
            f"Converting {type(module).__name__} needs sequence_len, the number of steps its attention window "
            "spans: continual(module, sequence_len=n)"
        )
    return sequence_len


class TransformerEncoderLayer(CoModule, nn.Module):
    """A continual ``nn.TransformerEncoderLayer`` (Continual Transformers, Hedegaard et al., arXiv 2201.06268).

    Same arguments as the nn layer except ``batch_first`` (the layout is always ``(B, E, T)``), plus
    ``sequence_len`` (the window ``n``) and ``mode``, which decides what a step returns:

    * ``"single_output"`` (default): ``forward_step((B, E)) -> (B, E)``, the newest position of the layer
      applied to the last ``n`` steps (``SingleOutputMultiheadAttention``);
    * ``"retroactive"``: ``forward_step((B, E)) -> (B, E, n)``, all ``n`` positions of that window, oldest first
      (``RetroactiveMultiheadAttention``; the layer also keeps the window's inputs for the residual).

    Both return ``None`` for the first ``n - 1`` steps (delay ``n - 1``); ``forward_steps`` stacks the outputs on
    dim 2: ``(B, E, T - n + 1)``, or ``(B, E, T - n + 1, n)`` in retroactive mode. ``forward(clip)`` is the nn
    layer on the whole clip. ``forward_tokens`` and ``forward_last_token`` apply the layer to a whole window of
    batch-first tokens; ``TransformerEncoder`` uses them for its later layers. Stepping in training mode with
    dropout > 0 raises an error: call ``.eval()`` first. Cost per step: see the module docstring (single-output
    as for ``L == 1``, retroactive as for the first of ``L >= 2`` layers).
    """

    # the retroactive window of inputs: a tensor of this layer's own beside its attention's state (state_slots)
    _state_names = ("_inputs",)

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        *,
        sequence_len: int,
        bias: bool = True,
        mode: str = "single_output",
        embed_dim_second: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.self_attn = _ATTENTION[_check_mode(mode)](
            d_model, nhead, sequence_len, bias=bias, dropout=dropout, **factory
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.sequence_len = sequence_len
        self.mode = mode
        self.embed_dim_second = _check_layout(type(self).__name__, embed_dim_second)
        self._inputs: Tensor | None = None  # retroactive mode: the window's inputs (B, n, E), oldest first

    @property
    def receptive_field(self) -> int:
        return self.sequence_len

    def extra_repr(self) -> str:
        layout = "" if self.embed_dim_second else ", embed_dim_second=False"
        return f"sequence_len={self.sequence_len}, mode={self.mode!r}, norm_first={self.norm_first}{layout}"

    def set_mode(self, mode: str) -> None:
        """Switch what a step returns (see the class docstring); keeps the weights, forgets the state."""
        if not isinstance(self.self_attn, _ATTENTION[_check_mode(mode)]):
            self.self_attn = _ATTENTION[mode].build_from(self.self_attn, self.sequence_len)
        self.mode = mode
        self.clean_state()

    # --- token-wise blocks (tokens are batch-first: (..., E)) --------------------------------------------------
    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def _finish(self, x: Tensor, attended: Tensor) -> Tensor:
        """Residuals, norms and feed-forward around the attention output ``attended`` of the tokens ``x``."""
        if self.norm_first:
            y = x + self.dropout1(attended)
            return y + self._ff_block(self.norm2(y))
        y = self.norm1(x + self.dropout1(attended))
        return self.norm2(y + self._ff_block(y))

    def _attention_input(self, x: Tensor) -> Tensor:
        return self.norm1(x) if self.norm_first else x

    # --- offline ---------------------------------------------------------------------------------------
    def forward(
        self, clip: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """The layer on the whole clip, ``(B, E, T) -> (B, E, T)`` (``(B, T, E) -> (B, T, E)`` with
        ``embed_dim_second=False``), equal to ``nn.TransformerEncoderLayer``."""
        tokens = layout_tokens(self, clip, self.linear1.in_features, "forward")
        out = self.forward_tokens(tokens, src_mask, src_key_padding_mask)
        return out.transpose(1, 2) if self.embed_dim_second else out

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        """``forward_step`` over the steps of ``clip``, outputs stacked on the time dim of this layer's layout."""
        tokens = layout_tokens(self, clip, self.linear1.in_features, "forward_steps")
        out = super().forward_steps(tokens.transpose(1, 2), pad_end, update_state)
        return out if out is None or self.embed_dim_second else out.transpose(1, 2)

    def forward_tokens(
        self, tokens: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """The layer on batch-first tokens ``(B, T, E) -> (B, T, E)``."""
        attended = self.self_attn.attend(self._attention_input(tokens), src_mask, src_key_padding_mask)
        return self._finish(tokens, attended)

    def forward_last_token(self, tokens: Tensor) -> Tensor:
        """``forward_tokens(tokens)[:, -1]`` computing the last position only: ``(B, T, E) -> (B, E)``."""
        attended = single_query_attention(self.self_attn, self._attention_input(tokens), -1)
        return self._finish(tokens[:, -1], attended)

    # --- stepping --------------------------------------------------------------------------------------
    def check_step_mode(self) -> None:
        """Raise if stepping would silently drop this layer's dropout (training mode, dropout > 0)."""
        probs = (self.self_attn.dropout, self.dropout.p, self.dropout1.p, self.dropout2.p)
        if self.training and any(p > 0 for p in probs):
            raise RuntimeError(
                f"{type(self).__name__} cannot step in training mode with dropout {max(probs)}: the step outputs "
                "are defined for the deterministic (eval) layer. Call .eval() before stepping, or use dropout=0."
            )

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor | None:
        """Feed one step ``(B, E)``; ``(B, E)`` (single_output) or ``(B, E, n)`` (retroactive), or ``None``."""
        self.check_step_mode()
        attended = self.self_attn.forward_step(self._attention_input(step), update_state)
        if self.mode == "single_output":
            return None if attended is None else self._finish(step, attended)
        old = self._inputs
        if old is None:  # a fresh stream; zeros stand for the unseen past (they only feed skipped outputs)
            old = step.new_zeros(step.shape[0], self.sequence_len, step.shape[1])
        inputs = torch.cat([old[:, 1:], step.unsqueeze(1)], 1)
        if update_state:
            self._inputs = store(self._inputs, inputs)
        if attended is None:
            return None
        window = self._finish(inputs, attended.transpose(1, 2))  # (B, n, E)
        return window.transpose(1, 2) if self.embed_dim_second else window

    def get_state(self) -> tuple[Any, Tensor | None]:
        return self.self_attn.get_state(), clone_state(self._inputs)

    def set_state(self, state: Any) -> None:
        if state is None:
            self.clean_state()
            return
        attention_state, inputs = state
        self.self_attn.set_state(attention_state)
        self._inputs = clone_state(inputs)

    def clean_state(self) -> None:
        self.self_attn.clean_state()
        self._inputs = None

    # --- conversion ------------------------------------------------------------------------------------
    @classmethod
    def build_from(
        cls, module: nn.TransformerEncoderLayer, sequence_len: int, mode: str = "single_output", **kwargs: Any
    ) -> TransformerEncoderLayer:
        """The continual twin of ``module`` (same weights and keys) over a window of ``sequence_len`` steps.

        ``module.batch_first`` may be either. The conversion keywords of other builders are ignored; other
        keywords are refused.
        """
        check_build_kwargs(f"{cls.__name__}.build_from", kwargs)
        if not isinstance(module, nn.TransformerEncoderLayer):
            raise TypeError(
                f"TransformerEncoderLayer.build_from expects an nn.TransformerEncoderLayer, got {type(module).__name__}"
            )
        attention = _ATTENTION[_check_mode(mode)].build_from(module.self_attn, sequence_len)
        weight = module.linear1.weight
        new = cls(
            module.self_attn.embed_dim,
            module.self_attn.num_heads,
            module.linear1.out_features,
            dropout=module.dropout.p,
            activation=copy.deepcopy(module.activation),
            layer_norm_eps=module.norm1.eps,
            norm_first=module.norm_first,
            sequence_len=sequence_len,
            bias=module.linear1.bias is not None,
            mode=mode,
            device=weight.device,
            dtype=weight.dtype,
        )
        new.self_attn = attention  # carries the attention dropout, which nn may have set apart from `dropout`
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new


class TransformerEncoder(CoModule, nn.Module):
    """A continual ``nn.TransformerEncoder`` of any depth (Continual Transformers, Hedegaard et al., arXiv 2201.06268).

    ``TransformerEncoder(layer, num_layers, norm=None)`` stacks ``num_layers`` deep copies of ``layer`` (as nn
    does); ``TransformerEncoder([layer, ...], norm=None)`` stacks the given layers themselves. All layers must
    share ``sequence_len``. The first layer is switched to ``mode="retroactive"`` when there are two or more
    layers, else to ``"single_output"`` (see the module docstring for why and what a step costs).

    ``forward(clip)`` equals ``nn.TransformerEncoder`` on the permuted clip, ``(B, E, T) -> (B, E, T)``.
    ``forward_step((B, E))`` returns ``None`` for the first ``n - 1`` steps, then ``(B, E)``: the newest position
    of the encoder (and ``norm``) applied to the last ``n`` steps. ``forward_steps`` stacks these on dim 2.
    Only the first layer holds step state; ``get_state``/``set_state`` carry it.
    """

    def __init__(
        self,
        encoder_layer: TransformerEncoderLayer | Sequence[TransformerEncoderLayer],
        num_layers: int | None = None,
        norm: nn.Module | None = None,
        *,
        embed_dim_second: bool | None = None,
    ) -> None:
        super().__init__()
        if isinstance(encoder_layer, TransformerEncoderLayer):
            if num_layers is None or num_layers < 1:
                raise ValueError(f"TransformerEncoder needs num_layers >= 1 with one layer, got {num_layers!r}")
            layers = [copy.deepcopy(encoder_layer) for _ in range(num_layers)]
        else:
            layers = list(encoder_layer)
            if not layers:
                raise ValueError("TransformerEncoder needs at least one layer")
            if num_layers is not None and num_layers != len(layers):
                raise ValueError(f"TransformerEncoder got {len(layers)} layers but num_layers={num_layers}")
        for layer in layers:
            if not isinstance(layer, TransformerEncoderLayer):
                raise TypeError(
                    f"TransformerEncoder stacks continual TransformerEncoderLayers, got {type(layer).__name__}; "
                    "convert nn layers with TransformerEncoderLayer.build_from(layer, sequence_len)"
                )
        lengths = {layer.sequence_len for layer in layers}
        if len(lengths) != 1:
            raise ValueError(f"TransformerEncoder layers must share sequence_len, got {sorted(lengths)}")
        layers[0].set_mode("retroactive" if len(layers) > 1 else "single_output")
        for layer in layers[1:]:
            layer.clean_state()
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)
        self.norm = norm
        self.sequence_len = layers[0].sequence_len
        # The encoder's layout (None: the first layer's). Inside, layers pass batch-first tokens.
        layout = layers[0].embed_dim_second if embed_dim_second is None else embed_dim_second
        self.embed_dim_second = _check_layout(type(self).__name__, layout)

    @property
    def receptive_field(self) -> int:
        return self.sequence_len

    def forward(self, clip: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """The encoder on the whole clip, ``(B, E, T) -> (B, E, T)`` (``(B, T, E) -> (B, T, E)`` with
        ``embed_dim_second=False``), equal to ``nn.TransformerEncoder``."""
        x = layout_tokens(self, clip, self.layers[0].linear1.in_features, "forward")
        for layer in self.layers:
            x = layer.forward_tokens(x, mask, src_key_padding_mask)
        if self.norm is not None:
            x = self.norm(x)
        return x.transpose(1, 2) if self.embed_dim_second else x

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        """``forward_step`` over the steps of ``clip``, outputs stacked on the time dim of this encoder's layout."""
        tokens = layout_tokens(self, clip, self.layers[0].linear1.in_features, "forward_steps")
        out = super().forward_steps(tokens.transpose(1, 2), pad_end, update_state)
        return out if out is None or self.embed_dim_second else out.transpose(1, 2)

    def forward_step(self, step: Tensor, update_state: bool = True) -> Tensor | None:
        """Feed one step ``(B, E)``; return the newest window position's encoder output ``(B, E)``, or ``None``."""
        for layer in self.layers:
            layer.check_step_mode()
        out = self.layers[0].forward_step(step, update_state)
        if out is None:
            return None
        if self.num_layers > 1:
            # The first layer returned its whole updated window, (B, E, n) or (B, n, E): all n positions changed.
            tokens = out.transpose(1, 2) if self.layers[0].embed_dim_second else out
            for layer in self.layers[1:-1]:
                tokens = layer.forward_tokens(tokens)
            out = self.layers[-1].forward_last_token(tokens)
        return out if self.norm is None else self.norm(out)

    def get_state(self) -> Any:
        return self.layers[0].get_state()

    def set_state(self, state: Any) -> None:
        self.layers[0].set_state(state)

    def clean_state(self) -> None:
        for layer in self.layers:
            layer.clean_state()

    @classmethod
    def build_from(cls, module: nn.TransformerEncoder, sequence_len: int, **kwargs: Any) -> TransformerEncoder:
        """The continual twin of ``module`` (same weights and keys) over a window of ``sequence_len`` steps."""
        check_build_kwargs(f"{cls.__name__}.build_from", kwargs)
        if not isinstance(module, nn.TransformerEncoder):
            raise TypeError(
                f"TransformerEncoder.build_from expects an nn.TransformerEncoder, got {type(module).__name__}"
            )
        layers = [TransformerEncoderLayer.build_from(layer, sequence_len) for layer in module.layers]
        new = cls(layers, norm=copy.deepcopy(module.norm))
        new.train(module.training)
        return new


def _convert_layer(
    module: nn.TransformerEncoderLayer,
    sequence_len: int | None = None,
    mode: str = "single_output",
    **kwargs: Any,
) -> TransformerEncoderLayer:
    """``continual(nn.TransformerEncoderLayer, sequence_len=n, mode="single_output"|"retroactive")``."""
    check_build_kwargs("continual(nn.TransformerEncoderLayer)", kwargs)
    return TransformerEncoderLayer.build_from(module, _needs_sequence_len(module, sequence_len), mode=mode)


def _convert_encoder(
    module: nn.TransformerEncoder, sequence_len: int | None = None, **kwargs: Any
) -> TransformerEncoder:
    """``continual(nn.TransformerEncoder, sequence_len=n)``."""
    check_build_kwargs("continual(nn.TransformerEncoder)", kwargs)
    return TransformerEncoder.build_from(module, _needs_sequence_len(module, sequence_len))


register(nn.TransformerEncoderLayer, _convert_layer)
register(nn.TransformerEncoder, _convert_encoder)
