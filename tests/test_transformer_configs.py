"""The Continual Transformers study's configs: the model family config and its variants, the window and stream eval
configs, every paper-row experiment (configs/experiment/transformers, Tables 6 and 7) composed for train and eval and
run on tiny files in the original formats, the recipe, and an end-to-end training run on the generated features."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from experiments import utils
from experiments.inputs import instantiate_datamodule
from experiments.transformer_resolvers import oad_metric
from modules.nets import build, list_models
from modules.systems import OnlineDetectionSystem
from tests.conftest import CONFIGS
from tests.datamodules.oad_helpers import write_data_info, write_thumos, write_tvseries

pytestmark = pytest.mark.usefixtures("one_thread")

FOLDER = CONFIGS / "experiment" / "transformers"
#: the paper rows and the demo rows; files starting with "_" are the shared bases, nystrom/ has its own tests
ROWS = sorted(p.stem for p in FOLDER.glob("*.yaml") if not p.stem.startswith("_"))
MODELS = ["oadtr", "oadtr_b2", "oadtr_b1", "cooadtr_b2", "cooadtr_b1"]
COLUMNS = [("thumos14", f) for f in ("anet", "kin", "anet_audio", "kin_audio")] + [
    ("tvseries", f) for f in ("anet", "kin")
]
PAPER_ROWS = [f"{m}_{d}_{f}" for m in MODELS for d, f in COLUMNS]
DEMO_ROWS = ["cooadtr_b1_synthetic_thumos", "cooadtr_b2_synthetic_thumos", "oadtr_b2_synthetic_thumos"]
VARIANTS = [*MODELS, "nystromformer_b1", "nystromformer_b2", "conystromformer_b1", "conystromformer_b2"]
#: nets small enough for a real batch in a fraction of a second, windows of 8 steps
SMALL = ["model.net.embed_dim=16", "model.net.num_heads=2", "model.net.ff_dim=16", "data.sequence_len=8"]
#: rgb + flow (+ audio) widths of tests/datamodules/oad_helpers.py
TINY_WIDTH = {"anet": 9, "kin": 9, "anet_audio": 13, "kin_audio": 13}


def test_the_rows_are_tables_6_and_7_and_the_demos():
    assert sorted(PAPER_ROWS + DEMO_ROWS) == ROWS and len(PAPER_ROWS) == 30


# --- family config and eval configs --------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_of_the_family_config_builds_its_net(compose_cfg, variant):
    overrides = ["model=oadtr", f"model.variant={variant}", "data=synthetic_thumos", "eval=window", *SMALL]
    landmarks = {"num_landmarks": 4} if "nystrom" in variant else {}  # fewer than the 8 steps of a window
    cfg = compose_cfg("train.yaml", overrides + [f"+model.net.{k}={v}" for k, v in landmarks.items()])
    assert cfg.model.net.name == variant in list_models()
    model = utils.instantiate_system(cfg.model)  # drops `variant`
    assert isinstance(model, OnlineDetectionSystem) and model.hparams.eval_mode == "window"
    small = {"embed_dim": 16, "num_heads": 2, "ff_dim": 16, **landmarks}
    reference = build(variant, dim_feature=64, num_classes=22, sequence_len=8, **small)
    assert model.net.state_dict().keys() == reference.state_dict().keys()
    assert model.continual == variant.startswith("co")


@pytest.mark.parametrize("protocol", ["window", "stream"])
def test_eval_configs_set_the_protocol_of_system_and_data(compose_cfg, protocol):
    cfg = compose_cfg("train.yaml", ["model=oadtr", "data=synthetic_thumos", f"eval={protocol}", *SMALL])
    assert cfg.eval.protocol == cfg.data.eval_mode == cfg.model.eval_mode == protocol
    model = utils.instantiate_system(cfg.model)
    assert model.hparams.warmup == "pad" and model.hparams.stream_chunk == 128
    assert instantiate_datamodule(cfg, model).eval_mode == protocol


# --- paper rows ----------------------------------------------------------------------------------------------------
def _row(row: str) -> tuple[str, str, str]:
    """``(model, dataset, feature)`` of a row's file name."""
    model = next(m for m in sorted(MODELS, key=len, reverse=True) if row.startswith(m + "_"))
    rest = row.removeprefix(model + "_")
    dataset = next(d for d in ("thumos14", "tvseries", "synthetic_thumos") if rest.startswith(d))
    return model, dataset, rest.removeprefix(dataset).lstrip("_")


@pytest.mark.parametrize("row", PAPER_ROWS)
def test_every_paper_row_composes_for_train_and_eval_with_the_recipe(compose_cfg, row):
    model, dataset, feature = _row(row)
    cfg = compose_cfg("train.yaml", [f"experiment=transformers/{row}"])
    assert cfg.run_name == row and cfg.model.net.name == model
    assert (cfg.data.dataset, cfg.data.feature) == (dataset, feature)
    assert cfg.optimized_metric == ("val/mAP" if dataset == "thumos14" else "val/mcAP") and cfg.optimized_mode == "max"
    # spec C4: Adam 1e-4, wd 1e-4, batch 128, StepLR(1, 0.1) per epoch, clipping 1.0, 4 epochs; the paper's PE
    assert cfg.model.optimizer._target_ == "torch.optim.Adam" and cfg.model.optimizer.lr == 1e-4
    assert cfg.model.optimizer.weight_decay == 1e-4 and cfg.data.batch_size == 128
    assert cfg.model.scheduler._target_.endswith("StepLR") and (
        cfg.model.scheduler.step_size,
        cfg.model.scheduler.gamma,
    ) == (1, 0.1)
    assert (cfg.trainer.max_epochs, cfg.trainer.gradient_clip_val, cfg.seed) == (4, 1.0, 1)
    assert cfg.model.class_slice is None and cfg.eval.protocol == "window"
    if model.startswith("co"):
        assert (cfg.model.net.positional_encoding, cfg.model.net.num_embeddings) == ("recycling_fixed", 127)
    assert cfg.test_checkpoint == "last"  # the test takes the last epoch, as the original's logs
    evaluated = compose_cfg("eval.yaml", [f"experiment=transformers/{row}", "ckpt_path=x.ckpt", "eval=stream"])
    assert evaluated.optimized_metric == cfg.optimized_metric.replace("val/", "test/")
    assert evaluated.model.eval_mode == "stream" and evaluated.run_name == row


@pytest.fixture
def tiny_oad_data(tmp_path: Path) -> Path:
    """THUMOS14 and TVSeries files of two train and two test videos (48 steps) under tmp_path/data."""
    data = tmp_path / "data"
    for name in ("thumos14", "tvseries"):
        (data / name).mkdir(parents=True)
    thumos = {
        "val": {"video_validation_1": 48, "video_validation_2": 48},
        "test": {"video_test_1": 48, "video_test_2": 48},
    }
    write_thumos(data / "thumos14", thumos)
    write_tvseries(data / "tvseries", {"24_ep1": 48, "24_ep2": 48, "Mad_Men_ep1": 48, "Mad_Men_ep2": 48})
    for name in ("thumos14", "tvseries"):
        write_data_info(
            data / name,
            (list(thumos["val"]), list(thumos["test"])),
            (["24_ep1", "24_ep2"], ["Mad_Men_ep1", "Mad_Men_ep2"]),
        )
    return data


@pytest.mark.parametrize("row", PAPER_ROWS)
def test_every_paper_row_trains_and_scores_a_real_batch_of_its_format(compose_cfg, tiny_oad_data, row):
    feature = _row(row)[2]
    overrides = [f"experiment=transformers/{row}", *SMALL, f"data.dim_feature={TINY_WIDTH[feature]}"]
    overrides += [f"paths.data_dir={tiny_oad_data}", "data.batch_size=4", "data.num_workers=0", "data.seed=0"]
    cfg = compose_cfg("train.yaml", overrides)
    model = utils.instantiate_system(cfg.model)
    datamodule = instantiate_datamodule(cfg, model)
    datamodule.setup("fit")
    clip, target, decoder_target = next(iter(datamodule.train_dataloader()))
    assert clip.shape == (4, TINY_WIDTH[feature], 8) and target.shape == (4, cfg.data.num_classes)
    loss = model.training_step((clip, target, decoder_target), 0)
    assert loss.isfinite() and loss.requires_grad
    model.eval()
    with torch.no_grad():
        assert model(next(iter(datamodule.val_dataloader()))[0]).shape == (4, cfg.data.num_classes)


def test_tvseries_rows_score_all_thirty_actions_unless_sliced(compose_cfg):
    cfg = compose_cfg("train.yaml", ["experiment=transformers/cooadtr_b1_tvseries_kin", *SMALL])
    assert utils.instantiate_system(cfg.model).test_ap.classes == list(range(1, 31))
    cfg = compose_cfg("train.yaml", ["experiment=transformers/cooadtr_b1_tvseries_kin", *SMALL, "model.class_slice=21"])
    assert utils.instantiate_system(cfg.model).test_ap.classes == list(range(1, 21))


def test_oad_metric_follows_the_task():
    assert oad_metric("train", "mAP") == "val/mAP" and oad_metric("eval", "mcAP") == "test/mcAP"


# --- demo rows, end to end ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", DEMO_ROWS)
def test_demo_rows_compose_at_demo_scale(compose_cfg, row):
    cfg = compose_cfg("train.yaml", [f"experiment=transformers/{row}"])
    assert (
        cfg.run_name == row
        and cfg.model.net.embed_dim == 128
        and cfg.data._target_.endswith("GeneratedDetectionDataModule")
    )
    assert cfg.trainer.max_epochs == 4 and cfg.model.optimizer.lr == 3e-3


#: the generated set, shrunk: 4 train and 2 test videos of 200-240 steps (5 of the 20 actions occur in the test
#: videos), 16-step windows
TINY_RUN = [
    "data.num_train=4", "data.num_test=2", "data.min_steps=200", "data.max_steps=240", "data.sequence_len=16",
    "data.batch_size=16", "model.net.embed_dim=16", "model.net.num_heads=2", "model.net.ff_dim=16",
    "trainer.max_epochs=1", "logger=csv", "callbacks.progress_bar.refresh_rate=0",
]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "protocol"), [("cooadtr_b1_synthetic_thumos", "stream"), ("oadtr_b2_synthetic_thumos", "window")]
)
def test_train_runs_end_to_end_on_the_generated_features(compose_cfg, tmp_path, row, protocol):
    from experiments.train import train

    cfg = compose_cfg("train.yaml", [f"experiment=transformers/{row}", f"eval={protocol}", *TINY_RUN])
    metrics = train(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for name in ("test/mAP", "test/mcAP", "val/mAP", "val/mcAP", "train/loss"):
        assert name in metrics and name in saved
    assert 0.0 <= metrics["test/mAP"] <= 1.0 and 0.0 <= metrics["test/mcAP"] <= 1.0
    assert metrics["test/ignored_frames"] >= 0
    if protocol == "stream":
        assert metrics["test/skipped_frames"] == 0  # warm-up padded: every step scored
    rows = list(csv.DictReader((tmp_path / "run" / "protocol_results.csv").read_text().splitlines()))
    per_class = [r for r in rows if r["metric"] == "AP"]
    assert [int(float(r["class"])) for r in per_class] == list(range(1, 21))
    assert all(r["protocol"] == protocol for r in rows) and all(r["name"] for r in per_class)
    # classes that never occur in the test videos have no AP (empty) and are left out of the mean
    present = [float(r["value"]) for r in per_class if float(r["positives"]) > 0]
    assert present and all(r["value"] == "" for r in per_class if float(r["positives"]) == 0)
    assert metrics["test/mAP"] == pytest.approx(sum(present) / len(present))
    # the last checkpoint evaluated on whole streams by the eval entry point; the stream-trained run tested the last
    # epoch's weights (test_checkpoint: last) on the same streams
    from experiments.eval import evaluate

    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    overrides = [f"experiment=transformers/{row}", "eval=stream", f"ckpt_path={checkpoint}", *TINY_RUN[:9]]
    cfg = compose_cfg("eval.yaml", [*overrides, "logger=csv"], subdir="eval")
    assert cfg.optimized_metric == "test/mAP"
    streamed = evaluate(cfg)
    assert 0.0 <= streamed["test/mAP"] <= 1.0 and streamed["test/skipped_frames"] == 0
    if protocol == "stream":
        assert streamed["test/mAP"] == pytest.approx(metrics["test/mAP"], abs=1e-6)
    assert (tmp_path / "eval" / "protocol_results.csv").is_file()


def test_validation_runs_after_every_epoch_of_the_generated_features(compose_cfg):
    import pytorch_lightning as pl

    validated = []

    class Validated(pl.Callback):
        def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            validated.append(trainer.current_epoch)

    cfg = compose_cfg("train.yaml", ["experiment=transformers/oadtr_b2_synthetic_thumos", *TINY_RUN, "data.seed=0"])
    model = utils.instantiate_system(cfg.model)
    trainer = pl.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Validated()],
    )  # fmt: skip
    trainer.fit(model, datamodule=instantiate_datamodule(cfg, model))
    assert validated == [0, 1, 2]
