"""Kinetics: the crawler layout and JSON, class lists, missing and corrupt videos, the datamodule's batches."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from datamodules.kinetics import (
    KineticsDataModule,
    KineticsDataset,
    kinetics_classes,
    read_annotations,
    write_split_json,
)
from datamodules.robust import README
from tests.datamodules.helpers import frame_ids, write_kinetics

# three classes (one with a space, as in Kinetics); YouTube ids with "_" and "-", as real ones have
VIDEOS = {
    "train": [("a_b-c0", "air drumming", 20), ("x_1", "bowling", 12), ("-yz", "cooking", 16), ("q", "bowling", 9)],
    "validate": [("v_1", "cooking", 20), ("v-2", "air drumming", 6)],
    "test": [("t_1", "bowling", 14)],
}


@pytest.fixture
def kinetics(tmp_path: Path) -> Path:
    """A tiny Kinetics-400 tree under tmp_path/datasets; returns the dataset folder."""
    return write_kinetics(tmp_path / "datasets", VIDEOS)


def _dataset(dataset_dir: Path, split: str, **kwargs) -> KineticsDataset:
    kwargs = {"frames_per_clip": 4, "sampling_stride": 2, **kwargs}
    return KineticsDataset(dataset_dir, split, classes=kinetics_classes(dataset_dir), **kwargs)


def test_classes_are_the_sorted_training_labels(kinetics):
    assert kinetics_classes(kinetics) == ["air drumming", "bowling", "cooking"]


def test_annotations_come_from_the_split_json(kinetics):
    annotations = read_annotations(kinetics, "val")  # "val" means "validate"
    assert [(a.youtube_id, a.label, a.filename) for a in annotations] == [
        ("v_1", "cooking", "v_1_000000_000010.mp4"),
        ("v-2", "air drumming", "v-2_000000_000010.mp4"),
    ]


def test_dataset_reads_labels_and_centre_clips(kinetics):
    dataset = _dataset(kinetics, "validate")
    assert len(dataset) == 2 and not dataset.random
    clip, label = dataset[0]
    assert dataset.classes[label] == "cooking"
    # 20 frames, span 7: centre start 6; without a transform the raw uint8 frames come back
    assert clip.dtype == torch.uint8 and clip.shape == (4, 24, 32, 3)
    assert frame_ids(clip) == [6, 8, 10, 12]
    # 6 frames < span 7: start 0 and the last frame repeats
    assert frame_ids(dataset[1][0]) == [0, 2, 4, 5]


def test_training_clips_start_at_random_within_the_video(kinetics):
    torch.manual_seed(0)
    dataset = _dataset(kinetics, "train")
    assert dataset.random
    index = next(i for i in range(len(dataset)) if dataset.describe(i).endswith("a_b-c0_000000_000010.mp4"))
    starts = {frame_ids(dataset[index][0])[0] for _ in range(60)}
    assert starts == set(range(20 - 7 + 1))


def test_label_folders_may_use_underscores(tmp_path):
    dataset_dir = write_kinetics(tmp_path, VIDEOS, folder=lambda label: label.replace(" ", "_"))
    dataset = _dataset(dataset_dir, "train")
    assert len(dataset) == 4 and dataset.num_missing == 0


def test_without_json_the_folders_give_split_and_labels(tmp_path):
    dataset_dir = write_kinetics(tmp_path, VIDEOS, json_splits=False)
    assert kinetics_classes(dataset_dir) == ["air drumming", "bowling", "cooking"]
    dataset = _dataset(dataset_dir, "val")
    assert sorted(dataset.classes[label] for label in dataset.labels) == ["air drumming", "cooking"]


def test_missing_videos_are_dropped_counted_and_named(kinetics, caplog):
    (kinetics / "data" / "train" / "bowling" / "x_1_000000_000010.mp4").unlink()
    with caplog.at_level(logging.WARNING):
        dataset = _dataset(kinetics, "train")
    assert len(dataset) == 3 and dataset.num_missing == 1 and dataset.num_skipped == 1
    assert dataset.missing == ["bowling/x_1_000000_000010.mp4"]
    assert "1 of 4 annotated videos are missing" in caplog.text and "x_1_000000_000010.mp4" in caplog.text


def test_a_corrupt_video_is_skipped_and_counted(kinetics, caplog):
    (kinetics / "data" / "validate" / "cooking" / "v_1_000000_000010.mp4").write_bytes(b"\x00" * 100)
    dataset = _dataset(kinetics, "val")
    with caplog.at_level(logging.WARNING):
        assert dataset[0] is None  # evaluation leaves it out (the loader's collate drops it), never substitutes
    assert dataset.num_failed == 1 and dataset.failed_samples() == [str(dataset.paths[0])]
    _clip, label = dataset[1]
    assert dataset.classes[label] == "air drumming"
    assert dataset.num_failed == 1 and "v_1_000000_000010.mp4" in caplog.text


def test_labels_outside_the_training_classes_are_reported(kinetics, caplog):
    write_kinetics(kinetics.parent, {"test": [("new", "juggling", 8), ("t_1", "bowling", 14)]})
    with caplog.at_level(logging.WARNING):
        dataset = _dataset(kinetics, "test")
    assert (
        len(dataset) == 1 and "juggling" in caplog.text and dataset.unknown_label == ["juggling/new_000000_000010.mp4"]
    )


def test_a_missing_root_names_the_path_and_the_preparation_steps(tmp_path):
    datamodule = KineticsDataModule(root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as error:
        datamodule.setup("fit")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "kinetics400") in message and str(README) in message


def test_datamodule_batches(kinetics):
    datamodule = KineticsDataModule(
        root=kinetics.parent,
        num_classes=3,
        clip_length=4,
        eval_clip_length=6,
        sampling_stride=2,
        crop_size=16,
        batch_size=2,
        num_workers=0,
    )
    datamodule.setup()
    assert datamodule.classes == ["air drumming", "bowling", "cooking"] and not datamodule.multi_label
    clips, labels = next(iter(datamodule.train_dataloader()))
    assert clips.shape == (2, 3, 4, 16, 16) and clips.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.shape == (2,)
    assert len(datamodule.train_dataloader()) == 2  # 4 videos, batches of 2, none dropped
    clips, labels = next(iter(datamodule.val_dataloader()))
    assert clips.shape == (2, 3, 6, 16, 16)
    clips, labels = next(iter(datamodule.test_dataloader()))
    assert clips.shape == (1, 3, 6, 16, 16)
    assert datamodule.skipped() == {
        s: {"missing": 0, "unreadable": 0, "unknown_label": 0, "duplicate": 0, "failed": 0}
        for s in ("train", "val", "test")
    }


def test_datamodule_with_workers(kinetics):
    datamodule = KineticsDataModule(root=kinetics.parent, num_classes=3, clip_length=2, crop_size=8, num_workers=2)
    datamodule.setup("validate")
    clips, _labels = next(iter(datamodule.val_dataloader()))
    assert clips.shape == (2, 3, 2, 8, 8)


def test_num_classes_must_match_the_training_labels(kinetics, caplog):
    with pytest.raises(ValueError, match="3 training classes but num_classes=400"):
        KineticsDataModule(root=kinetics.parent, num_classes=400).setup("fit")
    datamodule = KineticsDataModule(root=kinetics.parent, num_classes=None, crop_size=8)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("test")
    assert datamodule.num_classes == 3 and "not one of (400, 600, 700)" in caplog.text


def test_clip_geometry_must_match_the_crop(kinetics):
    KineticsDataModule(root=kinetics.parent, crop_size=16, channels=3, height=16, width=16)
    with pytest.raises(ValueError, match="crop_size"):
        KineticsDataModule(root=kinetics.parent, crop_size=16, height=32)


def test_flat_files_are_found_through_the_json(kinetics):
    # the CVDF archives unpack as data/<split>/<file>.mp4, without label folders
    label_dir = kinetics / "data" / "validate" / "cooking"
    (label_dir / "v_1_000000_000010.mp4").rename(kinetics / "data" / "validate" / "v_1_000000_000010.mp4")
    label_dir.rmdir()
    dataset = _dataset(kinetics, "val")
    assert len(dataset) == 2 and dataset.classes[dataset.labels[0]] == "cooking"


def test_split_json_from_the_annotation_csv(tmp_path):
    csv = tmp_path / "val.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\nair drumming,-0_ab,14,24,val,0\nbowling,xyz,0,10,val,1\n"
    )
    assert write_split_json(csv, tmp_path / "splits" / "validate.json") == 2
    annotations = read_annotations(tmp_path, "val")
    assert [a.filename for a in annotations] == ["-0_ab_000014_000024.mp4", "xyz_000000_000010.mp4"]
    assert annotations[0].label == "air drumming"
