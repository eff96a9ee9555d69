"""Fixed Nyström landmarks: k-means over training queries and keys, then per-layer fine-tuning.

The recipe of the Continual Nyströmformer (Carreto Picón, Oleksiienko, Hedegaard, Bakhtiarnia & Iosifidis,
"Continual Low-Rank Scaled Dot-product Attention", arXiv 2412.03214; github.com/Atamarado/continual_nystrom,
``CoOadTR/main.py``: ``fix_landmarks``, ``train_fixed_landmarks``, ``--fit_layer_epochs``, ``--freeze_weights``):

1. train as usual for ``--epochs``;
2. for each layer ``l`` in turn (``fit_layer_epochs = [5]`` for one layer, ``[5, 5]`` for two): run the training
   set once through the net, sample 50,000 of the tokens that enter layer ``l``'s attention as queries and, apart,
   50,000 as keys (each batch contributes an equal share), cluster each set with k-means (10 attempts, seeded;
   the original used ``sklearn.cluster.KMeans(n_init=10, random_state=seed)``), fix the layer's landmarks to the
   centres (and compute the pseudo-inverse of their kernel), optionally freeze what computes those tokens
   (``freeze_weights``), and train ``fit_layer_epochs[l]`` more epochs.

``freeze_weights`` is ``true`` or ``false`` here; the original's ``both`` trains once, then runs the fixed-landmark
phase twice from the same checkpoint (freezing, then not): here that is two runs (e.g. a multirun over
``callbacks.landmarks.freeze_weights=true,false``). The fine-tuning epochs continue the optimiser and learning-rate
schedule of the run, as in the original; with CoOadTR's ``StepLR(step=1, gamma=0.1)`` after 4 epochs at 1e-4 they
run at 1e-8 and below, so the fixed-landmark scores are essentially those of the k-means landmarks on the trained
net.

Differences from the original, by design: the tokens are collected in eval mode (the original ran the input
encoding in training mode, with dropout), and with attention projections the queries and keys are the projected
ones (the original's attention has none: its queries and keys are the layer input).

``LandmarkFitting`` is the Lightning callback (``configs/callbacks/landmarks.yaml``); ``fit_landmarks``,
``kmeans`` and ``freeze_before_landmarks`` are the pieces, usable without Lightning. A net qualifies by two
methods: ``landmark_attentions()`` (its ``NystromAttention``s, first layer first) and
``parameters_before_landmarks(index)`` (what freezing layer ``index`` freezes); the Nyström nets of
``modules.nets.transformer.nystrom`` have them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from ..continual.nystrom import NystromAttention

__all__ = ["LandmarkFitting", "collect_queries_keys", "fit_landmarks", "freeze_before_landmarks", "kmeans"]


# --- k-means ------------------------------------------------------------------------------------------------
def _squared_distances(points: Tensor, centres: Tensor) -> Tensor:
    """``(N, d) x (k, d) -> (N, k)`` squared Euclidean distances (clamped at 0 against rounding)."""
    cross = points @ centres.T
    return (points.pow(2).sum(1, keepdim=True) - 2 * cross + centres.pow(2).sum(1)).clamp_min_(0)


def _kmeans_plus_plus(points: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): each next centre drawn with probability ~ D(x)^2."""
    first = torch.randint(len(points), (1,), generator=generator, device=points.device)
    centres = points[first]
    closest = _squared_distances(points, centres).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than clusters: any point will do
            pick = torch.randint(len(points), (1,), generator=generator, device=points.device)
        else:
            pick = torch.multinomial(closest / total, 1, generator=generator)
        centres = torch.cat([centres, points[pick]])
        closest = torch.minimum(closest, _squared_distances(points, points[pick]).squeeze(1))
    return centres


def _lloyd(points: Tensor, centres: Tensor, max_iter: int, tol: float) -> tuple[Tensor, float]:
    """Lloyd iterations until the centres move less than ``tol`` (squared, summed); returns centres, inertia."""
    for _ in range(max_iter):
        assignment = _squared_distances(points, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=len(centres)).to(points.dtype)
        moved = sums / counts.clamp_min(1).unsqueeze(1)
        empty = counts == 0
        if empty.any():  # an empty cluster restarts at the points farthest from their centres
            far = _squared_distances(points, moved).min(1).values.topk(int(empty.sum())).indices
            moved[empty] = points[far]
        shift = float((moved - centres).pow(2).sum())
        centres = moved
        if shift <= tol:
            break
    inertia = float(_squared_distances(points, centres).min(1).values.sum())
    return centres, inertia


def kmeans(
    points: Tensor, num_clusters: int, *, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4, seed: int = 0
) -> Tensor:
    """Centres ``(k, d)`` of ``points (N, d)``: the best of ``n_init`` k-means++-seeded Lloyd runs by inertia.

    ``tol`` is relative to the points' mean per-feature variance, as in scikit-learn (whose defaults these are);
    the result depends only on ``seed`` (a ``torch.Generator``), not on the global random state.
    """
    if points.dim() != 2 or len(points) < num_clusters:
        raise ValueError(f"kmeans needs points (N >= {num_clusters}, d), got {tuple(points.shape)}")
    points = points.detach().float()
    generator = torch.Generator(device=points.device).manual_seed(seed)
    threshold = tol * float(points.var(0).mean()) if len(points) > 1 else 0.0
    best, best_inertia = None, math.inf
    for _ in range(n_init):
        centres, inertia = _lloyd(points, _kmeans_plus_plus(points, num_clusters, generator), max_iter, threshold)
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    assert best is not None
    return best


# --- collecting queries and keys ----------------------------------------------------------------------------
def _shares(total: int, parts: int, rng: random.Random) -> list[int]:
    """``total`` split into ``parts`` near-equal integers in random order (the original's split_number_in_list)."""
    base, extra = divmod(total, parts)
    shares = [base + 1] * extra + [base] * (parts - extra)
    rng.shuffle(shares)
    return shares


def _net_of(module: nn.Module) -> nn.Module:
    net = getattr(module, "net", module)
    if not (hasattr(net, "landmark_attentions") and hasattr(net, "parameters_before_landmarks")):
        raise TypeError(
            f"{type(net).__name__} has no Nyström landmarks to fit: the net needs landmark_attentions() and "
            "parameters_before_landmarks(index) (the nystromformer_* / conystromformer_* nets have them)"
        )
    return net


@torch.no_grad()
def collect_queries_keys(
    net: nn.Module,
    attention: NystromAttention,
    batches: Iterable[Tensor],
    num_batches: int,
    *,
    num_points: int = 50_000,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Sample the unscaled queries and keys ``(H, N, d)`` that ``attention`` sees while ``net`` runs on ``batches``
    (feature clips; ``num_batches`` of them, each contributing ``num_points / num_batches`` queries and as many
    keys, drawn apart). ``num_points <= 0`` keeps every token. The net runs in eval mode; its mode is restored."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    shares = _shares(num_points, max(num_batches, 1), rng) if num_points > 0 else None
    captured: list[Tensor] = []

    def capture(module: NystromAttention, tokens: Tensor) -> None:
        query, key, _ = module.project(tokens)  # (B, H, T, d)
        captured.append(torch.stack([query, key]).transpose(1, 2).flatten(2, 3).cpu())  # (2, H, B T, d)

    handle = attention.register_tokens_hook(capture)
    was_training = net.training
    net.eval()
    samples: list[Tensor] = []
    try:
        for index, clip in enumerate(batches):
            if shares is not None and index >= len(shares):
                break
            captured.clear()
            net(clip)
            if not captured:
                raise RuntimeError(f"{type(attention).__name__} was not called while {type(net).__name__} ran")
            tokens = torch.cat(captured, 2)  # (2, H, N, d)
            if shares is not None:
                count = tokens.shape[2]
                picks = [torch.randperm(count, generator=generator)[: shares[index]] for _ in range(2)]
                tokens = torch.stack([tokens[0][:, picks[0]], tokens[1][:, picks[1]]])
            samples.append(tokens)
    finally:
        handle.remove()
        net.train(was_training)
    if not samples:
        raise ValueError("collect_queries_keys got no batches")
    queries, keys = torch.cat(samples, 2)
    return queries, keys


def fit_landmarks(
    net: nn.Module,
    index: int,
    batches: Iterable[Tensor],
    num_batches: int,
    *,
    num_points: int = 50_000,
    n_init: int = 10,
    max_iter: int = 300,
    seed: int = 0,
) -> NystromAttention:
    """Fix layer ``index``'s landmarks to the k-means centres of its sampled queries and keys (one k-means per
    head and per set). Fixed landmarks use the pseudo-inverse of their kernel, as the original's do, even where its
    segment-mean attention did not (``NystromAttention.uses_pseudo_inverse``)."""
    attentions = _net_of(net).landmark_attentions()
    if not 0 <= index < len(attentions):
        raise IndexError(f"{type(net).__name__} has {len(attentions)} Nyström layers, got index {index}")
    attention = attentions[index]
    queries, keys = collect_queries_keys(net, attention, batches, num_batches, num_points=num_points, seed=seed)
    m = attention.num_landmarks
    fit = {"n_init": n_init, "max_iter": max_iter, "seed": seed}
    device = attention.q_landmarks.device  # cluster where the net runs (a GPU makes 50,000 x 1024 quick)
    q_centres = torch.stack([kmeans(q.to(device), m, **fit) for q in queries])
    k_centres = torch.stack([kmeans(k.to(device), m, **fit) for k in keys])
    attention.set_landmarks(q_centres.to(attention.q_landmarks), k_centres.to(attention.k_landmarks))
    return attention


def freeze_before_landmarks(net: nn.Module, index: int) -> list[str]:
    """Stop training what computes layer ``index``'s queries and keys (``parameters_before_landmarks``); returns
    the names of the frozen parameters."""
    net = _net_of(net)
    frozen = {id(p) for p in net.parameters_before_landmarks(index)}
    names = []
    for name, param in net.named_parameters():
        if id(param) in frozen:
            param.requires_grad_(False)
            names.append(name)
    return names


# --- Lightning ----------------------------------------------------------------------------------------------
class LandmarkFitting(pl.Callback):
    """Fit fixed landmarks layer by layer after the normal epochs (module docstring).

    The run's ``trainer.max_epochs`` must cover the normal epochs plus ``sum(fit_layer_epochs)``: layer ``l`` is
    fitted at the start of epoch ``max_epochs - sum(fit_layer_epochs) + sum(fit_layer_epochs[:l])`` from one pass
    over the training dataloader (``feature_index`` picks the features from each batch), then the epochs go on.
    A run resumed after a fitting step keeps the fitted landmarks (they are in the checkpoint) and freezes again.
    Under DDP every rank clusters the tokens of its own shard; DDP's buffer broadcast (on by default) then gives
    every rank rank 0's landmarks at the next forward.
    """

    def __init__(
        self,
        fit_layer_epochs: Sequence[int] = (5,),
        freeze_weights: bool = True,
        *,
        num_points: int = 50_000,
        n_init: int = 10,
        max_iter: int = 300,
        seed: int = 0,
        feature_index: int = 0,
    ) -> None:
        super().__init__()
        epochs = [int(e) for e in fit_layer_epochs]
        if not epochs or any(e < 0 for e in epochs):
            raise ValueError(f"fit_layer_epochs must list >= 0 epochs per layer, e.g. [5] or [5, 5], got {epochs}")
        if not isinstance(freeze_weights, bool):
            raise ValueError(
                f"freeze_weights must be true or false, got {freeze_weights!r}; the original's 'both' is two runs "
                "(callbacks.landmarks.freeze_weights=true,false)"
            )
        self.fit_layer_epochs = epochs
        self.freeze_weights = freeze_weights
        self.fit_kwargs: dict[str, Any] = {
            "num_points": num_points,
            "n_init": n_init,
            "max_iter": max_iter,
            "seed": seed,
        }
        self.feature_index = feature_index

    def start_epochs(self, max_epochs: int) -> list[int]:
        """The epoch at whose start each layer's landmarks are fitted."""
        first = max_epochs - sum(self.fit_layer_epochs)
        if first < 0:
            raise ValueError(
                f"trainer.max_epochs={max_epochs} does not cover fit_layer_epochs={self.fit_layer_epochs}: set "
                f"max_epochs to the normal epochs + {sum(self.fit_layer_epochs)}"
            )
        return [first + sum(self.fit_layer_epochs[:i]) for i in range(len(self.fit_layer_epochs))]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        layers = len(_net_of(pl_module).landmark_attentions())
        if len(self.fit_layer_epochs) > layers:
            raise ValueError(
                f"fit_layer_epochs={self.fit_layer_epochs} names {len(self.fit_layer_epochs)} layers, the net has "
                f"{layers}"
            )
        self.start_epochs(int(trainer.max_epochs))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = _net_of(pl_module)
        for index, start in enumerate(self.start_epochs(int(trainer.max_epochs))):
            if trainer.current_epoch < start:
                break
            if trainer.current_epoch == start:
                loader = trainer.train_dataloader
                clips = (batch[self.feature_index].to(pl_module.device) for batch in loader)
                fit_landmarks(net, index, clips, len(loader), **self.fit_kwargs)
            if self.freeze_weights:
                freeze_before_landmarks(net, index)
