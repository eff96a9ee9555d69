"""Charades: SlowFast frame lists, clip labels (train) vs video labels (eval), multi-hot targets, skips."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.charades import CharadesDataModule, CharadesDataset, read_frame_list
from datamodules.robust import README
from tests.datamodules.helpers import frame_ids, write_charades

# vid -> labels of each frame; "B2" has 20 frames: labels 3 on frames 0-4, 7 on 10-11, none elsewhere
VIDEOS = {
    "train": {
        "A1": [[1, 2]] * 6 + [[]] * 4,
        "B2": [[3]] * 5 + [[]] * 5 + [[7]] * 2 + [[]] * 8,
    },
    "val": {
        "C3": [[]] * 3 + [[4, 156]] * 9 + [[0]] * 4,
        "D4": [[5]] * 3,
    },
}


@pytest.fixture
def charades(tmp_path: Path) -> Path:
    return write_charades(tmp_path / "datasets", VIDEOS)


def _dataset(dataset_dir: Path, split: str, **kwargs) -> CharadesDataset:
    kwargs = {"num_classes": 157, "frames_per_clip": 4, "sampling_stride": 2, **kwargs}
    return CharadesDataset(dataset_dir, split, **kwargs)


def _labels(target: torch.Tensor) -> list[int]:
    return torch.nonzero(target).flatten().tolist()


def test_frame_list_parsing(charades):
    frames = read_frame_list(charades / "splits" / "val.csv")
    assert frames.video_ids.tolist() == ["C3", "D4"]
    np.testing.assert_array_equal(frames.frame_offsets, [0, 16, 19])
    assert frames.paths[0] == b"C3/C3-000001.jpg" and frames.paths[-1] == b"D4/D4-000003.jpg"
    assert frames.labels(0, 3).tolist() == [] and frames.labels(2, 12).tolist() == [4, 156]
    assert frames.labels(0, 19).tolist() == [0, 4, 5, 156]


def test_eval_takes_the_centre_clip_and_the_video_labels(charades):
    dataset = _dataset(charades, "val")
    assert len(dataset) == 2 and not dataset.random
    clip, target = dataset[0]
    # 16 frames, span 7: start (16 - 7) // 2 = 4
    assert clip.shape == (4, 24, 32, 3) and frame_ids(clip) == [4, 6, 8, 10]
    assert target.dtype == torch.float32 and target.shape == (157,)
    assert _labels(target) == [0, 4, 156]  # all frames, not only the clip's
    # a 3-frame video: start 0, the last frame repeats
    clip, target = dataset[1]
    assert frame_ids(clip) == [0, 2, 2, 2] and _labels(target) == [5]


def test_test_split_is_the_val_split(charades):
    assert _dataset(charades, "test").frames.video_ids.tolist() == ["C3", "D4"]


def test_train_takes_a_random_clip_with_the_labels_of_the_frames_it_spans(charades):
    torch.manual_seed(0)
    dataset = _dataset(charades, "train", frames_per_clip=2, sampling_stride=3)  # span 4
    seen = {}
    for _ in range(200):
        clip, target = dataset[1]  # B2
        start = frame_ids(clip)[0]
        seen[start] = _labels(target)
    assert set(seen) == set(range(20 - 4 + 1))
    assert seen[0] == [3] and seen[4] == [3]  # frame 4 carries label 3
    assert seen[5] == [] and seen[6] == []  # frames 5..9 have none
    assert seen[7] == [7] and seen[11] == [7]  # frames 10..11 carry label 7
    assert seen[12] == []


def test_missing_frame_folders_are_dropped_and_counted(charades, caplog):
    for jpg in (charades / "data" / "Charades_v1_rgb" / "A1").iterdir():
        jpg.unlink()
    (charades / "data" / "Charades_v1_rgb" / "A1").rmdir()
    with caplog.at_level(logging.WARNING):
        dataset = _dataset(charades, "train")
    assert len(dataset) == 1 and dataset.missing == ["A1"] and "A1" in caplog.text


def test_a_corrupt_frame_is_skipped_and_counted(charades, caplog):
    (charades / "data" / "Charades_v1_rgb" / "C3" / "C3-000005.jpg").write_bytes(b"broken")
    dataset = _dataset(charades, "val")
    with caplog.at_level(logging.WARNING):
        assert dataset[0] is None  # evaluation leaves C3 out (the loader's collate drops it), never substitutes
    _, target = dataset[1]
    assert _labels(target) == [5]  # D4
    assert dataset.num_failed == 1 and "C3-000005.jpg" in caplog.text


def test_labels_beyond_the_class_count_are_an_error(charades):
    with pytest.raises(ValueError, match="outside"):
        _dataset(charades, "val", num_classes=100)


def test_datamodule_batches(charades):
    datamodule = CharadesDataModule(
        root=charades.parent,
        clip_length=4,
        eval_clip_length=3,
        sampling_stride=2,
        crop_size=16,
        batch_size=2,
        num_workers=0,
    )
    datamodule.setup()
    assert datamodule.multi_label and datamodule.num_classes == 157 and len(datamodule.classes) == 157
    clips, targets = next(iter(datamodule.train_dataloader()))
    assert clips.shape == (2, 3, 4, 16, 16) and targets.shape == (2, 157) and targets.dtype == torch.float32
    clips, targets = next(iter(datamodule.test_dataloader()))
    assert clips.shape == (2, 3, 3, 16, 16)
    assert targets.sum(1).tolist() == [3.0, 1.0]


def test_datamodule_checks_classes_and_root(charades, tmp_path):
    with pytest.raises(ValueError, match="lists 157 classes but num_classes=10"):
        CharadesDataModule(root=charades.parent, num_classes=10).setup("fit")
    with pytest.raises(FileNotFoundError) as error:
        CharadesDataModule(root=tmp_path / "nowhere").setup("fit")
    assert str(tmp_path / "nowhere" / "charades") in str(error.value) and str(README) in str(error.value)
