"""The generated online-detection features: THUMOS14 layout, determinism, the marker, classes that need history."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datamodules.online_detection import OnlineDetectionDataModule
from datamodules.synthetic_thumos import (
    MARKER,
    PHASES,
    GeneratedDetectionDataModule,
    GeneratedDetectionParams,
    dataset_root,
    ensure_generated,
)

SMALL = GeneratedDetectionParams(num_train=3, num_test=2, min_steps=100, max_steps=150)


def _read(folder: Path, name: str) -> dict:
    with open(folder / name, "rb") as f:
        return pickle.load(f)


def test_the_files_have_the_thumos14_layout_and_load_with_its_loader(tmp_path):
    folder = dataset_root(tmp_path)
    assert ensure_generated(folder, SMALL)
    info = json.loads((folder / "data_info_new.json").read_text())["THUMOS"]
    assert info["train_session_set"] == [f"video_validation_{i:07d}" for i in range(3)]
    assert info["test_session_set"] == [f"video_test_{i:07d}" for i in range(2)]
    assert len(info["class_index"]) == 22 and "THUMOS" not in " ".join(info["class_index"]).upper()
    anno, feats = _read(folder, "thumos_val_anno.pickle"), _read(folder, "thumos_anet_val.pickle")
    video = info["train_session_set"][0]
    length = anno[video]["feature_length"]
    assert anno[video]["anno"].shape == (length, 22) and (anno[video]["anno"].sum(1) == 1).all()
    assert feats[video]["rgb"].shape == (length, 48) and feats[video]["flow"].shape == (length, 16)
    dm = OnlineDetectionDataModule(root=folder, feature="anet", dim_feature=64, eval_mode="stream", seed=0)
    dm.setup()
    features, targets = dm.datasets["test"][0]
    assert features.shape[0] == 64 and targets.shape[0] == 22 and len(dm.datasets["train"]) > 0


def test_generation_is_deterministic_and_the_seed_matters(tmp_path):
    a, b, c = (dataset_root(tmp_path / n) for n in "abc")
    ensure_generated(a, SMALL)
    ensure_generated(b, SMALL)
    ensure_generated(c, GeneratedDetectionParams(num_train=3, num_test=2, min_steps=100, max_steps=150, seed=1))
    for name in ("thumos_val_anno.pickle", "thumos_anet_test.pickle", "data_info_new.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "thumos_anet_val.pickle").read_bytes() != (c / "thumos_anet_val.pickle").read_bytes()


def test_the_marker_guards_against_partial_and_foreign_folders(tmp_path):
    folder = dataset_root(tmp_path)
    assert ensure_generated(folder, SMALL) and not ensure_generated(folder, SMALL)  # the second call reuses it
    (folder / MARKER).unlink()  # as if the write had stopped before the end
    with pytest.raises(FileExistsError, match=r"holds no generation\.json"):
        ensure_generated(folder, SMALL)
    other = dataset_root(tmp_path / "other")
    ensure_generated(other, SMALL)
    bigger = GeneratedDetectionParams(num_train=4, num_test=2, min_steps=100, max_steps=150)
    assert ensure_generated(other, bigger)  # other parameters regenerate the folder
    assert len(_read(other, "thumos_val_anno.pickle")) == 4
    assert not list(other.parent.glob(".*tmp*"))


def test_every_class_appears_in_both_splits_of_the_default(tmp_path):
    folder = dataset_root(tmp_path)
    ensure_generated(folder, GeneratedDetectionParams())
    for part in ("val", "test"):
        labels = np.concatenate([a["anno"].argmax(1) for a in _read(folder, f"thumos_{part}_anno.pickle").values()])
        assert set(labels.tolist()) == set(range(22)), part


def test_one_phase_never_identifies_a_class_but_the_order_does():
    uses = Counter(p for phases in PHASES.values() for p in set(phases))
    assert min(uses.values()) >= 6  # each prototype appears in at least 6 classes
    assert len({phases[:2] for phases in PHASES.values()}) == 20  # two phases in order identify the class
    for c in range(1, 21, 2):  # pairs: the same phases, reversed
        assert PHASES[c + 1] == PHASES[c][::-1] and sorted(PHASES[c]) == sorted(PHASES[c + 1])


def test_the_datamodule_generates_on_setup_and_gives_window_batches(tmp_path):
    dm = GeneratedDetectionDataModule(
        root=tmp_path, num_train=3, num_test=2, min_steps=100, max_steps=150, batch_size=4, seed=0
    )
    dm.setup("fit")
    assert (dataset_root(tmp_path) / MARKER).is_file()
    features, target, decoder = next(iter(dm.train_dataloader()))
    assert features.shape == (4, 64, 64) and target.shape == (4, 22) and decoder.shape == (4, 22, 8)
    assert dm.num_classes == 22 and dm.ignore_index == 21
    with pytest.raises(ValueError, match="thumos14 layout"):
        GeneratedDetectionDataModule(root=tmp_path, feature="kin")


def test_the_config_composes_and_instantiates(compose_cfg, tmp_path):
    import hydra

    cfg = compose_cfg("train.yaml", ["data=synthetic_thumos", "data.eval_mode=window", f"paths.data_dir={tmp_path}"])
    dm = hydra.utils.instantiate(cfg.data, num_train=2, num_test=1, min_steps=100, max_steps=120)
    assert isinstance(dm, GeneratedDetectionDataModule) and dm.root == dataset_root(tmp_path)
    dm.prepare_data()
    dm.setup("test")
    assert dm.datasets["test"][0][0].shape == (cfg.data.dim_feature, cfg.data.sequence_len)
