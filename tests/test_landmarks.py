"""Fixed Nyström landmarks: k-means, fitting a layer from sampled queries/keys, freezing, the Lightning callback."""

from __future__ import annotations

import hydra
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from experiments.transformer_resolvers import register as register_resolvers
from experiments.utils import instantiate_callbacks
from modules import nets
from modules.nets.transformer.nystrom import CoNystromformer
from modules.systems.landmarks import (
    LandmarkFitting,
    collect_queries_keys,
    fit_landmarks,
    freeze_before_landmarks,
    kmeans,
)
from tests.conftest import CONFIGS
from tests.nets.transformer.helpers import TINY_CO

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {**TINY_CO, "sequence_len": 6, "num_landmarks": 2, "num_embeddings": 11, "num_classes": 3}


def _net(name: str = "conystromformer_b2", **overrides) -> nn.Module:
    torch.manual_seed(0)
    return nets.build(name, **{**SMALL, **overrides})


def _clips(count: int = 4, batch: int = 3) -> list[Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(batch, SMALL["dim_feature"], SMALL["sequence_len"], generator=generator) for _ in range(count)]


def test_kmeans_recovers_well_separated_clusters_deterministically() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 5.0], [-8.0, -8.0, 8.0]])
    points = (centres.repeat_interleave(50, 0) + 0.3 * torch.randn(200, 3, generator=generator))[torch.randperm(200)]
    found = kmeans(points, 4, n_init=3, seed=0)
    order = torch.cdist(centres, found).argmin(1)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(found[order], centres, atol=0.15, rtol=0)
    torch.testing.assert_close(kmeans(points, 4, n_init=3, seed=0), found, atol=0, rtol=0)


def test_kmeans_refuses_fewer_points_than_clusters() -> None:
    with pytest.raises(ValueError, match="kmeans needs points"):
        kmeans(torch.randn(3, 2), 4)


def test_collecting_samples_the_asked_number_of_tokens_from_the_right_layer() -> None:
    net = _net().eval()
    second = net.landmark_attentions()[1]
    net.clean_state()  # both passes below see the same positional offsets
    queries, keys = collect_queries_keys(net, second, _clips(), 4, num_points=10, seed=0)
    assert queries.shape == keys.shape == (1, 10, SMALL["embed_dim"])  # one head without projections
    # every sample is a token that entered the second layer's attention (the first layer's output)
    seen: list[Tensor] = []
    handle = second.register_tokens_hook(lambda module, tokens: seen.append(tokens.reshape(-1, tokens.shape[-1])))
    net.clean_state()
    with torch.no_grad():
        for clip in _clips():
            net(clip)
    handle.remove()
    tokens = torch.cat(seen)
    assert (queries[0, :, None] - tokens).abs().amax(-1).min(1).values.max() < 1e-6
    assert not torch.equal(queries, keys)  # drawn apart, as the original


def test_fitting_sets_the_landmarks_and_changes_the_outputs() -> None:
    net = _net().eval()
    clip = _clips(1)[0]
    with torch.no_grad():
        net.clean_state()
        before = net(clip)
    net.clean_state()  # the same positional offsets in both collections below
    attention = fit_landmarks(net, 0, _clips(), 4, num_points=40, n_init=2, seed=0)
    assert attention.fixed_landmarks and attention.uses_pseudo_inverse and not attention.pseudo_inverse
    assert not net.landmark_attentions()[1].fixed_landmarks
    net.clean_state()
    queries, keys = collect_queries_keys(net, attention, _clips(), 4, num_points=40, seed=0)
    torch.testing.assert_close(attention.q_landmarks[0], kmeans(queries[0], 2, n_init=2, seed=0))
    torch.testing.assert_close(attention.k_landmarks[0], kmeans(keys[0], 2, n_init=2, seed=0))
    with torch.no_grad():
        net.clean_state()
        after = net(clip)
        assert not torch.allclose(before, after, atol=1e-4)
        # with its first layer's landmarks fixed, the continual net still steps as its clip computes
        stream = torch.randn(1, SMALL["dim_feature"], 11)
        net.clean_state()
        reference = net(stream)
        net.clean_state()
        torch.testing.assert_close(net.forward_steps(stream), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("projections", [False, True])
def test_freezing_a_layer_freezes_exactly_what_computes_its_queries_and_keys(projections: bool) -> None:
    net = _net("nystromformer_b2", attention_projections=projections)  # learned PE: it has a weight to freeze
    frozen = set(freeze_before_landmarks(net, 1))
    expected = {"linear_encoding.weight", "linear_encoding.bias", "position_encoding.pe.weight"}
    expected |= {name for name, _ in net.named_parameters() if name.startswith("encoder.layers.0.")}
    if projections:
        expected |= {"encoder.layers.1.self_attn.in_proj_weight", "encoder.layers.1.self_attn.in_proj_bias"}
    assert frozen == expected
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in net.named_parameters()} - expected
    assert "encoder.layers.1.linear1.weight" in trainable and "mlp_head.weight" in trainable


def test_freezing_the_first_layer_leaves_the_encoder_trainable() -> None:
    net = _net("conystromformer_b1")  # fixed cyclic PE: nothing of it to freeze
    assert set(freeze_before_landmarks(net, 0)) == {"linear_encoding.weight", "linear_encoding.bias"}


class _Detector(pl.LightningModule):
    """The least a system needs: ``net`` and a training step on windows."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        features, target = batch
        return F.cross_entropy(self.net(features)[:, :, -1], target)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class _Snapshot(pl.Callback):
    """The weights at the start of the last epoch (after the landmark callback ran)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


def test_callback_fits_after_the_normal_epochs_then_fine_tunes_the_rest() -> None:
    net = _net("conystromformer_b1")
    data = TensorDataset(torch.cat(_clips()), torch.randint(0, 3, (12,)))
    snapshot = _Snapshot()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LandmarkFitting([1], freeze_weights=True, num_points=30, n_init=2), snapshot],
    )
    trainer.fit(_Detector(net), DataLoader(data, batch_size=4))
    attention = net.landmark_attentions()[0]
    assert attention.fixed_landmarks
    for name, value in net.state_dict().items():
        if name.startswith("linear_encoding.") or name.startswith("encoder.layers.0.self_attn."):
            torch.testing.assert_close(value, snapshot.weights[name], atol=0, rtol=0)  # frozen / fixed
    assert not torch.equal(net.state_dict()["mlp_head.weight"], snapshot.weights["mlp_head.weight"])


def test_callback_checks_its_schedule_against_the_run() -> None:
    with pytest.raises(ValueError, match="'both' is two runs"):
        LandmarkFitting([5], freeze_weights="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_epochs"):
        LandmarkFitting([5, 5]).start_epochs(4)
    assert LandmarkFitting([5, 5]).start_epochs(14) == [4, 9]


# --- the experiment configs ------------------------------------------------------------------------------------
NYSTROM_EXPERIMENTS = sorted(
    p.stem for p in (CONFIGS / "experiment" / "transformers" / "nystrom").glob("*.yaml") if not p.stem.startswith("_")
)


def test_every_net_and_feature_has_a_row_and_a_fixed_landmark_row() -> None:
    rows = [
        f"{net}_{b}_thumos14_{f}"
        for net in ("nystromformer", "conystromformer")
        for b in ("b1", "b2")
        for f in ("anet", "kin")
    ]
    assert sorted([*rows, *(f"{r}_fixed" for r in rows)]) == NYSTROM_EXPERIMENTS


@pytest.mark.parametrize("experiment", NYSTROM_EXPERIMENTS)
def test_nystrom_experiment_composes_and_builds_its_net_and_callbacks(compose_cfg, experiment: str) -> None:
    register_resolvers()
    small = ["model.net.embed_dim=16", "model.net.ff_dim=8", "data.sequence_len=16"]
    cfg = compose_cfg("train.yaml", [f"experiment=transformers/nystrom/{experiment}", *small])
    assert cfg.run_name == experiment and cfg.seed == 0
    variant, _, feature = experiment.removesuffix("_fixed").partition("_thumos14_")
    assert (cfg.model.variant, cfg.data.feature, cfg.data.dataset) == (variant, feature, "thumos14")
    net = hydra.utils.instantiate(cfg.model.net)
    assert isinstance(net, CoNystromformer) == variant.startswith("co")
    learned = net.position_encoding.learned
    assert learned == variant.startswith("nystromformer") and net.position_encoding.num_embeds == 64
    assert [a.num_landmarks for a in net.landmark_attentions()] == [8] * (2 if "_b2" in variant else 1)
    assert cfg.model.optimizer.lr == 1e-4 and cfg.data.batch_size == 128
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    fitting = [c for c in callbacks if isinstance(c, LandmarkFitting)]
    if not experiment.endswith("_fixed"):
        assert not fitting and cfg.trainer.max_epochs == 4
        return
    layers = len(net.landmark_attentions())
    assert fitting[0].fit_layer_epochs == [5] * layers and fitting[0].freeze_weights
    assert cfg.trainer.max_epochs == 4 + 5 * layers
    assert fitting[0].start_epochs(cfg.trainer.max_epochs) == [4, 9][:layers]
