"""Every option of every config group, and every experiment, composes and instantiates its objects."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from experiments.utils import instantiate_callbacks, instantiate_loggers
from modules.system import ClassificationSystem
from tests.conftest import CONFIGS
from tests.datamodules import write_charades, write_kinetics
from tests.datamodules.test_charades import VIDEOS as CHARADES_VIDEOS
from tests.datamodules.test_kinetics import VIDEOS as KINETICS_VIDEOS

GROUPS = ("data", "model", "eval", "callbacks", "logger", "trainer", "paths")
# options that only make sense together with others
NEEDS = {
    ("eval", "frame"): ["model=co_conv_stack", "eval.clip_length=10"],
    ("eval", "transient"): ["model=co_conv_stack", "eval.clip_length=12"],
    ("eval", "extended"): ["model=co_conv_stack", "eval.clip_length=12", "eval.windows=[4,8]"],
    ("data", "kinetics400"): ["data.num_classes=3", "data.crop_size=32", "data.clip_length=4", "data.num_workers=0"],
    ("data", "charades"): ["data.crop_size=32", "data.clip_length=4", "data.sampling_stride=2", "data.num_workers=0"],
    ("data", "moving_digits"): [
        "data.num_train=10",
        "data.num_val=4",
        "data.num_test=4",
        "data.num_frames=16",
        "data.num_workers=0",
        "data.progress=false",
    ],
    # X3D downsamples 32x: its head needs crops of at least 32 pixels
    **{
        ("model", f"{m}_{s}"): ["data.height=32", "data.width=32"]
        for m in ("x3d", "cox3d")
        for s in ("xs", "s", "m", "l", "tiny")
    },
}


# Experiments run on the tiny datasets of the `tiny_data` fixture, shrunk to small crops and batches.
SHRINK = ["data.crop_size=32", "data.batch_size=2", "data.num_workers=0"]
DATA_OF_EXPERIMENT = {
    "kinetics400": [*SHRINK, "data.num_classes=3"],
    "charades": SHRINK,
    "moving_digits": [*SHRINK, *NEEDS[("data", "moving_digits")]],
}


def _experiment_overrides(experiment: str) -> list[str]:
    return next((o for key, o in DATA_OF_EXPERIMENT.items() if key in experiment), [])


@pytest.fixture(autouse=True)
def tiny_data(tmp_path: Path) -> None:
    """Tiny Kinetics and Charades trees where paths.data_dir points (the tests run in tmp_path)."""
    write_kinetics(tmp_path / "data", KINETICS_VIDEOS)
    write_charades(tmp_path / "data", CHARADES_VIDEOS)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


# spa_* experiments belong to experiments/spa.py (configs/spa.yaml): tests/test_spa.py composes them
EXPERIMENTS = [e for e in _options("experiment") if not e.startswith("spa_")]


def _instantiate_all(cfg: DictConfig) -> None:
    datamodule = hydra.utils.instantiate(cfg.data)
    assert isinstance(datamodule, pl.LightningDataModule)
    model = hydra.utils.instantiate(cfg.model)
    assert isinstance(model, ClassificationSystem)
    assert model.hparams.eval_protocol == cfg.eval.protocol
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert isinstance(trainer, pl.Trainer)
    # one real batch through the model under its eval protocol proves that data and model fit together
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    model.eval()
    with torch.no_grad():
        stepped = cfg.eval.protocol in ("frame", "transient", "extended")
        logits = model.predict_frames(batch[0]) if stepped else model(batch[0])
    assert logits.shape == (batch[0].shape[0], cfg.data.num_classes)


def _cpu_only(group: str, option: str) -> list[str]:
    """Accelerator configs instantiate on this machine's CPU when it has no GPU (the rest is checked as is)."""
    if torch.cuda.is_available() or (group, option) not in {("trainer", "gpu"), ("trainer", "ddp")}:
        return []
    return ["trainer.accelerator=cpu", *(["trainer.devices=2"] if option == "ddp" else [])]


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_group_option_composes_and_instantiates(compose_cfg, group, option):
    cfg = compose_cfg("train.yaml", [f"{group}={option}", *NEEDS.get((group, option), []), *_cpu_only(group, option)])
    _instantiate_all(cfg)


def test_every_group_has_options():
    assert all(_options(g) for g in GROUPS) and EXPERIMENTS
    assert {"cpu", "gpu", "ddp", "default"} <= set(_options("trainer"))
    assert {"clip", "frame"} <= set(_options("eval")) and {"wandb", "csv"} <= set(_options("logger"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_for_every_entry_point(compose_cfg, experiment):
    overrides = [f"experiment={experiment}", *_experiment_overrides(experiment)]
    cfg = compose_cfg("train.yaml", overrides)
    _instantiate_all(cfg)
    assert cfg.run_name == experiment
    cfg = compose_cfg("eval.yaml", [*overrides, "ckpt_path=some.ckpt"])
    assert isinstance(hydra.utils.instantiate(cfg.model), ClassificationSystem)
    cfg = compose_cfg("profile.yaml", overrides)
    net = hydra.utils.instantiate(cfg.model.net)
    c, t, *spatial = (int(s) for s in cfg.input_shape)
    # an extended pool (e.g. 64 frames) needs a clip at least as long as the continual net's receptive field
    t = max(t, getattr(net, "receptive_field", t))
    assert net.eval()(torch.randn(1, c, t, *spatial)).shape[:2] == (1, cfg.data.num_classes)


def test_continual_experiment_evaluates_frames_with_enough_frames(compose_cfg):
    cfg = compose_cfg("train.yaml", ["experiment=co_conv_stack_synthetic"])
    net = hydra.utils.instantiate(cfg.model.net)
    assert cfg.eval.protocol == "frame" and cfg.data.eval_clip_length >= net.delay + 1


def test_hydra_dirs_and_slurm_launcher():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train.yaml", ["hydra/launcher=slurm"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert Path(cfg.hydra.run.dir).parts[-4:-2] == ("outputs", "train")
    assert Path(cfg.hydra.sweep.dir).parts[-4:-2] == ("multirun", "train")
    assert cfg.hydra.job.chdir is False
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.timeout_min > 0
    hydra.utils.instantiate(cfg.hydra.launcher)


def test_data_dir_follows_the_environment(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "datasets"))
    cfg = compose_cfg("train.yaml")
    assert cfg.paths.data_dir == str(tmp_path / "datasets")
    assert cfg.paths.log_dir == str(tmp_path)  # LOG_DIR, set for every test in conftest


def test_frame_protocol_rejects_an_offline_net(compose_cfg):
    cfg = compose_cfg("train.yaml", ["eval=frame", "eval.clip_length=10"])
    with pytest.raises(Exception, match="continual"):
        hydra.utils.instantiate(cfg.model)
