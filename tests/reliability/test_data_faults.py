"""Issue 13, defect 6: unreadable, missing and mislabelled samples are dropped in evaluation (never substituted),
counted exactly (per sample, over DataLoader workers), reported per split in metrics.json and the end-of-run log,
and found up front by ``python -m datamodules.check``. Every fault is written in the dataset's real format."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules.charades import CharadesDataModule
from datamodules.images import ImageFileDataset, image_transform
from datamodules.kinetics import KineticsDataModule, read_annotations
from tests.datamodules.helpers import (
    colour,
    write_charades,
    write_flowers,
    write_jpg,
    write_kinetics,
    write_truncated_jpg,
)

TRAIN = [("a0", "archery", 8), ("b0", "bowling", 8), ("c0", "cooking", 8), ("a1", "archery", 8)]
#: six test videos; ``t1``, ``t2`` and ``t4`` are made unreadable by ``_corrupt``
TEST = [(f"t{i}", ["archery", "bowling", "cooking"][i % 3], 8) for i in range(6)]
BAD = ("t1", "t2", "t4")


@pytest.fixture
def kinetics(tmp_path: Path) -> Path:
    return write_kinetics(tmp_path, {"train": TRAIN, "validate": TRAIN, "test": TEST})


def _corrupt(dataset_dir: Path, split: str, ids: tuple[str, ...]) -> None:
    for path in (dataset_dir / "data" / split).glob("*/*.mp4"):
        if path.name.split("_")[0] in ids:
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated download")


def _datamodule(dataset_dir: Path, workers: int = 0, batch_size: int = 2) -> KineticsDataModule:
    return KineticsDataModule(
        root=dataset_dir.parent,
        num_classes=3,
        clip_length=2,
        sampling_stride=2,
        crop_size=8,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=False,
    )


def _test_labels(datamodule) -> list[int]:
    return torch.cat([labels for _clips, labels in datamodule.test_dataloader()]).tolist()


def test_evaluation_drops_unreadable_videos_instead_of_substituting_them(kinetics):
    _corrupt(kinetics, "test", BAD)
    datamodule = _datamodule(kinetics)
    datamodule.setup("test")
    # the good videos t0, t3, t5 once each: archery, archery, cooking (no bad one replaced by its successor)
    assert _test_labels(datamodule) == [0, 0, 2]
    assert datamodule.skipped()["test"]["failed"] == 3


@pytest.mark.parametrize("workers", [2])
def test_three_bad_videos_count_three_with_two_workers(kinetics, workers):
    _corrupt(kinetics, "test", BAD)
    _corrupt(kinetics, "train", ("b0",))
    datamodule = _datamodule(kinetics, workers=workers)
    datamodule.setup()
    for _epoch in range(2):  # a second pass (persistent workers) must not count them again
        assert sorted(_test_labels(datamodule)) == [0, 0, 2]
        for _batch in datamodule.train_dataloader():
            pass
    skipped = datamodule.skipped()
    assert skipped["test"]["failed"] == 3 and skipped["train"]["failed"] == 1
    assert sorted(datamodule.datasets["test"].failed_samples()) == sorted(
        str(p) for p in (kinetics / "data" / "test").glob("*/*.mp4") if p.name.split("_")[0] in BAD
    )


def test_videos_with_a_label_outside_the_class_list_are_counted(kinetics, caplog):
    write_kinetics(kinetics.parent, {"test": [*TEST, ("u0", "juggling", 8), ("u1", "skiing", 8)]})
    datamodule = _datamodule(kinetics)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("test")
    assert datamodule.skipped()["test"]["unknown_label"] == 2 and "juggling" in caplog.text
    assert len(datamodule.datasets["test"]) == 6


def test_duplicate_ids_in_a_split_json_are_an_error(kinetics):
    path = kinetics / "splits" / "test.json"
    entry = json.dumps({"annotations": {"label": "bowling", "segment": [0.0, 10.0]}, "subset": "test"})
    # json.load would keep the last of the two "t0" entries without a word
    path.write_text(path.read_text()[:-1] + f', "t0": {entry}}}')
    with pytest.raises(ValueError, match=r"test\.json.*'t0' (is )?listed 2 times"):
        read_annotations(kinetics, "test")


def test_one_video_filed_under_two_labels_is_counted_not_merged(tmp_path, caplog):
    dataset_dir = write_kinetics(tmp_path, {"train": TRAIN, "test": TEST}, json_splits=False)
    # the same file name under a second label folder: which label is it?
    source = next((dataset_dir / "data" / "test" / "archery").glob("t0_*.mp4"))
    (dataset_dir / "data" / "test" / "bowling" / source.name).write_bytes(source.read_bytes())
    datamodule = _datamodule(dataset_dir)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("test")
    assert datamodule.skipped()["test"]["duplicate"] == 2 and "t0_000000_000010.mp4" in caplog.text
    assert len(datamodule.datasets["test"]) == 5


def test_charades_evaluation_drops_a_video_with_an_unreadable_frame(tmp_path):
    labels = [[1]] * 6
    dataset_dir = write_charades(tmp_path, {"train": {"A": labels}, "val": {"B": labels, "C": [[2]] * 6}})
    write_truncated_jpg(dataset_dir / "data" / "Charades_v1_rgb" / "B" / "B-000003.jpg")
    datamodule = CharadesDataModule(
        root=tmp_path, clip_length=6, sampling_stride=1, crop_size=8, batch_size=2, num_workers=0, pin_memory=False
    )
    datamodule.setup("test")
    targets = torch.cat([t for _c, t in datamodule.test_dataloader()])
    assert targets.shape == (1, 157) and targets[0, 2] == 1  # C only
    assert datamodule.skipped()["test"]["failed"] == 1


def test_image_evaluation_drops_an_unreadable_image(tmp_path):
    paths = [write_jpg(tmp_path / f"{i}.jpg", colour(i)) for i in range(3)]
    write_truncated_jpg(paths[1])
    transform = image_transform(train=False, image_size=8, normalisation="imagenet", recipe="crop")
    dataset = ImageFileDataset(paths, [0, 1, 2], transform, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=dataset.collate)
    assert [labels.tolist() for _images, labels in loader] == [[0, 2]]
    assert dataset.num_failed == 1


def test_a_batch_of_only_unreadable_samples_is_left_out(kinetics):
    _corrupt(kinetics, "test", BAD)
    datamodule = _datamodule(kinetics, batch_size=1)
    datamodule.setup("test")
    assert len(list(datamodule.test_dataloader())) == 3


def test_the_counts_reach_metrics_json_and_the_end_of_run_log(kinetics, caplog, tmp_path):
    from experiments.data_report import data_metrics, report_data
    from experiments.runs import write_metrics

    _corrupt(kinetics, "test", BAD)
    (kinetics / "data" / "train" / "bowling" / "b0_000000_000010.mp4").unlink()
    datamodule = _datamodule(kinetics)
    datamodule.setup()
    _test_labels(datamodule)
    metrics = data_metrics(datamodule)
    assert metrics["data/test/failed"] == 3 and metrics["data/train/missing"] == 1
    assert metrics["data/test/unknown_label"] == 0 and metrics["data/train/failed"] == 0
    with caplog.at_level(logging.INFO, logger="experiments.data_report"):
        merged = report_data(datamodule, {"test/top1": 0.5})
    assert merged["test/top1"] == 0.5 and merged["data/test/failed"] == 3
    assert "test: 3 unreadable" in caplog.text and "train: 1 missing" in caplog.text
    # what the entry points write: metrics.json holds the counts as numbers
    written = json.loads(write_metrics(merged, tmp_path / "run").read_text())
    assert written["data/test/failed"] == 3 and written["data/train/missing"] == 1


def test_a_clean_run_reports_zero_counts_and_says_so(kinetics, caplog):
    from experiments.data_report import report_data

    datamodule = _datamodule(kinetics)
    datamodule.setup("test")
    with caplog.at_level(logging.INFO, logger="experiments.data_report"):
        metrics = report_data(datamodule, {})
    assert metrics["data/test/failed"] == 0 and "no sample skipped" in caplog.text
    assert report_data(object(), {"x": 1.0}) == {"x": 1.0}  # a datamodule that cannot skip reports nothing


class _Counting(pl.LightningModule):
    """Logs how many test samples it saw and their labels' sum: what a test metric is computed over."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 3)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> None:
        clips, labels = batch
        self.head(clips.mean(dim=(2, 3, 4)))
        self.log("test/samples", float(len(labels)), reduce_fx="sum", batch_size=len(labels))
        self.log("test/label_sum", labels.float().sum(), reduce_fx="sum", batch_size=len(labels))


def test_a_lightning_test_stage_sees_each_readable_video_once(kinetics):
    _corrupt(kinetics, "test", BAD)
    datamodule = _datamodule(kinetics, batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    [metrics] = trainer.test(_Counting(), datamodule=datamodule, verbose=False)
    assert metrics == {"test/samples": 3.0, "test/label_sum": 2.0}  # t0, t3, t5: labels 0, 0, 2
    assert datamodule.skipped()["test"]["failed"] == 3


# --- python -m datamodules.check ------------------------------------------------------------------------------


def _kinetics_with_every_fault(tmp_path: Path) -> Path:
    test = [*TEST, ("s0", "bowling", 2), ("u0", "juggling", 8), ("gone", "cooking", 8)]
    dataset_dir = write_kinetics(tmp_path, {"train": TRAIN, "validate": TRAIN, "test": test})
    _corrupt(dataset_dir, "test", ("t1",))
    (dataset_dir / "data" / "test" / "cooking" / "gone_000000_000010.mp4").unlink()
    return dataset_dir


@pytest.mark.parametrize("workers", [0, 2])
def test_check_reports_unreadable_short_missing_and_mislabelled_videos(tmp_path, workers, capsys):
    from datamodules.check import main

    dataset_dir = _kinetics_with_every_fault(tmp_path)
    out = tmp_path / "report.csv"
    args = ["--data", "kinetics400", "--root", str(tmp_path), "--workers", str(workers), "--min-frames", "4"]
    status = main([*args, "--out", str(out)])
    assert status == 1  # something unreadable, missing or mislabelled: a script stops here
    with open(out) as f:
        rows = {(r["split"], r["kind"], Path(r["file"]).name) for r in csv.DictReader(f)}
    assert rows == {
        ("test", "unreadable", "t1_000000_000010.mp4"),
        ("test", "short", "s0_000000_000010.mp4"),  # 2 frames, fewer than 4
        ("test", "unknown_label", "u0_000000_000010.mp4"),
        ("test", "missing", "gone_000000_000010.mp4"),
    }
    printed = capsys.readouterr().out
    assert "test: 1 missing, 1 unreadable, 1 unknown_label, 1 short" in printed and "train: no problem" in printed
    assert dataset_dir.is_dir()


def test_check_of_clean_charades_frames_and_of_a_broken_frame(tmp_path, capsys):
    from datamodules.check import main

    labels = [[1]] * 6
    dataset_dir = write_charades(tmp_path, {"train": {"A": labels}, "val": {"B": labels}})
    args = ["--data", "charades", "--root", str(tmp_path), "--workers", "0", "--min-frames", "6"]
    assert main(args) == 0
    assert "val: no problem found" in capsys.readouterr().out
    write_truncated_jpg(dataset_dir / "data" / "Charades_v1_rgb" / "B" / "B-000004.jpg")
    assert main(args) == 1
    with open(tmp_path / "charades_check.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["split"], r["kind"], Path(r["file"]).name) for r in rows} == {
        ("val", "unreadable", "B"),
        ("test", "unreadable", "B"),  # the test split is the val split
    }
    assert "B-000004.jpg" in rows[0]["detail"]


def test_check_refuses_an_unknown_dataset_name(tmp_path, capsys):
    from datamodules.check import main

    with pytest.raises(SystemExit):
        main(["--data", "imagenet21k", "--root", str(tmp_path)])
    assert "invalid choice: 'imagenet21k'" in capsys.readouterr().err


def test_a_charades_frame_listed_twice_is_an_error(tmp_path):
    labels = [[1]] * 4
    dataset_dir = write_charades(tmp_path, {"train": {"A": labels}, "val": {"B": labels}})
    csv_path = dataset_dir / "splits" / "val.csv"
    rows = csv_path.read_text().splitlines()
    # the same frame again (a concatenated frame list): read as a 5-frame video without a word before
    csv_path.write_text("\n".join([*rows, rows[2]]) + "\n")
    datamodule = CharadesDataModule(root=tmp_path, crop_size=8, num_workers=0, pin_memory=False)
    with pytest.raises(ValueError, match=r"val\.csv: 1 frames are listed more than once \(B/B-000002\.jpg"):
        datamodule.setup("test")


def test_image_evaluation_drops_an_empty_flowers_image_and_counts_it(tmp_path):
    from datamodules.flowers import Flowers102DataModule

    write_flowers(tmp_path, labels=[5, 1, 102, 7, 7, 3], trnid=[2, 4], valid=[], tstid=[1, 3, 5, 6])
    (tmp_path / "flowers-102" / "jpg" / "image_00003.jpg").write_bytes(b"")  # an interrupted download
    datamodule = Flowers102DataModule(root=tmp_path, batch_size=4, num_workers=0, image_size=8, pin_memory=False)
    datamodule.setup("test")
    assert [y.tolist() for _x, y in datamodule.test_dataloader()] == [[4, 6, 2]]  # image 3 (class 102) left out
    assert datamodule.skipped()["test"]["failed"] == 1


def test_an_image_label_outside_the_class_list_is_an_error(tmp_path):
    """Already so before issue 13 (Flowers, Cars and CIFAR check their labels): kept as a fault test."""
    from datamodules.flowers import Flowers102DataModule

    write_flowers(tmp_path, labels=[5, 1, 103, 7], trnid=[2, 4], valid=[], tstid=[1, 3])
    datamodule = Flowers102DataModule(root=tmp_path, num_workers=0, image_size=8)
    with pytest.raises(ValueError, match=r"imagelabels\.mat has classes outside 1\.\.102 \(5\.\.103\)"):
        datamodule.setup("test")
