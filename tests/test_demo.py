"""`make demo`: which overrides reach which stage, and the chain end to end on a shrunken Moving Digits (slow:
trains, steps, profiles)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from experiments import demo as demo_module
from experiments import demo_skeletons
from experiments.demo import demo
from tests.conftest import CONFIGS


def test_each_stage_composes_with_the_common_and_its_own_overrides(compose_cfg, tmp_path, monkeypatch):
    """``overrides`` reach every stage, ``train_overrides`` training only, ``profile_overrides`` both profiling
    stages only (the stages are stubbed: this checks the composed configs, not the runs)."""
    cfg = compose_cfg(
        "demo.yaml",
        ['overrides=["seed=7"]', 'train_overrides=["trainer.max_epochs=3"]', 'profile_overrides=["repeats=3"]'],
    )
    seen: dict[str, DictConfig] = {}

    def stage(name: str, result: dict):
        def run(stage_cfg: DictConfig) -> dict:
            seen[f"{name}_{stage_cfg.get('mode', '')}" if name == "profile" else name] = stage_cfg
            return result

        return run

    profiled = {"model": "m", "gflops_per_prediction": 1e-3, "params": 1, "throughput_median": 1.0}
    monkeypatch.setattr(demo_module, "train", stage("train", {"test/top1": 0.5}))
    monkeypatch.setattr(demo_module, "evaluate", stage("eval", {"test/top1": 0.4}))
    monkeypatch.setattr(demo_module, "profile", stage("profile", {**profiled, "throughput_iqr": 0.1, "device": "cpu"}))
    monkeypatch.setattr(demo_module, "_best_checkpoint", lambda run: Path(run) / "checkpoints" / "epoch_000.ckpt")
    monkeypatch.setattr(demo_module, "accuracy_vs_macs", lambda table, path, **kwargs: None)
    Path(cfg.paths.output_dir).mkdir(parents=True)  # the real training stage makes it
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        demo(cfg)
    assert set(seen) == {"train", "eval", "profile_clip", "profile_frame"}
    assert all(c.seed == 7 for c in seen.values())
    assert seen["train"].trainer.max_epochs == 3 and seen["eval"].trainer.max_epochs != 3
    assert seen["profile_clip"].repeats == seen["profile_frame"].repeats == 3
    assert seen["profile_clip"].device == "cpu" and seen["profile_frame"].mode == "frame"


@pytest.mark.slow
def test_demo_chain_writes_results_and_figure(compose_cfg, tmp_path):
    shrink = [
        "logger=csv", "trainer.max_epochs=1", "data.num_train=40",
        "data.num_val=10", "data.num_test=10", "data.num_workers=0", "data.progress=false",
    ]  # fmt: skip
    quoted = ",".join(f'"{s}"' for s in shrink)
    stages = ['profile_overrides=["repeats=2","warmup=1"]', 'train_overrides=["callbacks.progress_bar.refresh_rate=0"]']
    cfg = compose_cfg("demo.yaml", [f"overrides=[{quoted}]", *stages])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):  # as hydra.main does for the demo
        table = demo(cfg)
    assert list(table["protocol"]) == ["clip", "frame"]
    assert table["gflops"].iloc[0] > 5 * table["gflops"].iloc[1]  # one frame of the twin vs a whole clip
    saved = pd.read_csv(tmp_path / "run" / "results.csv")
    assert saved["top1"].between(0, 1).all()
    assert (tmp_path / "run" / "acc_vs_flops.png").stat().st_size > 5_000


# --- make demo-skeletons ---------------------------------------------------------------------------------------------
def test_the_skeleton_demo_runs_each_stream_and_fuses_them(compose_cfg, monkeypatch):
    """Every stream trains (test=false), then tests offline and frame by frame with that stream's checkpoint; both
    nets are profiled; the table has a row per stream and protocol plus the fused streams (stages stubbed)."""
    from experiments import demo_skeletons as skeleton_demo

    cfg = compose_cfg("demo_skeletons.yaml", ["parallel=1", 'overrides=["seed=7"]', 'profile_overrides=["repeats=3"]'])
    seen: dict[str, DictConfig] = {}

    def evaluate(stage_cfg: DictConfig) -> dict:
        run = Path(stage_cfg.paths.output_dir)
        seen[run.name] = stage_cfg
        run.mkdir(parents=True)  # what the fusion reads: a right answer from the joint, a wrong one from the bone
        right = run.name.endswith("joint")
        np.save(run / "test_logits.npy", np.eye(12, dtype=np.float32)[[0 if right else 1]] * (2 if right else 1))
        np.save(run / "test_labels.npy", np.array([0]))
        return {"test/top1": float(right), "test/top5": 1.0}

    def profile(stage_cfg: DictConfig) -> dict:
        seen[f"profile_{stage_cfg.mode}"] = stage_cfg
        return {"gflops_per_prediction": 0.5 if stage_cfg.mode == "clip" else 0.01, "params": 10,
                "throughput_median": 2.0, "device": "cpu"}  # fmt: skip

    monkeypatch.setattr(skeleton_demo, "train", lambda stage_cfg: seen.setdefault(f"train_{stage_cfg.data.stream}",
                                                                                  stage_cfg))  # fmt: skip
    monkeypatch.setattr(skeleton_demo, "evaluate", evaluate)
    monkeypatch.setattr(skeleton_demo, "profile", profile)
    monkeypatch.setattr(skeleton_demo, "_best_checkpoint", lambda run: Path(run) / "epoch_000.ckpt")
    monkeypatch.setattr(skeleton_demo, "accuracy_vs_macs", lambda table, path, **kwargs: None)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        table = skeleton_demo.demo(cfg)
    assert set(seen) == {"train_joint", "train_bone", "eval_clip_joint", "eval_frame_joint", "eval_clip_bone",
                         "eval_frame_bone", "profile_clip", "profile_frame"}  # fmt: skip
    assert all(c.seed == 7 for c in seen.values()) and not seen["train_bone"].test
    assert seen["eval_frame_bone"].model.net.name == "cost_gcn_mod" and seen["eval_frame_bone"].data.stream == "bone"
    assert seen["eval_clip_joint"].ckpt_path.endswith("train_joint/epoch_000.ckpt")
    assert seen["profile_clip"].repeats == 3 and list(seen["profile_frame"].input_shape) == [3, 300, 25, 2]
    assert list(table["stream"]) == ["joint", "bone", "joint+bone"] * 2
    fused = table[table["stream"] == "joint+bone"]
    assert list(fused["top1"]) == [1.0, 1.0] and list(fused["gflops"]) == [1.0, 0.02]  # two nets' FLOPs


@pytest.mark.slow
def test_skeleton_demo_chain_writes_results_and_figure(compose_cfg, tmp_path):
    """Both streams in parallel processes on a shrunken synthetic set: the table, the fused rows and the figure."""
    shrink = ["logger=csv", "trainer.max_epochs=1", "data.num_train=24", "data.num_val=12", "model.net.width=0.0625"]
    quoted = ",".join(f'"{s}"' for s in shrink)
    cfg = compose_cfg("demo_skeletons.yaml", [f"overrides=[{quoted}]", 'profile_overrides=["repeats=2","warmup=1"]'])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        table = demo_skeletons.demo(cfg)
    assert list(table["protocol"]) == ["clip"] * 3 + ["frame"] * 3
    clip, frame = table[table["protocol"] == "clip"], table[table["protocol"] == "frame"]
    assert list(clip["top1"]) == pytest.approx(list(frame["top1"]))  # the * twin steps to its offline net
    assert clip["gflops"].iloc[0] > 100 * frame["gflops"].iloc[0]
    assert (tmp_path / "run" / "acc_vs_flops.png").stat().st_size > 5_000
    assert (tmp_path / "run" / "eval_frame_bone" / "test_logits.npy").is_file()


# --- make demo-transformers ------------------------------------------------------------------------------------------
def test_transformer_demo_trains_tests_and_profiles_every_net(compose_cfg, tmp_path):
    """Every net of the demo on a shrunken generated set, for real (one process): a row per net with window and
    stream mAP, the continual nets' MACs per step far below OadTR-b2's per window, the results CSV and the figure."""
    from experiments import demo_transformers

    shrink = ["logger=csv", "trainer.max_epochs=1", "data.num_train=4", "data.num_test=2", "data.min_steps=140",
              "data.max_steps=150", "data.batch_size=16", "model.net.embed_dim=16", "model.net.ff_dim=16",
              "model.net.num_heads=2", "data.generator_seed=3"]  # fmt: skip
    quoted = ",".join(f'"{s}"' for s in shrink)
    cfg = compose_cfg("demo_transformers.yaml", [f"overrides=[{quoted}]", "parallel=1", "profile.repeats=2",
                                                 "profile.warmup=1", "profile.min_time_s=0"])  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        table = demo_transformers.demo(cfg).set_index("model")
    assert list(table.index) == ["OadTR-b2", "CoOadTR-b1", "CoOadTR-b2", "CoOadTR-b1, 1 step"]
    assert list(table["prediction"]) == ["window", "step", "step", "step"]
    assert list(table["sequence_len"]) == [64, 64, 64, 1]
    for column in ("window_mAP", "stream_mAP", "window_mcAP", "stream_mcAP"):
        assert table[column].between(0, 1).all(), column
    assert table.loc["OadTR-b2", "mmacs_per_prediction"] > 10 * table.loc["CoOadTR-b1", "mmacs_per_prediction"]
    saved = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(saved) == 4 and (tmp_path / "run" / "map_vs_flops.png").stat().st_size > 5_000
    stream_run = tmp_path / "run" / "CoOadTR-b2" / "eval_stream"
    assert (stream_run / "metrics.json").is_file() and (stream_run / "config.yaml").is_file()
