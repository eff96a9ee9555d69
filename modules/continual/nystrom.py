"""Nyström self-attention and its continual twin (the Continual Nyströmformer).

Nyströmformer (Xiong et al., "Nyströmformer: A Nyström-based Algorithm for Approximating Self-Attention", AAAI
2021, arXiv 2102.03902) replaces the ``n x n`` softmax attention of ``n`` tokens by a product through ``m``
landmarks ``Q~, K~`` (means of ``m`` consecutive segments of the queries and keys)::

    softmax(Q K^T / sqrt(d)) V  ~  softmax(Q K~^T) . pinv(softmax(Q~ K~^T)) . softmax(Q~ K^T) V

with queries and keys each scaled by ``d ** -0.25`` and ``pinv`` the iterative Moore-Penrose approximation (six
iterations of Razavi et al.'s cubic scheme). Cost O(n m d) instead of O(n^2 d).

The continual version is from Carreto Picón, Oleksiienko, Hedegaard, Bakhtiarnia and Iosifidis, "Continual
Low-Rank Scaled Dot-product Attention" (arXiv 2412.03214, 2024; code: github.com/Atamarado/continual_nystrom, a
fork of CoOadTR on continual-inference 1.2.x), which builds on Continual Transformers (Hedegaard, Bakhtiarnia,
Iosifidis, ICLR 2023, arXiv 2201.06268). A step attends over the last ``n`` steps (``sequence_len``) and reuses
what earlier steps computed. Two landmark modes:

* **continual landmarks** (default): a landmark pair is the mean of ``p = n // m`` consecutive steps' queries and
  keys. Every ``p`` steps the newest complete segment becomes a landmark and the oldest landmark is dropped, so on
  those *refresh steps* (input index ``t`` with ``(t + 1) % p == 0``) the landmarks are exactly the segment means
  of the window and the step output equals ``forward`` of the window (to float rounding). On the ``p - 1`` steps
  in between, the window has moved on but the landmarks are those of the last refresh step: the output is the
  Nyström attention of the current window through the landmarks of the window that ended at the last refresh
  (``ContinualNystromAttention.stream_landmarks`` gives them for every window of a clip). ``n % m == 0`` is
  required in this mode (the original's continual attention requires it too).
* **fixed landmarks**: ``m`` landmark pairs are buffers (set by k-means over training queries and keys, see
  ``modules.systems.landmarks``, or loaded from a checkpoint); every step output equals ``forward`` of its window.

What the step keeps: the window's keys and values (shift registers, O(n E)), the ``m`` landmark rows, the
``m x m`` middle kernel, and per landmark row the softmax aggregates of ``softmax(Q~ K^T) V``. Like the core's
retroactive attention (``attention.py``), nothing is ever subtracted: each landmark row splits the window's keys
into those present when the row was (re)computed (suffix aggregates from one parallel scan, O(n d log n)) and those
that arrived later (a running online-softmax aggregate). Rows are recomputed round-robin, one every ``p`` steps
(fixed landmarks too: that is what lets a key leave the window without a subtraction), so a step costs
O(m d) for the running aggregates, the new query row and the product, plus O(n d log n / p) amortised, instead of
the O(n m d) of recomputing the attention. The retroactive mode (all ``n`` outputs per step, for the first of
two layers) also recomputes the ``n x m`` query kernel, O(n m d) per step.

Quirks of the original code, and what is done here instead (the experiment configs say which apply):

* The original's attention has no projections: ``W_q/W_k/W_v`` are plain Python lists (never registered, never
  trained) and its ``prepare_input`` returns the raw tokens, so queries, keys and values are the layer input
  itself, one head over the whole embedding (scale ``E ** -0.5``), and no output projection; the
  ``nn.MultiheadAttention`` parameters it inherits are never used. ``projections=False`` computes exactly that
  (and creates no unused parameters); ``projections=True`` adds ``nn.MultiheadAttention``'s in/out projections
  (keys ``in_proj_weight``, ``in_proj_bias``, ``out_proj.*``) and heads.
* Its offline attention with segment-mean landmarks skips the pseudo-inverse (``kernel_2`` is the softmax itself),
  while its continual step and its fixed landmarks invert: ``pseudo_inverse=False`` reproduces the former for
  segment-mean landmarks; fixed landmarks always use the pseudo-inverse (so a checkpoint's ``landmarks_fixed``
  decides it).
* Its pseudo-inverse scales by the largest row/column sums of the whole batch, so a stream's output depends on
  the other streams of its batch; here each matrix is scaled by its own sums.
* Its fixed landmarks are k-means centres of the unscaled tokens, compared with queries and keys scaled by
  ``E ** -0.25`` (and ``softmax(Q~ K~^T)`` unscaled): here landmarks live in the space of the queries and keys and
  are scaled like them, so fixed and segment-mean landmarks are interchangeable.
* Its continual step with fixed landmarks multiplies by ``softmax(Q~ K~^T)`` without the inverse its offline path
  uses, and only ``forward`` was ever used to train and evaluate; here steps and ``forward`` compute the same.
* With ``m >= n`` it falls back to exact softmax attention (kept for ``forward``; the continual module rejects it).

Layout is channels first like the core: clips ``(B, E, T)``, steps ``(B, E)``. There is no attention dropout
(the original skips it as well).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .attention import MHA_MODES, _merge, _push, _suffix_scan
from .base import StatefulModule, store
from .transformer import TransformerEncoderLayer

__all__ = [
    "ContinualNystromAttention",
    "NystromAttention",
    "NystromTransformerEncoderLayer",
    "iterative_pinv",
    "nystrom_attention",
    "segment_means",
]

Landmarks = tuple[Tensor, Tensor]
TokensHook = Callable[["NystromAttention", Tensor], None]


# --- functional ---------------------------------------------------------------------------------------------
def segment_means(x: Tensor, num_segments: int) -> Tensor:
    """Means of ``num_segments`` consecutive segments of dim -2: ``(..., n, d) -> (..., m, d)``.

    When ``m`` does not divide ``n`` the first ``n % m`` segments hold one token more (as the original's
    ``get_landmarks``).
    """
    n, m = x.shape[-2], num_segments
    if not 1 <= m <= n:
        raise ValueError(f"segment_means: need 1 <= num_segments <= {n} tokens, got {m}")
    size, extra = divmod(n, m)
    if extra == 0:
        return x.unflatten(-2, (m, size)).mean(-2)
    split = (size + 1) * extra
    longer = x[..., :split, :].unflatten(-2, (extra, size + 1)).mean(-2)
    return torch.cat([longer, x[..., split:, :].unflatten(-2, (m - extra, size)).mean(-2)], -2)


def iterative_pinv(matrix: Tensor, iterations: int = 6) -> Tensor:
    """Approximate Moore-Penrose pseudo-inverse of each ``(..., m, m)`` matrix (Nyströmformer's iteration).

    ``V_0 = M^T / (max column sum * max row sum)`` per matrix, then ``V <- V/4 (13 I - MV (15 I - MV (7 I - MV)))``.
    """
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    magnitude = matrix.abs()
    scale = magnitude.sum(-2).amax(-1) * magnitude.sum(-1).amax(-1)
    inverse = matrix.transpose(-1, -2) / scale[..., None, None]
    for _ in range(iterations):
        product = matrix @ inverse
        inverse = 0.25 * inverse @ (13 * eye - product @ (15 * eye - product @ (7 * eye - product)))
    return inverse


def middle_kernel(q_landmarks: Tensor, k_landmarks: Tensor, pseudo_inverse: bool, iterations: int = 6) -> Tensor:
    """``pinv(softmax(Q~ K~^T))`` (or the softmax itself without ``pseudo_inverse``), landmarks pre-scaled."""
    kernel = torch.softmax(q_landmarks @ k_landmarks.transpose(-1, -2), -1)
    return iterative_pinv(kernel, iterations) if pseudo_inverse else kernel


def nystrom_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    q_landmarks: Tensor,
    k_landmarks: Tensor,
    pseudo_inverse: bool = True,
    iterations: int = 6,
) -> Tensor:
    """``softmax(Q K~^T) . pinv(softmax(Q~ K~^T)) . softmax(Q~ K^T) V``; queries, keys and landmarks pre-scaled
    by ``d ** -0.25``. Shapes ``(..., Tq, d)``, ``(..., n, d)``, ``(..., n, dv)``, landmarks ``(..., m, d)``."""
    kernel_1 = torch.softmax(query @ k_landmarks.transpose(-1, -2), -1)
    kernel_3 = torch.softmax(q_landmarks @ key.transpose(-1, -2), -1)
    middle = middle_kernel(q_landmarks, k_landmarks, pseudo_inverse, iterations)
    return (kernel_1 @ middle) @ (kernel_3 @ value)


# --- offline ------------------------------------------------------------------------------------------------
class NystromAttention(nn.Module):
    """Nyström self-attention over a clip (Xiong et al., arXiv 2102.03902), as the Continual Nyströmformer's.

    ``forward(clip (B, E, T)) -> (B, E, T)``; ``attend(tokens (B, T, E)) -> (B, T, E)`` and ``attend_last(tokens)
    -> (B, E)`` (the newest position only; landmarks still from all tokens) for encoder layers. See the module
    docstring for ``projections``, ``pseudo_inverse`` (segment-mean landmarks only: fixed ones always invert) and
    the landmark modes. ``set_landmarks`` fixes the
    landmarks (buffers ``q_landmarks``/``k_landmarks`` of shape ``(H, m, d)`` in the space of the unscaled
    queries and keys, and the flag ``landmarks_fixed``, all in the ``state_dict``); ``release_landmarks`` returns
    to segment means. ``register_tokens_hook(fn)`` calls ``fn(module, tokens)`` with the attention input of every
    ``attend``/``attend_last`` call (how ``modules.systems.landmarks`` samples queries and keys).
    """

    #: No attention dropout (the original skips it); read by the encoder layer's step checks.
    dropout: float = 0.0

    def __init__(
        self,
        embed_dim: int,
        num_heads: int = 1,
        num_landmarks: int = 8,
        *,
        projections: bool = True,
        bias: bool = True,
        pseudo_inverse: bool = True,
        pinv_iterations: int = 6,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if embed_dim % num_heads:
            raise ValueError(f"{name}: embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        if not projections and num_heads != 1:
            raise ValueError(
                f"{name}: without projections the attention has one head over the whole embedding (as the "
                f"original); got num_heads={num_heads}. Use num_heads=1 or projections=True."
            )
        if num_landmarks < 1:
            raise ValueError(f"{name}: num_landmarks must be >= 1, got {num_landmarks}")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.num_landmarks = num_landmarks
        self.projections = projections
        self.pseudo_inverse = pseudo_inverse
        self.pinv_iterations = pinv_iterations
        if projections:  # nn.MultiheadAttention's names and initialisation
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim, **factory)) if bias else None
            self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
            nn.init.xavier_uniform_(self.in_proj_weight)
            if bias:
                nn.init.zeros_(self.out_proj.bias)
        shape = (num_heads, num_landmarks, self.head_dim)
        self.register_buffer("q_landmarks", torch.zeros(shape, **factory))
        self.register_buffer("k_landmarks", torch.zeros(shape, **factory))
        self.register_buffer("landmarks_fixed", torch.zeros((), dtype=torch.bool, device=device))
        #: Host mirror of ``landmarks_fixed`` (read on every call without a device sync).
        self.fixed_landmarks = False
        self.register_load_state_dict_post_hook(_sync_fixed_flag)
        self._tokens_hooks: OrderedDict[int, TokensHook] = OrderedDict()

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_landmarks={self.num_landmarks}, "
            f"projections={self.projections}, pseudo_inverse={self.pseudo_inverse}, "
            f"fixed_landmarks={self.fixed_landmarks}"
        )

    # --- landmarks -------------------------------------------------------------------------------------------
    def set_landmarks(self, q_landmarks: Tensor, k_landmarks: Tensor) -> None:
        """Fix the landmarks: ``(H, m, d)`` (or ``(m, d)`` with one head) in the unscaled query/key space."""
        shape = tuple(self.q_landmarks.shape)
        with torch.no_grad():
            for buffer, value, what in ((self.q_landmarks, q_landmarks, "q"), (self.k_landmarks, k_landmarks, "k")):
                value = value.unsqueeze(0) if value.dim() == 2 and self.num_heads == 1 else value
                if tuple(value.shape) != shape:
                    raise ValueError(
                        f"{type(self).__name__}.set_landmarks: {what}_landmarks must be (heads, landmarks, head_dim)"
                        f" = {shape}, got {tuple(value.shape)}"
                    )
                buffer.copy_(value)
            self.landmarks_fixed.fill_(True)
        self.fixed_landmarks = True

    def release_landmarks(self) -> None:
        """Return to segment-mean landmarks (the buffers keep their values but are unused)."""
        with torch.no_grad():
            self.landmarks_fixed.fill_(False)
        self.fixed_landmarks = False

    def register_tokens_hook(self, hook: TokensHook) -> RemovableHandle:
        """Call ``hook(module, tokens (B, T, E))`` with the attention input of every ``attend``/``attend_last``."""
        handle = RemovableHandle(self._tokens_hooks)
        self._tokens_hooks[handle.id] = hook
        return handle

    # --- pieces ------------------------------------------------------------------------------------------------
    def project(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Unscaled queries, keys and values ``(B, H, T, d)`` of batch-first tokens ``(B, T, E)``."""
        if not self.projections:
            x = tokens.unsqueeze(1)
            return x, x, x
        qkv = F.linear(tokens, self.in_proj_weight, self.in_proj_bias)
        query, key, value = qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        return query, key, value

    def merge_heads(self, heads: Tensor) -> Tensor:
        """``(B, H, T, d) -> (B, T, E)``, then the output projection if there is one."""
        out = heads.transpose(1, 2).flatten(2)
        return self.out_proj(out) if self.projections else out

    @property
    def uses_pseudo_inverse(self) -> bool:
        """Whether the middle factor is inverted: always with fixed landmarks, else as ``pseudo_inverse`` says."""
        return self.pseudo_inverse or self.fixed_landmarks

    def window_landmarks(self, query: Tensor, key: Tensor) -> Landmarks:
        """The landmarks of a window of unscaled queries/keys ``(B, H, n, d)``: fixed ones, or segment means."""
        if self.fixed_landmarks:
            return self.q_landmarks, self.k_landmarks
        return segment_means(query, self.num_landmarks), segment_means(key, self.num_landmarks)

    def _attention(
        self, rows: Tensor, query: Tensor, key: Tensor, value: Tensor, landmarks: Landmarks | None
    ) -> Tensor:
        """Attention of the query ``rows`` over a window (all unscaled, ``(B, H, ., d)``) -> ``(B, H, rows, d)``."""
        scale = self.head_dim**-0.25
        if self.num_landmarks >= key.shape[-2]:  # the original's fallback: exact softmax attention
            return torch.softmax((rows * scale) @ (key * scale).transpose(-1, -2), -1) @ value
        q_landmarks, k_landmarks = self.window_landmarks(query, key) if landmarks is None else landmarks
        return nystrom_attention(
            rows * scale,
            key * scale,
            value,
            q_landmarks * scale,
            k_landmarks * scale,
            self.uses_pseudo_inverse,
            self.pinv_iterations,
        )

    def _check_tokens(self, tokens: Tensor, what: str) -> None:
        if tokens.dim() != 3 or tokens.shape[-1] != self.embed_dim:
            raise ValueError(
                f"{type(self).__name__}.{what} expects batch-first tokens (B, T, E={self.embed_dim}), "
                f"got {tuple(tokens.shape)}"
            )
        for hook in self._tokens_hooks.values():
            hook(self, tokens)

    # --- offline -----------------------------------------------------------------------------------------------
    def attend(
        self,
        tokens: Tensor,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        landmarks: Landmarks | None = None,
    ) -> Tensor:
        """Self-attention of batch-first tokens ``(B, T, E) -> (B, T, E)``; ``landmarks`` overrides the window's
        (unscaled ``(B, H, m, d)`` or ``(H, m, d)`` pairs)."""
        if attn_mask is not None or key_padding_mask is not None:
            raise ValueError(f"{type(self).__name__} has no attention masks (nor has the original's Nyström attention)")
        self._check_tokens(tokens, "attend")
        query, key, value = self.project(tokens)
        return self.merge_heads(self._attention(query, query, key, value, landmarks))

    def attend_last(self, tokens: Tensor, landmarks: Landmarks | None = None) -> Tensor:
        """``attend(tokens)[:, -1]`` computing the newest query row only: ``(B, T, E) -> (B, E)``."""
        self._check_tokens(tokens, "attend_last")
        query, key, value = self.project(tokens)
        return self.merge_heads(self._attention(query[:, :, -1:], query, key, value, landmarks))[:, 0]

    def forward(self, clip: Tensor) -> Tensor:
        """Self-attention over the whole clip, ``(B, E, T) -> (B, E, T)``."""
        if clip.dim() != 3 or clip.shape[1] != self.embed_dim:
            raise ValueError(
                f"{type(self).__name__}.forward expects a clip (B, E={self.embed_dim}, T), got {tuple(clip.shape)}"
            )
        return self.attend(clip.transpose(1, 2)).transpose(1, 2)


def _sync_fixed_flag(module: nn.Module, incompatible_keys: Any) -> None:
    """After ``load_state_dict``: the host mirror follows the loaded ``landmarks_fixed`` (one sync, at load)."""
    module.fixed_landmarks = bool(module.landmarks_fixed)
    if isinstance(module, StatefulModule):
        module.clean_state()


# --- continual ----------------------------------------------------------------------------------------------
class ContinualNystromAttention(StatefulModule, NystromAttention):
    """Continual Nyström self-attention over a sliding window of ``sequence_len`` steps (Carreto Picón et al.,
    arXiv 2412.03214; see the module docstring for what a step computes in each landmark mode).

    ``forward`` and ``attend`` are ``NystromAttention``'s (the window's own landmarks). ``forward_step(step (B, E))``
    returns ``None`` for the first ``n - 1`` steps (delay ``n - 1``), then for the window of the last ``n`` steps:
    ``(B, E)``, the newest position (``mode="single_output"``), or ``(B, E, n)``, all positions oldest first
    (``mode="retroactive"``). With fixed landmarks that is ``forward(window)`` (the newest position, or all);
    with continual landmarks it is the attention of the window through ``stream_landmarks``' landmarks, which
    are the window's own on refresh steps. ``forward_steps`` stacks the step outputs on dim 2.
    """

    _state_names = (
        "_keys",
        "_values",
        "_queries",
        "_segment",
        "_rows",
        "_kernel",
        "_left_max",
        "_left_acc",
        "_right_max",
        "_right_acc",
    )

    def __init__(
        self,
        embed_dim: int,
        num_heads: int = 1,
        num_landmarks: int = 8,
        *,
        sequence_len: int,
        mode: str = "single_output",
        projections: bool = True,
        bias: bool = True,
        pseudo_inverse: bool = True,
        pinv_iterations: int = 6,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        NystromAttention.__init__(
            self,
            embed_dim,
            num_heads,
            num_landmarks,
            projections=projections,
            bias=bias,
            pseudo_inverse=pseudo_inverse,
            pinv_iterations=pinv_iterations,
            device=device,
            dtype=dtype,
        )
        name = type(self).__name__
        if not isinstance(sequence_len, int) or sequence_len < 2:
            raise ValueError(f"{name}: sequence_len must be an int >= 2, got {sequence_len!r}")
        if num_landmarks >= sequence_len:
            raise ValueError(
                f"{name}: num_landmarks={num_landmarks} >= sequence_len={sequence_len} is exact softmax attention "
                "(the original's fallback): use co.SingleOutputMultiheadAttention / RetroactiveMultiheadAttention"
            )
        self.sequence_len = sequence_len
        self.mode = mode
        self._index_cache: dict[tuple[int, torch.device], Tensor] = {}
        self._init_state_attrs()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MHA_MODES:
            raise ValueError(f"{type(self).__name__}: mode must be one of {MHA_MODES}, got {mode!r}")
        self.__dict__["_mode"] = mode
        self.clean_state()

    @property
    def receptive_field(self) -> int:
        return self.sequence_len

    @property
    def refresh_period(self) -> int:
        """Steps between landmark-row refreshes: ``n // m``."""
        return self.sequence_len // self.num_landmarks

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sequence_len={self.sequence_len}, mode={self.mode!r}"

    def set_landmarks(self, q_landmarks: Tensor, k_landmarks: Tensor) -> None:
        super().set_landmarks(q_landmarks, k_landmarks)
        self.clean_state()

    def release_landmarks(self) -> None:
        super().release_landmarks()
        self.clean_state()

    # --- the landmarks a step uses ------------------------------------------------------------------------------
    def _check_continual(self) -> None:
        if not self.fixed_landmarks and self.sequence_len % self.num_landmarks:
            raise ValueError(
                f"{type(self).__name__}: continual landmarks need num_landmarks to divide sequence_len (each "
                f"landmark is a segment of n // m steps); got n={self.sequence_len}, m={self.num_landmarks}. "
                "Choose a divisor of sequence_len, or fix the landmarks (set_landmarks)."
            )

    def stream_landmarks(self, tokens: Tensor, start: int = 0, stop: int | None = None) -> Landmarks:
        """The landmarks the steps use for the windows ``start .. stop - 1`` of batch-first tokens ``(B, T, E)``
        fed from a clean state (window ``w`` ends at step ``n - 1 + w``; all ``T - n + 1`` by default):
        ``(B, W, H, m, d)`` unscaled queries and keys. Continual mode: the ``m`` segment means that end at the
        last refresh step ``<= n - 1 + w``, oldest first; fixed mode: the fixed landmarks."""
        n, m, length = self.sequence_len, self.num_landmarks, tokens.shape[1]
        if length < n:
            raise ValueError(f"{type(self).__name__}.stream_landmarks needs at least n={n} tokens, got {length}")
        stop = length - n + 1 if stop is None else min(stop, length - n + 1)
        if self.fixed_landmarks:
            shape = (tokens.shape[0], max(stop - start, 0), *self.q_landmarks.shape)
            return self.q_landmarks.expand(shape), self.k_landmarks.expand(shape)
        self._check_continual()
        p = self.refresh_period
        # Segment r covers steps r p .. r p + p - 1 and becomes a landmark at step r p + p - 1; window w needs
        # segments up to the last one complete at its end, m of them.
        ends = torch.arange(n - 1 + start, n - 1 + stop, device=tokens.device)
        last = torch.div(ends + 1, p, rounding_mode="floor") - 1
        first = int(last[0]) - m + 1 if len(last) else 0
        segments = (int(last[-1]) + 1 - first) if len(last) else 0
        query, key, _ = self.project(tokens[:, first * p : (first + segments) * p])  # (B, H, segments p, d)
        index = last[:, None] - m + 1 - first + torch.arange(m, device=tokens.device)  # (W, m), oldest first
        return tuple(  # type: ignore[return-value]
            x.unflatten(2, (segments, p)).mean(3)[:, :, index].permute(0, 2, 1, 3, 4) for x in (query, key)
        )

    # --- stepping ----------------------------------------------------------------------------------------------
    def _fresh_state(self, like: Tensor) -> tuple[Tensor, ...]:
        """Zero state for a new stream; zeros stand for the unseen past (they only feed skipped outputs)."""
        batch, heads, d, m, n = like.shape[0], self.num_heads, self.head_dim, self.num_landmarks, self.sequence_len

        def zeros(*size: int) -> Tensor:
            return like.new_zeros(batch, heads, *size)

        return (
            zeros(n, d),  # keys (scaled), oldest first
            zeros(n, d),  # values
            zeros(n, d) if self.mode == "retroactive" else zeros(0, d),  # queries (scaled), retroactive only
            zeros(2 * d),  # running sum of the current segment's scaled queries and keys (continual landmarks)
            zeros(m, 2 * d),  # landmark rows: scaled query and key landmark per slot
            zeros(m, m),  # middle kernel pinv(softmax(Q~ K~^T))
            zeros(m, n, 1).fill_(float("-inf")),  # per row: suffix aggregates of the keys seen at its refresh
            zeros(m, n, d + 1),
            zeros(m, 1).fill_(float("-inf")),  # per row: aggregate of the keys that arrived after its refresh
            zeros(m, d + 1),
        )

    def _ages(self, t: int, device: torch.device) -> Tensor:
        """Steps since each slot's last refresh, at step ``t`` (a device tensor cached per phase)."""
        p, m = self.refresh_period, self.num_landmarks
        key = (t % (m * p), device)
        cached = self._index_cache.get(key)
        if cached is None:
            last = (t + 1) // p - 1  # index of the last refresh; refresh r fills slot r % m at step r p + p - 1
            births = [(last - (last - slot) % m + 1) * p - 1 for slot in range(m)]
            cached = torch.tensor([t - b for b in births], device=device)
            self._index_cache[key] = cached
        return cached

    def _check_step(self, step: Tensor) -> None:
        name = type(self).__name__
        if step.dim() != 2 or step.shape[1] != self.embed_dim:
            raise ValueError(f"{name}.forward_step expects a step (B, E={self.embed_dim}), got {tuple(step.shape)}")
        if self._keys is not None and self._keys.shape[0] != step.shape[0]:
            raise ValueError(
                f"{name}.forward_step got batch size {step.shape[0]} but its state holds {self._keys.shape[0]} "
                "streams: call clean_state() before starting streams of another batch size."
            )
        self._check_continual()

    def _step(self, step: Tensor) -> Tensor | None:
        self._check_step(step)
        n, m, p, d, t = self.sequence_len, self.num_landmarks, self.refresh_period, self.head_dim, self._t
        scale = d**-0.25
        query, key, value = (x[:, :, 0] for x in self.project(step.unsqueeze(1)))  # (B, H, d)
        query, key = query * scale, key * scale
        state = self._fresh_state(value) if self._keys is None else tuple(getattr(self, s) for s in self._state_names)
        old_keys, old_values, old_queries, segment, rows, kernel, left_max, left_acc, right_max, right_acc = state
        keys, values = _push(old_keys, key, 2), _push(old_values, value, 2)
        queries = _push(old_queries, query, 2) if self.mode == "retroactive" else old_queries
        value_one = torch.cat([value, torch.ones_like(value[..., :1])], -1)

        # Every landmark row absorbs the new key (online softmax, nothing subtracted).
        right_max, right_acc = _merge(
            right_max, right_acc, rows[..., :d] @ key.unsqueeze(-1), value_one.unsqueeze(2).expand_as(right_acc)
        )
        if not self.fixed_landmarks:
            segment = segment + torch.cat([query, key], -1)
        if (t + 1) % p == 0:  # refresh one row: slot r % m for the r-th refresh
            slot = ((t + 1) // p - 1) % m
            if self.fixed_landmarks:
                landmark = torch.cat([self.q_landmarks[:, slot], self.k_landmarks[:, slot]], -1) * scale
                landmark = landmark.expand(key.shape[0], -1, -1)
            else:
                landmark, segment = segment / p, torch.zeros_like(segment)
            rows = _put(rows, slot, landmark)
            window_values = torch.cat([values, torch.ones_like(values[..., :1])], -1)
            suffix_max, suffix_acc = _suffix_scan(keys @ landmark[..., :d].unsqueeze(-1), window_values)
            left_max, left_acc = _put(left_max, slot, suffix_max), _put(left_acc, slot, suffix_acc)
            right_max = _put(right_max, slot, torch.full_like(right_max[:, :, 0], float("-inf")))
            right_acc = _put(right_acc, slot, torch.zeros_like(right_acc[:, :, 0]))
            kernel = middle_kernel(rows[..., :d], rows[..., d:], self.uses_pseudo_inverse, self.pinv_iterations)

        out = None
        if t >= n - 1:
            ages = self._ages(t, key.device)
            index = ages.view(1, 1, m, 1, 1)
            seen_max = left_max.gather(3, index.expand(*left_max.shape[:3], 1, 1)).squeeze(3)
            seen_acc = left_acc.gather(3, index.expand(*left_acc.shape[:3], 1, d + 1)).squeeze(3)
            _, acc = _merge(seen_max, seen_acc, right_max, right_acc)
            rows_out = acc[..., :-1] / acc[..., -1:]  # softmax(Q~ K^T) V per landmark row, (B, H, m, d)
            asking = query.unsqueeze(2) if self.mode == "single_output" else queries
            beta = torch.softmax(asking @ rows[..., d:].transpose(-1, -2), -1)
            merged = self.merge_heads((beta @ kernel) @ rows_out)  # (B, 1 or n, E)
            out = merged[:, 0] if self.mode == "single_output" else merged.transpose(1, 2)

        new = (keys, values, queries, segment, rows, kernel, left_max, left_acc, right_max, right_acc)
        for name, value_ in zip(self._state_names, new):
            setattr(self, name, store(getattr(self, name), value_))
        cycle = m * p  # the refresh pattern repeats every m p steps: keep the counter small
        self._t = t + 1 if t + 1 < n - 1 + cycle else t + 1 - cycle
        return out


def _put(table: Tensor, slot: int, value: Tensor) -> Tensor:
    """``table`` with ``value`` in slot ``slot`` of dim 2 (out of place: the state may be saved for autograd)."""
    return torch.cat([table[:, :, :slot], value.unsqueeze(2), table[:, :, slot + 1 :]], 2)


# --- encoder layer ------------------------------------------------------------------------------------------
class NystromTransformerEncoderLayer(TransformerEncoderLayer):
    """The core's continual ``TransformerEncoderLayer`` with ``ContinualNystromAttention`` as ``self_attn``.

    Same residuals, norms (post-norm by default, as the original), feed-forward and step protocol; ``mode``
    ``"single_output"`` or ``"retroactive"`` as in the core (``co.TransformerEncoder`` sets it). Extra arguments:
    ``num_landmarks``, ``projections``, ``pseudo_inverse`` (see ``ContinualNystromAttention``). ``forward_tokens``
    and ``forward_last_token`` take optional ``landmarks`` for the attention (the continual nets pass the ones
    their steps use).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Any = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        *,
        sequence_len: int,
        num_landmarks: int = 8,
        projections: bool = True,
        pseudo_inverse: bool = True,
        bias: bool = True,
        mode: str = "single_output",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            d_model,
            nhead,
            dim_feedforward,
            dropout,
            activation,
            layer_norm_eps,
            norm_first,
            sequence_len=sequence_len,
            bias=bias,
            mode=mode,
            device=device,
            dtype=dtype,
        )
        self.self_attn = ContinualNystromAttention(  # type: ignore[assignment]
            d_model,
            nhead if projections else 1,
            num_landmarks,
            sequence_len=sequence_len,
            mode=mode,
            projections=projections,
            bias=bias,
            pseudo_inverse=pseudo_inverse,
            device=device,
            dtype=dtype,
        )

    def set_mode(self, mode: str) -> None:
        self.self_attn.mode = mode
        self.mode = mode
        self.clean_state()

    def forward_tokens(
        self,
        tokens: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        landmarks: Landmarks | None = None,
    ) -> Tensor:
        attended = self.self_attn.attend(self._attention_input(tokens), src_mask, src_key_padding_mask, landmarks)
        return self._finish(tokens, attended)

    def forward_last_token(self, tokens: Tensor, landmarks: Landmarks | None = None) -> Tensor:
        attended = self.self_attn.attend_last(self._attention_input(tokens), landmarks)
        return self._finish(tokens[:, -1], attended)

    @classmethod
    def build_from(cls, module: nn.Module, sequence_len: int, mode: str = "single_output", **kwargs: Any) -> Any:
        raise TypeError(
            "NystromTransformerEncoderLayer has no nn counterpart to convert from: build it directly "
            "(its attention approximates softmax attention, so nn weights would not compute the same function)"
        )
