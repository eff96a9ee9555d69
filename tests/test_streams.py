"""Multi-stream evaluation: eval runs save their test logits in loader order, ``experiments.streams`` sums 2-4 of
them and scores the sum, and refuses runs over different samples. Two tiny runs on the synthetic skeletons (one
checkpoint tested on the joint and on the bone stream, and stepped frame by frame) feed it end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from experiments import streams
from experiments.eval import evaluate
from experiments.train import train
from tests.conftest import CONFIGS

#: a tiny synthetic-skeleton run: 24 training and 12 test samples, 4 / 8 / 16 channels, one epoch
TINY = ["logger=csv", "data.num_train=24", "data.num_val=12", "data.batch_size=12", "model.net.width=0.0625",
        "trainer.max_epochs=1"]  # fmt: skip


def _compose(name: str, overrides: list[str], out: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(name, [*overrides, f"paths.output_dir={out}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train ST-GCN* once (joint), then test it offline on the joint and the bone stream and as CoST-GCN* frame by
    frame with a 200-frame pool (outputs from frame 280 on)."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("streams")
    common = [*TINY, f"paths.data_dir={root / 'data'}"]
    train(
        _compose(
            "train.yaml",
            [
                "experiment=st_gcn_mod_synthetic_skeletons",
                *common,
                "test=false",
                "callbacks.progress_bar.refresh_rate=0",
            ],
            root / "train",
        )
    )
    ckpt = f"ckpt_path={next((root / 'train' / 'checkpoints').glob('epoch_*.ckpt'))}"
    out = {}
    for name, experiment, extra in (
        ("joint", "st_gcn_mod_synthetic_skeletons", []),
        ("bone", "st_gcn_mod_synthetic_skeletons", ["data.stream=bone"]),
        ("frame", "cost_gcn_mod_synthetic_skeletons", ["model.net.pool_size=200"]),
    ):
        out[name] = root / name
        out[f"{name}_metrics"] = evaluate(_compose("eval.yaml", [f"experiment={experiment}", *common, ckpt, *extra],
                                                   out[name]))  # fmt: skip
    return out


def test_eval_saves_the_test_logits_in_loader_order(runs):
    logits, labels, samples = streams.load_run(runs["joint"])
    assert logits.shape == (12, 12) and labels.shape == (12,) and len(samples) == 12
    accuracy = float((logits.argmax(1) == labels).mean())
    assert accuracy == pytest.approx(runs["joint_metrics"]["test/top1"], abs=1e-6)


def test_two_streams_fuse_by_summing_their_logits(runs, tmp_path):
    result = streams.main([str(runs["joint"]), str(runs["bone"]), "--out", str(tmp_path / "fused.json")])
    joint, labels, _ = streams.load_run(runs["joint"])
    bone, _, _ = streams.load_run(runs["bone"])
    assert result["top1"] == pytest.approx(float(((joint + bone).argmax(1) == labels).mean()))
    assert result["streams"][1]["top1"] == pytest.approx(runs["bone_metrics"]["test/top1"], abs=1e-6)
    assert json.loads((tmp_path / "fused.json").read_text())["top5"] == result["top5"]


def test_the_frame_protocol_run_writes_accuracy_against_frames_seen(runs):
    rows = list(csv.DictReader((runs["frame"] / "protocol_results.csv").read_text().splitlines()))
    assert [int(r["frames_seen"]) for r in rows] == list(range(280, 301))  # delay 279 = 80 + 200 - 1
    assert float(rows[-1]["value"]) == pytest.approx(runs["frame_metrics"]["test/top1"])
    assert (runs["frame"] / streams.LOGITS).is_file()  # a frame run fuses like any other


# --- refusals -------------------------------------------------------------------------------------------------------
def _run(folder: Path, logits: np.ndarray, labels: list[int], samples: list[str] | None = None) -> Path:
    folder.mkdir(parents=True)
    np.save(folder / streams.LOGITS, logits.astype(np.float32))
    np.save(folder / streams.LABELS, np.array(labels))
    if samples is not None:
        (folder / streams.SAMPLES).write_text("".join(f"{s}\n" for s in samples))
    return folder


def test_fusion_scores_top1_and_top5(tmp_path):
    a = np.array([[3.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]])  # right, wrong
    b = np.array([[0.0, 2, 0, 0, 0, 0], [0, 5, 0, 0, 0, 0]])  # wrong, right: the sum is right twice
    result = streams.fuse([_run(tmp_path / "a", a, [0, 1]), _run(tmp_path / "b", b, [0, 1])])
    assert [s["top1"] for s in result["streams"]] == [0.5, 0.5] and result["top1"] == 1.0 and result["top5"] == 1.0


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"labels": [1, 0]}, "labels differ from .* at 0"),
        ({"samples": ["s1", "s0"]}, "sample 0 is 's1'.* has 's0'"),
        ({"logits": np.zeros((3, 6)), "labels": [0, 1, 2]}, r"logits \(3, 6\) vs \(2, 6\)"),
        ({"logits": np.zeros((2, 5))}, r"logits \(2, 5\) vs \(2, 6\)"),
    ],
)
def test_runs_over_other_samples_are_refused(tmp_path, second, message):
    first = _run(tmp_path / "a", np.zeros((2, 6)), [0, 1], ["s0", "s1"])
    other = {"logits": np.zeros((2, 6)), "labels": [0, 1], "samples": ["s0", "s1"], **second}
    with pytest.raises(ValueError, match=message):
        streams.fuse([first, _run(tmp_path / "b", other["logits"], other["labels"], other["samples"])])


def test_run_counts_and_missing_logits_are_errors(tmp_path):
    run = _run(tmp_path / "a", np.zeros((2, 6)), [0, 1])
    with pytest.raises(ValueError, match="2 to 4"):
        streams.fuse([run])
    with pytest.raises(ValueError, match="2 to 4"):
        streams.fuse([run] * 5)
    with pytest.raises(FileNotFoundError, match=r"experiments\.eval"):
        streams.fuse([run, tmp_path / "train_run"])
