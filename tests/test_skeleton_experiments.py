"""The continual ST-GCN study's configs and protocols: the skeleton model config and its 12 variants, the paper-row
experiments on tiny arrays in the prepared layout, the recipe (scaled lr, per-step schedules), the clip window of a
multi-window twin, and the frame protocol's accuracy against frames seen on skeleton clips (N, C, T, V, M)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from experiments import utils
from experiments.inputs import instantiate_datamodule
from experiments.skeleton_resolvers import scaled_lr, skeleton_data, skeleton_run
from modules.nets import build, list_models
from modules.systems import ClassificationSystem
from modules.systems.schedules import adamw, cyclic_lr, one_cycle
from tests.conftest import CONFIGS
from tests.datamodules.test_skeletons import write_prepared

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = ["st_gcn", "agcn", "s_tr", "st_gcn_mod", "agcn_mod", "s_tr_mod",
            "cost_gcn", "coagcn", "cos_tr", "cost_gcn_mod", "coagcn_mod", "cos_tr_mod"]  # fmt: skip
ROWS = sorted(p.stem for p in (CONFIGS / "experiment" / "skeletons").glob("*.yaml"))
#: DATA of the make targets -> (data config, subset)
DATASETS = {"ntu60_xsub": ("ntu60", "xsub"), "ntu60_xview": ("ntu60", "xview"), "ntu120_xsub": ("ntu120", "xsub"),
            "ntu120_xset": ("ntu120", "xset"), "kinetics": ("kinetics", None)}  # fmt: skip


def _small(variant: str) -> str:
    """A width at which a real batch is quick (S-TR's 8 heads need multiples of 32 channels)."""
    return f"model.net.width={0.5 if 's_tr' in variant else 0.125}"


def test_the_rows_are_the_twelve_nets():
    assert sorted(VARIANTS) == ROWS


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_of_the_skeleton_config_builds_its_net(compose_cfg, variant):
    cfg = compose_cfg("train.yaml", ["model=skeleton", f"model.variant={variant}", "data=synthetic_skeletons"])
    assert cfg.model.net.name == variant in list_models()
    model = utils.instantiate_system(cfg.model)  # drops `variant`
    reference = build(variant, num_classes=12)
    assert model.net.state_dict().keys() == reference.state_dict().keys()
    assert model.hparams.clip_window == "first" and model.hparams.scheduler_interval == "step"


@pytest.mark.parametrize("row", ROWS)
def test_every_row_composes_for_every_entry_point(compose_cfg, row):
    overrides = [f"experiment=skeletons/{row}"]
    cfg = compose_cfg("train.yaml", overrides)
    assert cfg.run_name == f"{row}_ntu60_xsub_joint" and cfg.model.net.name == row and cfg.eval.protocol == "clip"
    assert compose_cfg("eval.yaml", [*overrides, "ckpt_path=x.ckpt"]).model.net.name == row
    assert list(compose_cfg("profile.yaml", overrides).input_shape) == [3, 300, 25, 2]


@pytest.mark.parametrize("data", sorted(DATASETS))
def test_every_dataset_and_stream_names_the_run_after_its_column(compose_cfg, data):
    name, subset = DATASETS[data]
    overrides = ["experiment=skeletons/cost_gcn_mod", f"data=skeletons/{name}", "data.stream=joint_bone"]
    cfg = compose_cfg("train.yaml", overrides + ([] if subset is None else [f"data.subset={subset}"]))
    joints = 18 if name == "kinetics" else 25
    assert cfg.run_name == f"cost_gcn_mod_{data}_joint_bone" and cfg.model.net.in_channels == 6
    assert cfg.model.net.graph == ("kinetics" if name == "kinetics" else "ntu")
    assert list(cfg.input_shape) == [6, 300, joints, 2] and cfg.model.net.num_classes == cfg.data.num_classes


@pytest.mark.parametrize(
    ("row", "batch", "lr", "epochs", "scheduler"),
    [
        ("st_gcn_mod", 8, 0.1 / 64 * 8, 30, "one_cycle"),  # spec B4: the * nets
        ("cost_gcn_mod", 12, 0.025 / 4, 20, "one_cycle"),  # 0.025 for 12 x 4 devices
        ("cost_gcn", 18, 0.4 / 4, 20, "cyclic_lr"),  # 0.4 for 18 x 4 devices, SgdCyclicLrOptimizer
        ("s_tr", 8, 0.1, 50, "MultiStepLR"),  # 0.1 / 8 per sample
    ],
)
def test_the_rows_follow_the_paper_recipe(compose_cfg, row, batch, lr, epochs, scheduler):
    cfg = compose_cfg("train.yaml", [f"experiment=skeletons/{row}"])
    assert (cfg.data.batch_size, cfg.trainer.max_epochs) == (batch, epochs)
    assert cfg.model.optimizer.lr == pytest.approx(lr) and cfg.model.optimizer.momentum == 0.9
    assert cfg.model.optimizer.weight_decay == 1e-4 and cfg.model.scheduler._target_.endswith(scheduler)
    cfg = compose_cfg("train.yaml", [f"experiment=skeletons/{row}", "trainer.devices=4"])
    assert cfg.model.optimizer.lr == pytest.approx(4 * lr)  # linear scaling with the devices


#: one row per architecture and kind in the fast suite; the others are slow
FAST_ROWS = {"cost_gcn", "coagcn_mod", "s_tr"}


@pytest.mark.parametrize("row", [pytest.param(r, marks=[] if r in FAST_ROWS else pytest.mark.slow) for r in ROWS])
def test_every_row_runs_a_real_batch_on_prepared_arrays(compose_cfg, tmp_path, row):
    write_prepared(tmp_path / "data" / "ntu60" / "xview", counts=(("train", 2), ("val", 2)))
    overrides = [f"experiment=skeletons/{row}", "data.subset=xview", "data.num_workers=0", _small(row)]
    cfg = compose_cfg("train.yaml", [*overrides, f"paths.data_dir={tmp_path / 'data'}"])
    model = utils.instantiate_system(cfg.model)
    datamodule = instantiate_datamodule(cfg, model)
    datamodule.setup("test")
    clip, _target = next(iter(datamodule.test_dataloader()))
    assert clip.shape == (2, 3, 300, 25, 2)
    with torch.no_grad():
        assert model.eval()(clip).shape == (2, 60)


# --- recipe -------------------------------------------------------------------------------------------------------
def test_resolvers_and_their_errors():
    assert scaled_lr(0.1, 64, 8, 1) == pytest.approx(0.0125) and scaled_lr(0.1, 64, 8, [0, 1]) == pytest.approx(0.025)
    assert skeleton_data("channels", "joint_bone") == 6 and skeleton_data("joints", "kinetics") == 18
    assert (
        skeleton_data("graph", "ntu120") == "ntu"
        and skeleton_run("cos_tr", "kinetics", None, "bone") == "cos_tr_kinetics_bone"
    )
    with pytest.raises(ValueError, match=r"trainer\.devices as a number"):
        scaled_lr(0.1, 64, 8, "auto")
    with pytest.raises(KeyError, match="none of"):
        skeleton_data("joints", "ntu90")


def _optimised(scheduler, epochs: int = 3, steps: int = 12) -> tuple[torch.optim.Optimizer, object]:
    net = build("st_gcn_mod", num_classes=4, width=0.125)
    model = ClassificationSystem(net, 4, optimizer=lambda params: torch.optim.SGD(params, lr=0.4, momentum=0.9),
                                 scheduler=scheduler, scheduler_interval="step")  # fmt: skip
    model._trainer = SimpleNamespace(estimated_stepping_batches=steps, max_epochs=epochs)
    config = model.configure_optimizers()
    return config["optimizer"], config["lr_scheduler"]["scheduler"]


def test_per_step_schedules_take_their_length_from_the_fit():
    from functools import partial

    optimizer, scheduler = _optimised(partial(one_cycle))
    assert scheduler.total_steps == 12 and optimizer.param_groups[0]["max_lr"] == pytest.approx(0.4)
    optimizer, scheduler = _optimised(partial(cyclic_lr))  # 4 steps per epoch: 1 up, 3 down
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.4, 0.3, 0.2, 0.1])
    _, scheduler = _optimised(partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1.0, total_steps=7))
    assert scheduler.total_steps == 7  # a length the config gives is kept


def test_adamw_takes_sgds_keywords():
    optimizer = adamw([torch.nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.8, weight_decay=1e-4)
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.999) and optimizer.param_groups[0]["weight_decay"] == 1e-4


# --- protocols on skeleton clips ------------------------------------------------------------------------------------
def _system(net: torch.nn.Module, **kwargs) -> ClassificationSystem:
    return ClassificationSystem(net.eval(), 5, optimizer=torch.optim.SGD, **kwargs).eval()


def test_the_clip_window_of_a_multi_window_twin():
    torch.manual_seed(0)
    offline = build("st_gcn", num_classes=5, width=0.125).eval()
    twin = build("cost_gcn", num_classes=5, width=0.125)
    twin.load_state_dict(offline.state_dict())
    clip = torch.randn(2, 3, 300, 25, 2)
    with torch.no_grad():
        windows = twin.eval()(clip)
        assert windows.shape == (2, 5, 39) and twin.offline_index == 19
        assert torch.equal(_system(twin, clip_window="first")(clip), windows[:, :, 0])
        assert torch.allclose(_system(twin, clip_window="offline")(clip), offline(clip), atol=1e-4)
        assert torch.equal(_system(twin, clip_window=-1)(clip), windows[:, :, -1])
        with pytest.raises(ValueError, match="several outputs"):
            _system(twin)(clip)
    with pytest.raises(ValueError, match="clip_window must be"):
        _system(twin, clip_window="last")
    with pytest.raises(ValueError, match="offline_index"):
        _system(offline, clip_window="offline")


@pytest.mark.parametrize(("variant", "frames", "seen"), [("cost_gcn_mod", 110, list(range(100, 111))),
                                                         ("cost_gcn", 308, [297, 301, 305])])  # fmt: skip
def test_the_frame_protocol_steps_over_time_and_scores_every_output(variant, frames, seen):
    """``(N, C, T, V, M)`` clips step over dim 2; the * twin (built for 100 frames: pool 20, delay 99) predicts
    every frame from frame 100, the original (delay 296) every 4 frames from frame 297."""
    torch.manual_seed(0)
    net = build(variant, num_classes=5, width=0.125, sequence_len=100 if variant.endswith("_mod") else 300)
    model = _system(net, eval_protocol="frame", frame_curve=True)
    clip, target = torch.randn(3, 3, frames, 25, 2), torch.tensor([0, 1, 2])
    model.on_test_epoch_start()
    logits = model.stage_logits(clip, target, "test")
    model.log = lambda *args, **kwargs: None  # outside a Trainer
    model.on_test_epoch_end()
    rows = model.protocol_results
    assert [r["frames_seen"] for r in rows] == seen and all(r["protocol"] == "frame" for r in rows)
    with torch.no_grad():
        windows = net(clip)  # every pool window of the clip: what the stream emits, frame by frame
    # the stream's j-th output is window j of the clip (CoST-GCN's clip has 19 more, padded, at the end)
    assert windows.shape[2] == len(seen) + (0 if variant.endswith("_mod") else 38)
    assert torch.allclose(logits, windows[:, :, len(seen) - 1], atol=1e-4)
    assert torch.equal(model.test_predictions[0][0], logits) and torch.equal(model.test_predictions[0][1], target)
