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

GROUPS = ("data", "model", "eval", "callbacks", "logger", "trainer", "paths")
# options that only make sense together with others
NEEDS = {
    ("eval", "frame"): ["model=co_conv_stack", "eval.clip_length=10"],
    ("eval", "transient"): ["model=co_conv_stack", "eval.clip_length=12"],
    ("eval", "extended"): ["model=co_conv_stack", "eval.clip_length=12", "eval.windows=[4,8]"],
    # X3D downsamples 32x: its head needs crops of at least 32 pixels
    **{
        ("model", f"{m}_{s}"): ["data.height=32", "data.width=32"]
        for m in ("x3d", "cox3d")
        for s in ("xs", "s", "m", "l")
    },
}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


EXPERIMENTS = _options("experiment")


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
    cfg = compose_cfg("train.yaml", [f"experiment={experiment}"])
    _instantiate_all(cfg)
    assert cfg.run_name == experiment
    cfg = compose_cfg("eval.yaml", [f"experiment={experiment}", "ckpt_path=some.ckpt"])
    _instantiate_all(cfg)
    cfg = compose_cfg("profile.yaml", [f"experiment={experiment}"])
    net = hydra.utils.instantiate(cfg.model.net)
    clip = torch.randn(1, *[int(s) for s in cfg.input_shape])
    assert net.eval()(clip).shape[:2] == (1, cfg.data.num_classes)


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
