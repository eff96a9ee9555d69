"""The online detection system (modules/systems/detection.py) on tiny nets and random batches: the loss, the window
and stream modes with offline and continual nets, warm-up padding vs skipping, and ignore-class frames."""

from __future__ import annotations

import math
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from modules import continual as co
from modules.systems import DetectionAP, OnlineDetectionSystem, soft_cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")

E, K, N, Q = 6, 5, 4, 3  # feature width, classes (0 background, 4 ignore), window, decoder steps
IGNORE = 4


class TinyCoNet(nn.Module):
    """A continual stand-in: per-step embedding, one continual encoder layer over the last N steps, a head on the
    newest position. forward(clip (B, E, T)) -> (B, K, T - N + 1), equal to forward_steps from a clean state."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Linear(E, dim)
        layer = co.TransformerEncoderLayer(dim, 2, dim_feedforward=16, dropout=0.0, sequence_len=N)
        self.encoder = co.TransformerEncoder(layer, num_layers=1)
        self.head = nn.Linear(dim, K)
        self.delay = N - 1

    def _embed(self, clip: Tensor) -> Tensor:
        return self.embed(clip.transpose(1, 2)).transpose(1, 2)

    def forward(self, clip: Tensor) -> Tensor:
        b = clip.shape[0]
        windows = clip.unfold(2, N, 1).permute(0, 2, 1, 3).reshape(-1, E, N)  # (B·W, E, N)
        newest = self.encoder(self._embed(windows))[:, :, -1]
        return self.head(newest).reshape(b, -1, K).transpose(1, 2)

    def forward_step(self, step: Tensor) -> Tensor | None:
        out = self.encoder.forward_step(self.embed(step))
        return None if out is None else self.head(out)

    def forward_steps(self, clip: Tensor) -> Tensor | None:
        outs = [y for t in range(clip.shape[2]) if (y := self.forward_step(clip[:, :, t])) is not None]
        return torch.stack(outs, dim=2) if outs else None

    def clean_state(self) -> None:
        self.encoder.clean_state()


class Offline(nn.Module):
    """The same weights as an offline net: (B, E, N) -> (B, K), no stepping."""

    def __init__(self, net: TinyCoNet) -> None:
        super().__init__()
        self.inner = net

    def forward(self, clip: Tensor) -> Tensor:
        return self.inner(clip)[:, :, 0]


class DecoderNet(nn.Module):
    """An offline net with OadTR's decoder interface: forward_with_decoder -> ((B, K), (B, K, Q))."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(E * N, K)
        self.decoder = nn.Linear(E * N, K * Q)
        self.decoder_calls = 0

    def forward(self, clip: Tensor) -> Tensor:
        return self.head(clip.flatten(1))

    def forward_with_decoder(self, clip: Tensor) -> tuple[Tensor, Tensor]:
        self.decoder_calls += 1
        return self.head(clip.flatten(1)), self.decoder(clip.flatten(1)).reshape(-1, K, Q)


def _system(net: nn.Module, **kwargs) -> OnlineDetectionSystem:
    return OnlineDetectionSystem(net, K, partial(torch.optim.Adam, lr=1e-3), sequence_len=N, **kwargs)


def _one_hot(labels: Tensor) -> Tensor:
    return F.one_hot(labels, K).float()


# --- loss -----------------------------------------------------------------------------------------------------------
def test_soft_cross_entropy_against_hand_computed_values():
    # row 1: logits (0, ln 3, 0, 0, 0): softmax of class 1 is 3/7 -> -ln(3/7) = ln(7/3)
    # row 2: logits 0: every class 1/5; multi-hot classes 1 and 2 -> 2 ln 5 (CoOadTR does not normalise), ln 5 if
    #        normalised (targets 1/2, 1/2)
    logits = torch.tensor([[0.0, math.log(3), 0, 0, 0], [0.0, 0, 0, 0, 0]])
    target = torch.tensor([[0.0, 1, 0, 0, 0], [0.0, 1, 1, 0, 0]])
    assert soft_cross_entropy(logits, target).item() == pytest.approx((math.log(7 / 3) + 2 * math.log(5)) / 2)
    normalised = soft_cross_entropy(logits, target, normalize=True).item()
    assert normalised == pytest.approx((math.log(7 / 3) + math.log(5)) / 2)
    # a row whose target is the ignore class is left out of the mean
    ambiguous = torch.tensor([[0.0, 0, 0, 0, 1]])
    both = soft_cross_entropy(torch.cat([logits[:1], logits[1:]]), torch.cat([target[:1], ambiguous]), ignore_index=4)
    assert both.item() == pytest.approx(math.log(7 / 3))
    assert soft_cross_entropy(logits[1:], ambiguous, ignore_index=4).item() == 0.0


def _window_batch(b: int = 6, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    clip = torch.randn(b, E, N, generator=g)
    target = _one_hot(torch.randint(0, K - 1, (b,), generator=g))
    decoder_target = _one_hot(torch.randint(0, K, (b, Q), generator=g)).transpose(1, 2)  # (B, K, Q)
    return clip, target, decoder_target


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")  # training_step outside a Trainer
def test_the_decoder_loss_is_added_only_for_nets_with_a_decoder():
    batch = _window_batch()
    clip, target, decoder_target = batch
    net = DecoderNet()
    system = _system(net, ignore_index=IGNORE)
    loss = system.training_step(batch, 0)
    rows = (decoder_target.transpose(1, 2).reshape(-1, K), net.decoder(clip.flatten(1)).reshape(-1, K, Q))
    decoder_ce = soft_cross_entropy(rows[1].transpose(1, 2).reshape(-1, K), rows[0], ignore_index=IGNORE)
    expected = soft_cross_entropy(net(clip), target) + 0.5 * decoder_ce
    assert net.decoder_calls == 1 and loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # weight 0: the decoder is not run
    assert _system(net, decoder_loss_weight=0.0).training_step(batch, 0).item() == pytest.approx(
        soft_cross_entropy(net(clip), target).item(), rel=1e-6
    )
    assert net.decoder_calls == 1
    # a net that has the method but says it has no decoder (OadTR-b): not called
    net.has_decoder = False
    assert _system(net).training_step(batch, 0).item() == pytest.approx(
        soft_cross_entropy(net(clip), target).item(), rel=1e-6
    )
    assert net.decoder_calls == 1
    # a net without a decoder: the decoder targets are unused
    offline = Offline(TinyCoNet())
    assert _system(offline).training_step(batch, 0).item() == pytest.approx(
        soft_cross_entropy(offline(clip), target).item(), rel=1e-6
    )


# --- window and stream predictions --------------------------------------------------------------------------------
def test_window_logits_of_a_continual_net_are_its_one_clip_output():
    net = TinyCoNet().eval()
    clip = _window_batch()[0]
    assert net(clip).shape == (6, K, 1)
    logits = _system(net)(clip)
    assert logits.shape == (6, K) and torch.equal(logits, _system(Offline(net))(clip))


@pytest.mark.parametrize("frames", [3, 11])
def test_streams_of_continual_and_offline_nets_agree_with_padding_and_skipping(frames):
    net = TinyCoNet().eval()
    features = torch.randn(1, E, frames)
    padded = F.pad(features, (N - 1, 0))
    expected = torch.stack([Offline(net)(padded[:, :, t : t + N]) for t in range(frames)], dim=2)  # (1, K, T)
    for model in (net, Offline(net)):
        system = _system(model, stream_chunk=3)  # several chunks of windows
        assert torch.allclose(system.stream_logits(features), expected, atol=1e-5)
        skipping = _system(model, warmup="skip")
        assert torch.allclose(skipping.stream_logits(features), expected[:, :, N - 1 :], atol=1e-5)
    assert _system(net, warmup="skip").stream_logits(features).shape == (1, K, max(frames - N + 1, 0))


def test_stream_stepping_leaves_a_clean_state():
    net = TinyCoNet().eval()
    _system(net).stream_logits(torch.randn(1, E, 7))
    assert net.forward_step(torch.randn(1, E)) is None  # a fresh stream: warming up again


# --- evaluation under Lightning -------------------------------------------------------------------------------------
class TinyData(pl.LightningDataModule):
    """Window batches for training; window or stream batches for val/test, with Ambiguous (IGNORE) frames."""

    def __init__(self, eval_mode: str, frames: tuple[int, ...] = (9, 12), ambiguous: int = 3) -> None:
        super().__init__()
        self.eval_mode, self.num_classes, self.ignore_index = eval_mode, K, IGNORE
        self.class_names = ["Background", "a", "b", "c", "Ambiguous"]
        self.frames, self.ambiguous = frames, ambiguous

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(*_window_batch(16)), batch_size=8)

    def _eval(self) -> DataLoader:
        if self.eval_mode == "window":
            return DataLoader(TensorDataset(*_window_batch(10, seed=1)), batch_size=4)
        g = torch.Generator().manual_seed(2)
        videos = []
        for t in self.frames:
            labels = torch.arange(t) % (K - 1)  # every action class present
            labels[-self.ambiguous :] = IGNORE  # the last frames are Ambiguous
            videos.append((torch.randn(1, E, t, generator=g), _one_hot(labels).T[None]))
        return DataLoader(videos, batch_size=None)  # one whole video per batch: (1, E, T), (1, K, T)

    val_dataloader = test_dataloader = _eval


def _trainer() -> pl.Trainer:
    return pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


@pytest.mark.parametrize("continual", [True, False])
@pytest.mark.parametrize("warmup", ["pad", "skip"])
def test_stream_test_counts_ignored_and_skipped_frames(continual, warmup):
    net = TinyCoNet() if continual else Offline(TinyCoNet())
    system = _system(net, eval_mode="stream", warmup=warmup)  # ignore_index taken from the data
    metrics = _trainer().test(system, datamodule=TinyData("stream"), verbose=False)[0]
    assert system.ignore_index == system.hparams.ignore_index == system.test_ap.ignore_index == IGNORE
    # videos of 9 and 12 frames, the last 3 of each Ambiguous; skipping leaves out the first N - 1 = 3 of each
    skipped = 0 if warmup == "pad" else 2 * (N - 1)
    assert metrics["test/skipped_frames"] == skipped and metrics["test/ignored_frames"] == 6
    assert 0.0 <= metrics["test/mAP"] <= 1.0 and 0.0 <= metrics["test/mcAP"] <= 1.0
    rows = system.protocol_results
    assert [r["class"] for r in rows if r["metric"] == "AP"] == [1, 2, 3]  # background and Ambiguous never scored
    assert {r["name"] for r in rows if "name" in r} == {"a", "b", "c"}
    assert [r["value"] for r in rows if r["metric"] == "mAP"] == [pytest.approx(metrics["test/mAP"])]


def test_stream_metrics_equal_the_metric_on_the_scored_frames():
    net = TinyCoNet().eval()
    system = _system(net, eval_mode="stream", ignore_index=IGNORE)
    data = TinyData("stream")
    metrics = _trainer().test(system, datamodule=data, verbose=False)[0]
    reference = DetectionAP(K, ignore_index=IGNORE)
    for features, targets in data.test_dataloader():
        keep = targets[0].argmax(0) != IGNORE
        logits = system.stream_logits(features)[0].T
        reference.update(logits[keep], targets[0].T[keep])
    assert metrics["test/mAP"] == pytest.approx(reference.compute()["mAP"].item())


def test_fit_in_window_mode_logs_the_named_metrics():
    system = _system(DecoderNet(), eval_mode="window", scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    trainer = _trainer()
    trainer.fit(system, datamodule=TinyData("window"))
    logged = trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/mAP", "val/mcAP", "val/ignored_frames"} <= set(logged)
    assert 0.0 <= float(logged["val/mAP"]) <= 1.0
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)  # StepLR, gamma 0.1, one epoch


# --- errors ---------------------------------------------------------------------------------------------------------
def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="eval_mode"):
        _system(DecoderNet(), eval_mode="clip")
    with pytest.raises(ValueError, match="sequence_len=7"):
        OnlineDetectionSystem(TinyCoNet(), K, partial(torch.optim.Adam), sequence_len=7)
    with pytest.raises(ValueError, match="eval=stream"):
        _system(DecoderNet(), eval_mode="window").validation_step((torch.zeros(1, E, 9), torch.zeros(1, K, 9)), 0)
    with pytest.raises(ValueError, match="eval=window"):
        _system(DecoderNet(), eval_mode="stream").validation_step(_window_batch(), 0)
    with pytest.raises(ValueError, match="eval=window"):
        _trainer().test(_system(DecoderNet(), eval_mode="window"), datamodule=TinyData("stream"))
    with pytest.raises(ValueError, match="ignores class 4"):
        _trainer().test(_system(DecoderNet(), ignore_index=3), datamodule=TinyData("window"))
