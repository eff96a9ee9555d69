"""Every option of every config group, and every experiment, composes and instantiates its objects."""

from __future__ import annotations

import csv
import inspect
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from experiments import utils
from experiments.inputs import clip_input_shape, eval_clips, instantiate_datamodule
from experiments.utils import instantiate_callbacks, instantiate_loggers
from modules.nets import build, list_models
from modules.systems import ClassificationSystem
from tests.conftest import CONFIGS
from tests.datamodules.helpers import write_charades, write_kinetics
from tests.datamodules.test_charades import VIDEOS as CHARADES_VIDEOS
from tests.datamodules.test_kinetics import VIDEOS as KINETICS_VIDEOS

GROUPS = ("data", "model", "eval", "callbacks", "logger", "trainer", "paths")
# options that only make sense together with others
NEEDS = {
    ("eval", "frame"): ["model=co_conv_stack"],
    ("eval", "transient"): ["model=co_conv_stack"],
    ("eval", "extended"): ["model=co_conv_stack", "eval.windows=[4,8]"],
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
    # skeleton data and nets go together; 8 samples per split at 1/8 of the paper's width keep a batch quick
    ("data", "synthetic_skeletons"): ["model=skeleton", "model.net.width=0.125", "data.num_train=8", "data.num_val=8"],
    ("model", "skeleton"): ["data=synthetic_skeletons", "model.net.width=0.125", "data.num_train=8", "data.num_val=8"],
    # X3D downsamples 32x: its head needs crops of at least 32 pixels
    ("model", "x3d"): ["data.height=32", "data.width=32"],
    ("model", "cox3d"): ["data.height=32", "data.width=32"],
}

#: the sizes (variants) of each family's model config: each names a registered net
FAMILY_SIZES = {
    "x3d": ("size", ["xs", "s", "m", "l", "tiny"]),
    "cox3d": ("size", ["xs", "s", "m", "l", "tiny"]),
    "resnet3d": ("variant", ["slow_8x8_r50", "i3d_8x8_r50", "r2plus1d_18"]),
    "coresnet3d": ("variant", ["slow_8x8_r50", "i3d_8x8_r50"]),
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


# the profiler's default data: the model's input facts, never instantiated (composed by the tests below)
PROFILE_ONLY = {("data", "model_input")}
# online action detection: its system, data and eval options go together (feature windows, not clips);
# tests/test_transformer_configs.py composes each with the others and runs a real batch
ONLINE_DETECTION = {("data", o) for o in ("synthetic_thumos", "thumos14", "tvseries")} | {
    ("model", "oadtr"),
    ("eval", "window"),
    ("eval", "stream"),
}


# spa_* experiments belong to experiments/spa.py (configs/spa.yaml): tests/test_spa.py composes them
EXPERIMENTS = [e for e in _options("experiment") if not e.startswith("spa_")]


def _instantiate_all(cfg: DictConfig) -> None:
    model = utils.instantiate_system(cfg.model)
    assert isinstance(model, ClassificationSystem)
    datamodule = instantiate_datamodule(cfg, model)  # as the entry points do: the clip length follows the model
    assert isinstance(datamodule, pl.LightningDataModule)
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


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in _options(g) if (g, o) not in PROFILE_ONLY | ONLINE_DETECTION]
)
def test_group_option_composes_and_instantiates(compose_cfg, group, option):
    cfg = compose_cfg("train.yaml", [f"{group}={option}", *NEEDS.get((group, option), []), *_cpu_only(group, option)])
    _instantiate_all(cfg)


@pytest.mark.parametrize(
    ("family", "key", "size"), [(f, k, s) for f, (k, sizes) in FAMILY_SIZES.items() for s in sizes]
)
def test_each_size_of_a_family_config_names_a_registered_net(compose_cfg, family, key, size):
    cfg = compose_cfg("train.yaml", [f"model={family}", f"model.{key}={size}"])
    assert cfg.model.net.name in list_models() and size in cfg.model.net.name
    assert key not in inspect.signature(ClassificationSystem).parameters  # the entry points drop it


def test_family_keys_are_dropped_before_the_system_is_built(compose_cfg):
    cfg = compose_cfg("train.yaml", ["model=cox3d", "model.size=tiny", "data.height=32", "data.width=32"])
    model = utils.instantiate_system(cfg.model)
    reference = build("cox3d_tiny", num_classes=cfg.data.num_classes, crop=32)
    assert model.net.state_dict().keys() == reference.state_dict().keys()
    with pytest.raises(Exception, match="size"):
        hydra.utils.instantiate(cfg.model)  # the key is not the system's


def test_every_group_has_options():
    assert all(_options(g) for g in GROUPS) and EXPERIMENTS
    assert {"cpu", "gpu", "ddp", "default"} <= set(_options("trainer"))
    assert {"clip", "frame"} <= set(_options("eval")) and {"wandb", "csv"} <= set(_options("logger"))


#: frames per evaluation clip of the paper's continual rows (net.delay + 1; CoI3D: its delay + 1 at stride 2), as the
#: Continual 3D CNNs code evaluates them; the experiment files leave eval.clip_length to the derivation
PAPER_FRAME_CLIPS = {
    "cox3d_xs_kinetics400": 32,
    "cox3d_s_kinetics400": 41,
    "cox3d_m_kinetics400": 44,
    "cox3d_l_kinetics400": 73,
    "cox3d_xs64_kinetics400": 92,
    "cox3d_s64_kinetics400": 92,
    "cox3d_m64_kinetics400": 92,
    "cox3d_l64_kinetics400": 121,
    "coslow_8x8_kinetics400": 17,
    "coslow_8x8_64_kinetics400": 73,
    "coslow_8x8_charades": 17,
    "coi3d_8x8_kinetics400": 25,
    "coi3d_8x8_64_kinetics400": 81,
}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_for_every_entry_point(compose_cfg, experiment):
    overrides = [f"experiment={experiment}", *_experiment_overrides(experiment)]
    cfg = compose_cfg("train.yaml", overrides)
    _instantiate_all(cfg)
    assert cfg.run_name == experiment
    cfg = compose_cfg("eval.yaml", [*overrides, "ckpt_path=some.ckpt"])
    model = utils.instantiate_system(cfg.model)
    assert isinstance(model, ClassificationSystem)
    if experiment in PAPER_FRAME_CLIPS:  # the paper's frame protocol: warm up on net.delay frames, predict the next
        assert eval_clips(cfg, model).frames == PAPER_FRAME_CLIPS[experiment]
    cfg = compose_cfg("profile.yaml", overrides)
    net = hydra.utils.instantiate(cfg.model.net)
    c, t, *spatial = (int(s) for s in cfg.input_shape)
    # an extended pool (e.g. 64 frames) needs a clip at least as long as the continual net's receptive field
    t = max(t, getattr(net, "receptive_field", t))
    assert net.eval()(torch.randn(1, c, t, *spatial)).shape[:2] == (1, cfg.data.num_classes)


def test_continual_experiment_evaluates_frames_with_enough_frames(compose_cfg):
    cfg = compose_cfg("train.yaml", ["experiment=co_conv_stack_synthetic"])
    model = utils.instantiate_system(cfg.model)
    assert cfg.eval.protocol == "frame" and cfg.eval.clip_length is None  # derived
    datamodule = instantiate_datamodule(cfg, model)
    assert datamodule.eval_clip_length == model.net.delay + 1 == 10
    assert cfg.eval.clip_length == 10  # recorded in the config the run saves


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
        utils.instantiate_system(cfg.model)


# --- input facts and evaluation clip lengths --------------------------------------------------------------------
def test_profile_takes_the_input_of_the_model_it_is_given(compose_cfg):
    cfg = compose_cfg("profile.yaml", ["model=cox3d", "mode=frame"])
    assert [int(s) for s in cfg.input_shape] == [3, 13, 160, 160] and cfg.mode == "frame"
    net = hydra.utils.instantiate(cfg.model.net)
    assert net.head.avg_pool.temporal_window == 13 and net.crop == 160 and cfg.data.num_classes == 400
    cfg = compose_cfg("profile.yaml", ["model=x3d", "model.size=m"])
    assert [int(s) for s in cfg.input_shape] == [3, 16, 224, 224]


@pytest.mark.parametrize("model", _options("model"))
def test_every_model_config_profiles_at_its_registered_input(compose_cfg, model):
    from modules.nets import input_spec

    cfg = compose_cfg("profile.yaml", [f"model={model}"])
    spec = input_spec(cfg.model.net.name)
    assert [int(s) for s in cfg.input_shape] == [spec.channels, spec.clip_length, spec.crop_size, spec.crop_size]
    assert cfg.data.sampling_stride == spec.sampling_stride and cfg.data.normalisation == spec.normalisation


def test_an_experiment_keeps_its_own_data_in_the_profiler(compose_cfg):
    cfg = compose_cfg("profile.yaml", ["experiment=cox3d_tiny_moving_digits", "mode=frame"])
    assert cfg.data._target_.endswith("MovingDigitsDataModule")
    assert [int(s) for s in cfg.input_shape] == [3, 8, 32, 32]


def test_an_explicit_eval_clip_length_too_short_for_the_protocol_is_an_error(compose_cfg):
    def clips(windows: str, length: int | None) -> int:
        overrides = [
            "model=co_conv_stack",
            "eval=extended",
            f"eval.windows={windows}",
            f"eval.clip_length={'null' if length is None else length}",
        ]
        cfg = compose_cfg("train.yaml", overrides)
        return eval_clips(cfg, utils.instantiate_system(cfg.model)).frames

    # co_conv_stack: net.delay = window - 1 + 2 (two k3 convs), one frame more for the output
    assert clips("[4,8]", None) == 10 and clips("[4,16]", None) == 18
    assert clips("[4,8]", 10) == 10 and clips("[4,16]", 24) == 24  # long enough: kept
    with pytest.raises(ValueError, match=r"extended protocol, which needs 18 frames.*eval\.clip_length=18"):
        clips("[4,16]", 10)


def test_a_clip_longer_than_the_videos_is_announced_up_front(compose_cfg, caplog):
    moving_digits = [o for o in NEEDS[("data", "moving_digits")] if not o.startswith("data.num_frames")]
    base = ["experiment=cox3d_tiny_moving_digits", *moving_digits, "data.num_frames=32", "data.sampling_stride=1"]
    cfg = compose_cfg("train.yaml", [*base, "eval=extended", "eval.windows=[8,32]"])
    with caplog.at_level("WARNING", logger="experiments.inputs"):
        datamodule = instantiate_datamodule(cfg, utils.instantiate_system(cfg.model))
    assert datamodule.max_clip_frames() == 32 and datamodule.eval_clip_length == 41
    assert "41-frame clips" in caplog.text and "32 distinct frames" in caplog.text
    # stride 2: 16 distinct frames, fewer than the transient sweep's first output (17): its curve would mean nothing
    cfg = compose_cfg("train.yaml", [*base[:-1], "data.sampling_stride=2", "eval=transient"])
    with pytest.raises(ValueError, match=r"transient protocol.*frame 17.*16 distinct frames"):
        instantiate_datamodule(cfg, utils.instantiate_system(cfg.model))


@pytest.mark.parametrize(
    ("protocol", "column", "expected"),
    [
        (["eval=extended", "eval.windows=[8,16,32]"], "window", [8, 16, 32]),
        (["eval=transient"], "frames_seen", list(range(17, 27))),  # net.delay + 1 .. the receptive field, per fill
    ],
)
def test_the_tiny_experiment_sweeps_end_to_end_at_derived_lengths(compose_cfg, tmp_path, protocol, column, expected):
    from experiments.eval import evaluate

    moving_digits = [o for o in NEEDS[("data", "moving_digits")] if not o.startswith("data.num_frames")]
    overrides = ["experiment=cox3d_tiny_moving_digits", *protocol, *moving_digits, "data.num_frames=48", "logger=csv"]
    cfg = compose_cfg("eval.yaml", [*overrides, "data.batch_size=2", "trainer.limit_test_batches=1"])
    metrics = evaluate(cfg)
    rows = list(csv.DictReader((tmp_path / "run" / "protocol_results.csv").read_text().splitlines()))
    assert sorted({int(r[column]) for r in rows}) == expected
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows) and "test/top1" in metrics


def test_bench_pairs_default_to_the_registered_inputs(compose_cfg):
    cfg = compose_cfg("bench.yaml")
    assert [(p.clip, p.get("input_shape")) for p in cfg.pairs] == [("x3d_s", None), ("x3d_m", None)]
    assert [clip_input_shape(p.clip) for p in cfg.pairs] == [(3, 13, 160, 160), (3, 16, 224, 224)]
