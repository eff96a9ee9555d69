"""Continual multi-head self-attention: retroactive and single-output.

Continual Transformers (Hedegaard et al., arXiv 2201.06268) compute a self-attention layer over a sliding window
of the last ``n`` steps (``sequence_len``) one step at a time, reusing what earlier steps computed:

* ``RetroactiveMultiheadAttention`` updates the attention outputs of all ``n`` window positions when a step
  arrives (the new query row, plus the new key/value entering and the oldest leaving every other row);
* ``SingleOutputMultiheadAttention`` computes the output of one window position (by default the newest) from a
  FIFO of the window's keys and values.

Both have the parameters and ``state_dict`` keys of ``torch.nn.MultiheadAttention`` (they subclass it), and
``forward(clip)`` is its self-attention over the whole clip: the attention output only, bit for bit what
``nn.MultiheadAttention(x, x, x, need_weights=False)[0]`` returns. The attention weights are not returned (nn's
default ``need_weights=True`` also returns them, averaged over heads, and computes its output by another kernel,
equal to rounding, ~1e-7); ``nn.MultiheadAttention.forward(module, x, x, x)`` on these modules gives them, with
the same weights. Layout is channels first: a clip is
``(B, E, T)``, a step ``(B, E)``. Step outputs are windowed: once ``n`` steps have been seen (delay ``n - 1``),
the step at input index ``t`` answers for the window ``clip[:, :, t - n + 1 : t + 1]``, so it equals
``forward`` of that window, not of the whole clip (unless ``T == n``).

Numerical stability: the reference library's retroactive update keeps exponentials of raw logits and subtracts
the contribution of the key that leaves the window, which overflows for large logits and cancels
catastrophically when the leaving key dominated a row. Here nothing is ever subtracted: each row's softmax is
split into the keys that preceded its query (suffix aggregates computed once, when the query arrives) and the
keys that came after it (a running, max-rescaled online-softmax aggregate), so every step is as accurate as a
fresh softmax for any logit scale.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import StatefulModule, in_place_ok, store
from .convert import check_build_kwargs, register

__all__ = [
    "MHA_MODES",
    "RetroactiveMultiheadAttention",
    "SingleOutputMultiheadAttention",
    "single_query_attention",
]

MHA_MODES = ("single_output", "retroactive")

_A = TypeVar("_A", bound="_StepAttention")


# --- helpers ------------------------------------------------------------------------------------------------
def _push(fifo: Tensor, value: Tensor, dim: int) -> Tensor:
    """Shift register: ``fifo`` without its oldest entry (index 0 of ``dim``), with ``value`` appended."""
    return torch.cat([fifo.narrow(dim, 1, fifo.shape[dim] - 1), value.unsqueeze(dim)], dim)


def _write_slot(buffer: Tensor, dim: int, index: Tensor, value: Tensor) -> Tensor:
    """``buffer`` with ``value`` written at ``index`` (a one-element device tensor) of ``dim``.

    In place when safe: keeps the buffer's address and copies one slot, not the buffer. A device index (rather
    than a Python int) lets one captured CUDA graph serve every step. Out of place when autograd may still need
    the old values.
    """
    value = value.unsqueeze(dim)
    if buffer.dtype == value.dtype and buffer.device == value.device and in_place_ok(buffer, value):
        return buffer.index_copy_(dim, index, value)
    return buffer.index_copy(dim, index, value)


def _merge(max1: Tensor, acc1: Tensor, max2: Tensor, acc2: Tensor) -> tuple[Tensor, Tensor]:
    """Combine two softmax aggregates over disjoint key sets: associative and subtraction-free.

    An aggregate over keys ``j`` for one query row is ``(max, acc)``: ``max = max_j l_j`` (..., R, 1) and
    ``acc = sum_j exp(l_j - max) [v_j, 1]`` (..., R, d + 1), i.e. the softmax numerator and denominator packed
    together, since both rescale alike. Only factors ``exp(m - new_max) <= 1`` appear: no overflow for any logit
    scale. The empty aggregate is ``(-inf, 0)``.
    """
    new_max = torch.maximum(max1, max2)
    return new_max, acc1 * torch.exp(max1 - new_max) + acc2 * torch.exp(max2 - new_max)


def _suffix_scan(logits: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax aggregates of every suffix of the keys: entry ``a`` covers keys ``a .. n-1``.

    ``logits`` (..., n, 1) and ``values`` (..., n, d + 1), the values with a trailing column of ones. A
    Hillis-Steele scan with ``_merge``: ceil(log2 n) vectorised rounds, O(n d log n) work, each entry exact.
    """
    row_max, acc = logits, values
    n = logits.shape[-2]
    shift = 1
    while shift < n:
        # Entry a merges with entry a + shift (the empty aggregate past the end), so that it then covers keys
        # a .. a + 2 * shift - 1 (clipped at n - 1).
        row_max, acc = _merge(
            row_max,
            acc,
            F.pad(row_max[..., shift:, :], (0, 0, 0, shift), value=float("-inf")),
            F.pad(acc[..., shift:, :], (0, 0, 0, shift)),
        )
        shift *= 2
    return row_max, acc


def _attend_one(query: Tensor, keys: Tensor, values: Tensor, dropout: float = 0.0) -> Tensor:
    """Softmax attention of one (pre-scaled) query per head: (B, H, d) x (B, H, n, d) -> (B, H, d)."""
    weights = torch.softmax((keys @ query.unsqueeze(-1)).squeeze(-1), dim=-1)
    if dropout > 0:
        weights = F.dropout(weights, dropout, training=True)
    return (weights.unsqueeze(-2) @ values).squeeze(-2)


def _check_convertible(module: nn.Module, target: str) -> None:
    if not isinstance(module, nn.MultiheadAttention):
        raise TypeError(f"{target} needs an nn.MultiheadAttention, got {type(module).__name__}")
    if not module._qkv_same_embed_dim:
        raise ValueError(
            f"Cannot convert {module!r} to {target}: kdim/vdim ({module.kdim}/{module.vdim}) differ from "
            f"embed_dim={module.embed_dim}, i.e. it is cross-attention, while continual attention is "
            "self-attention over the input stream."
        )
    if module.bias_k is not None:
        raise ValueError(
            f"Cannot convert {module!r} to {target}: add_bias_kv=True appends a learned key/value to every "
            "sequence, which has no place in a sliding window. Use add_bias_kv=False."
        )
    if module.add_zero_attn:
        raise ValueError(
            f"Cannot convert {module!r} to {target}: add_zero_attn=True appends a zero key/value to every "
            "sequence, which the step update does not model. Use add_zero_attn=False."
        )


def single_query_attention(mha: nn.MultiheadAttention, tokens: Tensor, query_index: int = -1) -> Tensor:
    """Output of ``mha``'s self-attention at one position only: ``mha(x, x, x)[0][:, query_index]``.

    ``tokens`` is batch-first ``(B, T, E)`` (whatever ``mha.batch_first`` says); returns ``(B, E)``. Costs the
    key/value projections of the ``T`` tokens and one query row, O(T E^2 + T E) instead of O(T E^2 + T^2 E). Used
    by the last layer of a continual transformer encoder, whose whole input window changes every step.
    """
    _check_convertible(mha, "single_query_attention")
    batch, _, embed = tokens.shape
    heads = mha.num_heads
    head_dim = embed // heads
    weight, bias = mha.in_proj_weight, mha.in_proj_bias
    query = F.linear(tokens[:, query_index], weight[:embed], None if bias is None else bias[:embed])
    keys, values = (
        F.linear(tokens, weight[embed:], None if bias is None else bias[embed:])
        .unflatten(-1, (2, heads, head_dim))
        .permute(2, 0, 3, 1, 4)
    )
    dropout = mha.dropout if mha.training else 0.0
    out = _attend_one(query.view(batch, heads, head_dim) * head_dim**-0.5, keys, values, dropout)
    return mha.out_proj(out.reshape(batch, embed))


def _check_layout(owner: str, embed_dim_second: bool) -> bool:
    if not isinstance(embed_dim_second, bool):
        raise TypeError(
            f"{owner}: embed_dim_second must be True (clips (B, E, T)) or False (clips (B, T, E)), "
            f"got {embed_dim_second!r}"
        )
    return embed_dim_second


def layout_tokens(module: nn.Module, clip: Tensor, embed_dim: int, call: str) -> Tensor:
    """``clip`` in ``module``'s layout (``module.embed_dim_second``) as batch-first tokens ``(B, T, E)``.

    ``embed_dim_second=True`` is this core's channels-first layout, clips ``(B, E, T)``; ``False`` is
    continual-inference's default token layout (with ``batch_first=True``), clips ``(B, T, E)``. Steps are
    ``(B, E)`` in both.
    """
    first = module.embed_dim_second  # type: ignore[union-attr]
    dim = 1 if first else 2
    if clip.dim() != 3 or clip.shape[dim] != embed_dim:
        expected = f"(B, E={embed_dim}, T)" if first else f"(B, T, E={embed_dim})"
        other = "False for (B, T, E) clips" if first else "True for (B, E, T) clips"
        raise ValueError(
            f"{type(module).__name__}.{call} expects a clip {expected} (embed_dim_second={first}), got "
            f"{tuple(clip.shape)}; build it with embed_dim_second={other}"
        )
    return clip.transpose(1, 2) if first else clip


# --- modules ------------------------------------------------------------------------------------------------
class _StepAttention(StatefulModule, nn.MultiheadAttention):
    """What both continual attentions share: construction, ``forward``, projection of a step, conversion."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        sequence_len: int,
        bias: bool = True,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        embed_dim_second: bool = True,
    ) -> None:
        if not isinstance(sequence_len, int) or sequence_len < 1:
            raise ValueError(f"{type(self).__name__}: sequence_len must be a positive int, got {sequence_len!r}")
        # batch_first=True is only how ``attend`` calls nn's forward internally; the public layout is (B, E, T).
        super().__init__(embed_dim, num_heads, dropout=dropout, bias=bias, batch_first=True, device=device, dtype=dtype)
        self.sequence_len = sequence_len
        self.embed_dim_second = _check_layout(type(self).__name__, embed_dim_second)
        self._init_state_attrs()

    @property
    def receptive_field(self) -> int:
        return self.sequence_len

    def extra_repr(self) -> str:
        layout = "" if self.embed_dim_second else ", embed_dim_second=False"
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, sequence_len={self.sequence_len}{layout}"

    # --- offline ---------------------------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self, clip: Tensor, attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """Self-attention over the whole clip ``(B, E, T) -> (B, E, T)`` (``(B, T, E) -> (B, T, E)`` with
        ``embed_dim_second=False``): exactly the output of ``nn.MultiheadAttention`` with ``need_weights=False``;
        no attention weights (module docstring)."""
        tokens = layout_tokens(self, clip, self.embed_dim, "forward")
        out = self.attend(tokens, attn_mask, key_padding_mask)
        return out.transpose(1, 2) if self.embed_dim_second else out

    def forward_steps(self, clip: Tensor, pad_end: bool = False, update_state: bool = True) -> Tensor | None:
        """``forward_step`` over the steps of ``clip``, outputs stacked on the time dim of this module's layout."""
        tokens = layout_tokens(self, clip, self.embed_dim, "forward_steps")
        out = super().forward_steps(tokens.transpose(1, 2), pad_end, update_state)
        return out if out is None or self.embed_dim_second else out.transpose(1, 2)

    def attend(self, tokens: Tensor, attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        """Self-attention on batch-first tokens ``(B, T, E) -> (B, T, E)`` through ``nn.MultiheadAttention``."""
        out, _ = nn.MultiheadAttention.forward(
            self,
            tokens,
            tokens,
            tokens,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            attn_mask=attn_mask,
        )
        return out

    # --- stepping helpers ------------------------------------------------------------------------------
    def _check_step(self, step: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None) -> None:
        name = type(self).__name__
        if attn_mask is not None or key_padding_mask is not None:
            raise ValueError(
                f"{name}.forward_step takes no attn_mask or key_padding_mask: a step sees a fixed sliding window "
                "of the stream. Mask in forward(clip, ...) instead."
            )
        if step.dim() != 2 or step.shape[1] != self.embed_dim:
            raise ValueError(f"{name}.forward_step expects a step (B, E={self.embed_dim}), got {tuple(step.shape)}")
        if self.training and self.dropout > 0:
            raise RuntimeError(
                f"{name}.forward_step has no attention dropout (dropout={self.dropout}) in training mode: call "
                ".eval() before stepping, or build it with dropout=0."
            )
        state = getattr(self, self._state_names[0])
        if state is not None and state.shape[0] != step.shape[0]:
            raise ValueError(
                f"{name}.forward_step got batch size {step.shape[0]} but its state holds {state.shape[0]} "
                "streams: call clean_state() before starting streams of another batch size."
            )

    def _project(self, step: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """In-projection of one step: scaled query, key and value, each ``(B, H, d)``."""
        qkv = F.linear(step, self.in_proj_weight, self.in_proj_bias)
        query, key, value = qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)
        return query * self.head_dim**-0.5, key, value

    def _zeros(self, like: Tensor, *size: int) -> Tensor:
        return torch.zeros(like.shape[0], self.num_heads, *size, dtype=like.dtype, device=like.device)

    # --- conversion ------------------------------------------------------------------------------------
    @classmethod
    def _init_kwargs(cls, module: nn.MultiheadAttention, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {}

    @classmethod
    def build_from(cls: type[_A], module: nn.MultiheadAttention, sequence_len: int, **kwargs: Any) -> _A:
        """The continual twin of ``module`` (same weights and keys) over a window of ``sequence_len`` steps.

        ``module.batch_first`` may be either: the weights do not depend on it, and the continual layout is
        always channels first. The conversion keywords of other builders are ignored (for
        ``continual(tree, **kwargs)``); other keywords are refused.
        """
        check_build_kwargs(f"{cls.__name__}.build_from", kwargs)
        _check_convertible(module, cls.__name__)
        new = cls(
            module.embed_dim,
            module.num_heads,
            sequence_len,
            bias=module.in_proj_bias is not None,
            dropout=module.dropout,
            device=module.in_proj_weight.device,
            dtype=module.in_proj_weight.dtype,
            **cls._init_kwargs(module, kwargs),
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new


class RetroactiveMultiheadAttention(_StepAttention):
    """Continual Retroactive self-attention (Continual Transformers, Hedegaard et al., arXiv 2201.06268).

    ``forward(clip)`` is ``nn.MultiheadAttention`` self-attention over the clip, ``(B, E, T) -> (B, E, T)`` (its
    output with ``need_weights=False``; no weights are returned). ``forward_step(step)`` takes ``(B, E)`` and
    returns ``None`` for the first ``n - 1`` steps (delay ``n - 1``); from then on the step at input index ``t``
    returns the attention outputs of all ``n`` positions of the window ``clip[:, :, t - n + 1 : t + 1]``, after
    the out-projection, as ``(B, E, n)`` (oldest position first): equal
    to ``forward`` of that window. ``forward_steps`` stacks those on dim 2, giving ``(B, E, T - n + 1, n)``.

    Every row's softmax is split in two parts, and nothing is ever subtracted:
      * the keys that were in the window when the row's query arrived: the new query computes the softmax
        aggregates (max logit, sum of exponentials, weighted sum of values) of every suffix of its window with
        a ceil(log2 n)-round parallel scan, O(n d log n) per head, and later steps read the suffix still in view;
      * the keys that arrived after the query: a running aggregate that absorbs each new key with a running max
        (online softmax), O(n d) per head for the n - 1 older rows;
      * each row's output merges the two, O(n d) per head.
    Plus the in-projection of the new token (3 E^2 MACs) and the out-projection of the n updated rows (n E^2).
    State: the window's scaled queries, keys and values and the running aggregates (shift registers, O(n E)), and
    each live query's n suffix aggregates (a ring of n x n x (d + 2) per head, O(n^2 E) in all), kept so that a
    key that dominated a row can leave the window at no cost in precision. d = E / H.

    All state is written in place (when autograd does not need it) and the ring is addressed through a device
    tensor holding ``t % n``, so after the ``n - 1`` warm-up steps one captured CUDA graph replays every step.
    """

    _state_names = ("_window", "_right_max", "_right_acc", "_left_max", "_left_acc", "_phase")

    def _memory(self, like: Tensor) -> tuple[Tensor, ...]:
        """The state tensors; for a fresh stream new empty ones (kept only if the step updates the state).

        Zero queries/keys/values stand for the unseen past: they only feed outputs that are skipped.
        """
        if self._window is not None:
            return self._window, self._right_max, self._right_acc, self._left_max, self._left_acc, self._phase
        n, d = self.sequence_len, self.head_dim
        return (
            # Per head and position, oldest first: scaled query, key, value and a 1 (the softmax denominator).
            self._zeros(like, n, 3 * d + 1),
            # Running aggregates over the keys that came after each query, oldest query first; empty = (-inf, 0).
            self._zeros(like, n, 1).fill_(float("-inf")),
            self._zeros(like, n, d + 1),
            # Suffix aggregates, a ring over queries: the query that arrived at step i lives in slot i % n, and its
            # aggregate over the keys it saw that are still in the window at step e sits in column e % n. Every
            # live query's current entry is then column t % n, and a step writes one slot: O(n d), no shifting.
            self._zeros(like, n, n, 1),
            self._zeros(like, n, n, d + 1),
            # t % n on the device, so that the ring is addressed without baking the step into a CUDA graph.
            torch.zeros(1, dtype=torch.long, device=like.device),
        )

    def forward_step(
        self,
        step: Tensor,
        update_state: bool = True,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor | None:
        """Feed one step ``(B, E)``; return the updated window ``(B, E, n)``, or ``None`` while warming up."""
        self._check_step(step, attn_mask, key_padding_mask)
        n, t, d = self.sequence_len, self._t, self.head_dim
        qkv = F.linear(step, self.in_proj_weight, self.in_proj_bias).view(step.shape[0], 3, self.num_heads, d)
        qkv[:, 0].mul_(d**-0.5)  # the linear's output is not saved for its backward: safe in place
        qkv = qkv.transpose(1, 2).flatten(2)  # (B, H, 3d): query, key, value
        entry = torch.cat([qkv, torch.ones_like(qkv[..., :1])], -1)
        old_window, old_right_max, old_right_acc, left_max_table, left_acc_table, phase = self._memory(entry)
        query, key, value = entry[..., :d], entry[..., d : 2 * d], entry[..., 2 * d :]
        window = _push(old_window, entry, 2)
        keys, values = window[..., d : 2 * d], window[..., 2 * d :]

        # The n - 1 queries that stay absorb the new key into their running aggregates; the new query's is empty.
        right_max, right_acc = _merge(
            old_right_max[:, :, 1:],
            old_right_acc[:, :, 1:],
            old_window[:, :, 1:, :d] @ key.unsqueeze(-1),
            value.unsqueeze(2),
        )
        right_max = torch.cat([right_max, torch.full_like(right_max[:, :, :1], float("-inf"))], 2)
        right_acc = torch.cat([right_acc, torch.zeros_like(right_acc[:, :, :1])], 2)

        # The new query's suffix aggregates over the keys of its window (it will see them leave one by one).
        suffix_max, suffix_acc = _suffix_scan(keys @ query.unsqueeze(-1), values)
        positions = torch.arange(n, device=phase.device)

        out = None
        if t >= n - 1:
            # Each live query's aggregate over its arrival-time keys still in the window: column t % n. The query
            # at window position p (oldest first) lives in slot (t + 1 + p) % n. The newest (slot t % n) holds a
            # dead entry until committed below, so it takes its full suffix (entry 0) directly.
            cells = torch.remainder(positions[:-1] + phase + 1, n) * n + phase  # (slot, column) -> flat index
            left_max, left_acc = (
                torch.cat([table.flatten(2, 3).index_select(2, cells), new[:, :, :1]], 2)
                for table, new in ((left_max_table, suffix_max), (left_acc_table, suffix_acc))
            )
            _, acc = _merge(left_max, left_acc, right_max, right_acc)
            heads = acc[..., :-1] / acc[..., -1:]  # (B, H, n, d)
            out = self.out_proj(heads.transpose(1, 2).flatten(2))  # (B, n, E)
            out = out.transpose(1, 2) if self.embed_dim_second else out

        if update_state:
            self._window = store(self._window, window)
            self._right_max = store(self._right_max, right_max)
            self._right_acc = store(self._right_acc, right_acc)
            # Skew the new query's suffixes so that entry a (needed at step t + a) lands in column (t + a) % n.
            skew = torch.remainder(positions - phase, n)
            self._left_max = _write_slot(left_max_table, 2, phase, suffix_max.index_select(2, skew))
            self._left_acc = _write_slot(left_acc_table, 2, phase, suffix_acc.index_select(2, skew))
            # The index is saved for autograd's backward of index_copy/index_select: in place only without a graph.
            next_phase = torch.remainder(phase + 1, n)
            self._phase = store(self._phase, next_phase) if in_place_ok(window) else next_phase
            self._t = min(t + 1, n)  # saturates: only t >= n - 1 matters, and torch.compile sees one value
        return out


class SingleOutputMultiheadAttention(_StepAttention):
    """Continual Single-Output self-attention (Continual Transformers, Hedegaard et al., arXiv 2201.06268).

    ``forward(clip)`` is ``nn.MultiheadAttention`` self-attention over the clip for all ``T`` positions,
    ``(B, E, T) -> (B, E, T)`` (its output with ``need_weights=False``; no weights are returned).
    ``forward_step(step)`` takes ``(B, E)`` and returns ``None`` for the first ``n - 1`` steps (delay ``n - 1``,
    whatever ``query_index``); from then on the step at input index ``t`` returns ``(B, E)``: the output at
    position ``query_index`` of the window ``clip[:, :, t - n + 1 : t + 1]``,
    i.e. ``forward(window)[:, :, query_index]`` (the newest position for the default ``query_index=-1``).

    Per step: the in-projection of the new token (3 E^2 MACs), one query row against the window's keys and
    values, O(n d) per head, and the out-projection of one token (E^2). State: shift registers of the window's
    keys and values (and of the queries not yet answered when ``query_index`` is not the newest), O(n E).
    """

    _state_names = ("_keys", "_values", "_queries")

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        sequence_len: int,
        bias: bool = True,
        dropout: float = 0.0,
        query_index: int = -1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        embed_dim_second: bool = True,
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            sequence_len,
            bias=bias,
            dropout=dropout,
            device=device,
            dtype=dtype,
            embed_dim_second=embed_dim_second,
        )
        if not -sequence_len <= query_index < sequence_len:
            raise ValueError(
                f"SingleOutputMultiheadAttention: query_index must index the window of sequence_len="
                f"{sequence_len} positions, got {query_index}"
            )
        self.query_index = query_index

    @classmethod
    def _init_kwargs(cls, module: nn.MultiheadAttention, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"query_index": kwargs.get("query_index", getattr(module, "query_index", -1))}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, query_index={self.query_index}"

    def forward_step(
        self,
        step: Tensor,
        update_state: bool = True,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor | None:
        """Feed one step ``(B, E)``; return the selected window position's output ``(B, E)``, or ``None``."""
        self._check_step(step, attn_mask, key_padding_mask)
        query, key, value = self._project(step)
        n, t = self.sequence_len, self._t
        # Queries of the window positions from query_index to the newest: the selected one is the oldest.
        pending = n - self.query_index % n
        old_keys, old_values, old_queries = self._keys, self._values, self._queries
        if old_keys is None:  # a fresh stream: zeros stand for the unseen past (they only feed skipped outputs)
            old_keys, old_values = self._zeros(key, n, self.head_dim), self._zeros(key, n, self.head_dim)
            old_queries = self._zeros(key, pending - 1, self.head_dim) if pending > 1 else None
        keys = _push(old_keys, key, 2)
        values = _push(old_values, value, 2)
        queries = None
        if old_queries is None:
            selected = query
        else:
            queries = torch.cat([old_queries, query.unsqueeze(2)], 2)
            selected = queries[:, :, 0]

        out = None
        if t >= n - 1:
            heads = _attend_one(selected, keys, values)
            out = self.out_proj(heads.flatten(1))

        if update_state:
            self._keys = store(self._keys, keys)
            self._values = store(self._values, values)
            if queries is not None:
                self._queries = store(self._queries, queries[:, :, 1:])
            self._t = min(t + 1, n)  # saturates: only t >= n - 1 matters, and torch.compile sees one value
        return out


# --- conversion ---------------------------------------------------------------------------------------------
def _convert_mha(
    module: nn.MultiheadAttention,
    sequence_len: int | None = None,
    mode: str = "single_output",
    query_index: int = -1,
    **kwargs: Any,
) -> nn.Module:
    """``continual(nn.MultiheadAttention, sequence_len=n, mode="single_output"|"retroactive")``."""
    check_build_kwargs("continual(nn.MultiheadAttention)", kwargs)
    if sequence_len is None:
        raise ValueError(
            f"Converting {module!r} needs sequence_len, the number of steps its attention window spans: "
            "continual(module, sequence_len=n)"
        )
    if mode == "retroactive":
        return RetroactiveMultiheadAttention.build_from(module, sequence_len)
    if mode == "single_output":
        return SingleOutputMultiheadAttention.build_from(module, sequence_len, query_index=query_index)
    raise ValueError(f"mode for nn.MultiheadAttention must be one of {MHA_MODES}, got {mode!r}")


register(nn.MultiheadAttention, _convert_mha)
