"""Synthetic skeletons: the NTU-60 layout, determinism, versioning, and that the class is in the temporal order."""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from datamodules.skeleton_prep import bone, bone_pairs
from datamodules.skeletons import SkeletonDataModule
from datamodules.synthetic_skeletons import (
    ACTIONS,
    MARKER,
    VERSION,
    SyntheticSkeletonDataModule,
    SyntheticSkeletonParams,
    animate,
    dataset_root,
    ensure_synthetic_skeletons,
)

SMALL = SyntheticSkeletonParams(num_train=48, num_val=24)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = dataset_root(tmp_path_factory.mktemp("synthetic"))
    assert ensure_synthetic_skeletons(folder, SMALL)
    return folder


def test_files_are_the_prepared_ntu60_layout(generated):
    assert generated.name == f"synthetic_skeletons_v{VERSION}"
    folder = generated / "ntu60" / "xsub"
    for part, count in SMALL.counts().items():
        for stream in ("joint", "bone"):
            array = np.load(folder / f"{part}_data_{stream}.npy", mmap_mode="r")
            assert array.shape == (count, 3, 300, 25, 2) and array.dtype == np.float32
        names, labels = pickle.loads((folder / f"{part}_label.pkl").read_bytes())
        assert len(names) == len(labels) == count and all(ACTIONS[y] in n for n, y in zip(names, labels))
        assert max(Counter(labels).values()) - min(Counter(labels).values()) <= 1 and len(set(labels)) == 12
    joint = np.load(folder / "train_data_joint.npy")
    np.testing.assert_array_equal(np.load(folder / "train_data_bone.npy"), bone(joint, bone_pairs("ntu60")))
    assert json.loads((generated / MARKER).read_text()) == SMALL.to_json()


def test_sequences_are_zero_padded_and_the_second_person_is_sometimes_absent(generated):
    joint = np.load(generated / "ntu60" / "xsub" / "train_data_joint.npy")
    present = np.abs(joint).sum(axis=(1, 3))  # (N, T, M)
    lengths = (present[..., 0] > 0).sum(axis=1)
    assert SMALL.min_frames <= lengths.min() and lengths.max() <= SMALL.max_frames
    for n, length in enumerate(lengths):
        assert present[n, :length, 0].all() and not present[n, length:].any()  # real frames, then zeros
    second = present[..., 1].any(axis=1)
    assert 0 < second.sum() < len(second)
    # a plausible adult: hip (1) to head (4) of 0.6-0.8 m, upper arm (5-6) ~0.28 m, up to noise
    first = joint[:, :, 0, :, 0]  # (N, 3, V) first frame
    assert 0.55 < np.linalg.norm(first[:, :, 3] - first[:, :, 0], axis=1).mean() < 0.85
    assert 0.2 < np.linalg.norm(first[:, :, 5] - first[:, :, 4], axis=1).mean() < 0.35


def test_generation_is_deterministic_and_versioned(generated, tmp_path):
    again = dataset_root(tmp_path)
    assert ensure_synthetic_skeletons(again, SMALL)
    assert not ensure_synthetic_skeletons(again, SMALL)  # already there
    for path in sorted((generated / "ntu60").rglob("*.*")):
        assert path.read_bytes() == (again / path.relative_to(generated)).read_bytes(), path.name
    other = dataclasses.replace(SMALL, seed=1, num_train=24)
    assert ensure_synthetic_skeletons(again, other)  # other parameters regenerate in place
    assert np.load(again / "ntu60" / "xsub" / "train_data_joint.npy", mmap_mode="r").shape[0] == 24
    (tmp_path / "foreign").mkdir()
    with pytest.raises(FileExistsError, match=r"holds no generation\.json"):
        ensure_synthetic_skeletons(tmp_path / "foreign", SMALL)


def test_a_reversed_action_is_its_pair_played_backwards():
    for forward in range(0, len(ACTIONS), 2):
        a = animate(ACTIONS[forward], np.random.default_rng(forward), SMALL)
        b = animate(ACTIONS[forward + 1], np.random.default_rng(forward), SMALL)
        np.testing.assert_array_equal(b, a[:, ::-1])
        assert np.abs(a[:, -1] - a[:, 0]).max() > 0.05  # and it moves: more than the noise


def _features(count: int, split: int, frame_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: the first person's joints (relative to the spine base) in one random frame, the same at 20 %
    and 80 % of the sequence, and the label."""
    one, two, labels = [], [], []
    for i in range(count):
        label = i % len(ACTIONS)
        person = animate(ACTIONS[label], np.random.default_rng([7, split, i]), SMALL)[..., 0]  # (3, L, V)
        person = person - person[:, :, :1]
        length = person.shape[1]
        one.append(person[:, frame_rng.integers(length)].ravel())
        two.append(np.concatenate([person[:, int(0.2 * length)].ravel(), person[:, int(0.8 * length)].ravel()]))
        labels.append(label)
    return np.array(one), np.array(two), np.array(labels)


def _nearest(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    return labels[((test[:, None] - train[None]) ** 2).sum(-1).argmin(1)]


def test_one_frame_cannot_tell_a_pair_apart_but_two_frames_can():
    rng = np.random.default_rng(0)
    train_one, train_two, train_labels = _features(360, 0, rng)
    test_one, test_two, test_labels = _features(240, 1, rng)
    frame = _nearest(train_one, train_labels, test_one)
    same_pair = frame // 2 == test_labels // 2
    assert same_pair.mean() > 0.4  # one frame identifies the pair well above chance (1/6) ...
    assert (frame == test_labels)[same_pair].mean() < 0.65  # ... but not the member: chance is 0.5
    order = _nearest(train_two, train_labels, test_two)
    assert (order == test_labels).mean() > 0.8  # the order of two frames tells the class: not noise


def test_read_by_the_ntu_datamodule_unchanged(generated):
    module = SkeletonDataModule(root=generated, dataset="ntu60", subset="xsub", stream="joint_bone", batch_size=8,
                                num_workers=0)  # fmt: skip
    module.setup()
    assert module.num_classes == 12 and module.classes == list(ACTIONS)
    clip, label = next(iter(module.train_dataloader()))
    assert clip.shape == (8, 6, 300, 25, 2) and clip.dtype == torch.float32 and label.dtype == torch.int64


class _TinyTemporalNet(nn.Module):
    """Joints and people flattened into channels, one temporal convolution, a mean over time."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(channels * 25 * 2, 16, 9), nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, v, m = x.shape
        return self.fc(self.conv(x.permute(0, 1, 3, 4, 2).reshape(b, c * v * m, t)).relu().mean(-1))


def test_the_classification_system_consumes_the_batches(tmp_path):
    from modules.systems import ClassificationSystem

    module = SyntheticSkeletonDataModule(root=tmp_path, num_train=24, num_val=12, batch_size=8, limit=16)
    system = ClassificationSystem(_TinyTemporalNet(3, 12), 12, optimizer=functools.partial(torch.optim.SGD, lr=0.01))
    trainer = pl.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.fit(system, datamodule=module)
    assert (tmp_path / f"synthetic_skeletons_v{VERSION}" / MARKER).is_file()  # generated by prepare_data
    trainer.test(system, datamodule=module, verbose=False)
    assert "test/top1" in trainer.callback_metrics
    with pytest.raises(ValueError, match="the synthetic skeletons have 12 classes"):
        SyntheticSkeletonDataModule(root=tmp_path, num_classes=60)
