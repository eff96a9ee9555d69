"""The skeleton datamodule on tiny arrays in the prepared layout: batches, streams, classes and every error."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.skeleton_prep import bone, bone_pairs, motion
from datamodules.skeletons import NTU60_CLASSES, NTU120_CLASSES, SkeletonDataModule, SkeletonDataset, split_folder


def write_prepared(
    folder: Path, dataset: str = "ntu60", counts=(("train", 6), ("val", 4)), streams=("joint", "bone"), frames=300
) -> dict[str, np.ndarray]:
    """``<part>_data_<stream>.npy`` and ``<part>_label.pkl`` in ``folder``; sample i of a part has all its
    coordinates near ``i`` (so a batch tells which samples it holds). Returns the joint arrays."""
    joints = 18 if dataset == "kinetics" else 25
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, count in counts:
        rng = np.random.default_rng(count)
        joint = np.arange(count)[:, None, None, None, None] + 0.1 * rng.standard_normal((count, 3, frames, joints, 2))
        joint = joint.astype(np.float32)
        arrays[part] = joint
        if "joint" in streams:
            np.save(folder / f"{part}_data_joint.npy", joint)
        if "bone" in streams:
            np.save(folder / f"{part}_data_bone.npy", bone(joint, bone_pairs(dataset)))
        labels = [i % 3 for i in range(count)]
        with open(folder / f"{part}_label.pkl", "wb") as f:
            pickle.dump(([f"{part}_{i}.skeleton" for i in range(count)], labels), f)
    return arrays


@pytest.fixture
def ntu60(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, write_prepared(tmp_path / "ntu60" / "xsub")


def _module(root: Path, **kwargs) -> SkeletonDataModule:
    kwargs = {"dataset": "ntu60", "subset": "xsub", "batch_size": 4, "num_workers": 0, **kwargs}
    module = SkeletonDataModule(root=root, **kwargs)
    module.setup()
    return module


@pytest.mark.parametrize(("stream", "channels"), [("joint", 3), ("bone", 3), ("joint_bone", 6), ("motion", 3)])
def test_batches_of_each_stream(ntu60, stream, channels):
    root, joints = ntu60
    module = _module(root, stream=stream)
    assert module.channels == channels and module.num_classes == 60 and module.classes == list(NTU60_CLASSES)
    clip, label = next(iter(module.val_dataloader()))
    assert clip.shape == (4, channels, 300, 25, 2) and clip.dtype == torch.float32
    assert label.dtype == torch.int64 and label.tolist() == [0, 1, 2, 0]
    joint = joints["val"][:4]
    expected = {
        "joint": joint,
        "bone": bone(joint, bone_pairs("ntu60")),
        "joint_bone": np.concatenate((joint, bone(joint, bone_pairs("ntu60"))), axis=1),
        "motion": motion(joint),  # computed on the fly: there is no motion file
    }[stream]
    np.testing.assert_array_equal(clip.numpy(), expected)
    train_clip, _ = next(iter(module.train_dataloader()))
    assert train_clip.shape == (4, channels, 300, 25, 2)
    assert module.skipped() == {
        s: {"missing": 0, "unreadable": 0, "unknown_label": 0, "duplicate": 0, "failed": 0}
        for s in ("train", "val", "test")
    }


def test_test_split_is_val_and_samples_are_named(ntu60):
    module = _module(ntu60[0])
    test, val = module.datasets["test"], module.datasets["val"]
    assert len(test) == len(val) == 4 and list(test.sample_names) == list(val.sample_names)
    assert test.describe(2).endswith("val_data_joint.npy[2] (val_2.skeleton)")
    assert test.shape == (3, 300, 25, 2)


def test_prepared_merged_and_motion_files_are_read_when_present(ntu60):
    root, joints = ntu60
    folder = root / "ntu60" / "xsub"
    # values that differ from what would be computed, to see which is read
    np.save(folder / "val_data_joint_bone.npy", np.full((4, 6, 300, 25, 2), 7, np.float32))
    np.save(folder / "val_data_joint_motion.npy", np.full((4, 3, 300, 25, 2), 5, np.float32))
    joint_bone = SkeletonDataset(folder, "val", stream="joint_bone")
    assert joint_bone.files == [folder / "val_data_joint_bone.npy"] and (joint_bone[0][0] == 7).all()
    moved = SkeletonDataset(folder, "val", stream="motion")
    assert not moved.computes_motion and (moved[1][0] == 5).all()
    computed = SkeletonDataset(folder, "train", stream="motion")
    assert computed.computes_motion
    np.testing.assert_array_equal(computed[3][0].numpy(), motion(joints["train"][3]))


def test_limit_and_workers(ntu60):
    module = _module(ntu60[0], limit=3, num_workers=1, batch_size=2)
    assert len(module.datasets["train"]) == 3 and len(module.datasets["val"]) == 3
    clips = torch.cat([clip for clip, _ in module.val_dataloader()])  # memory maps reopened in the worker
    np.testing.assert_array_equal(clips[:, 0, 0, 0, 0].round().numpy(), [0, 1, 2])


def test_ntu120_and_kinetics(tmp_path):
    write_prepared(tmp_path / "ntu120" / "xset")
    module = _module(tmp_path, dataset="ntu120", subset="xset", stream="bone")
    assert module.num_classes == 120 and module.classes == list(NTU120_CLASSES)
    write_prepared(tmp_path / "kinetics", dataset="kinetics")
    (tmp_path / "kinetics" / "classes.yaml").write_text('- "abseiling"\n- "air drumming"\n- "zumba"\n')
    module = _module(tmp_path, dataset="kinetics", subset=None, stream="joint_bone", num_classes=3)
    clip, _ = next(iter(module.train_dataloader()))
    assert clip.shape == (4, 6, 300, 18, 2) and module.classes == ["abseiling", "air drumming", "zumba"]


def test_kinetics_without_class_file_names_classes_by_index(tmp_path, caplog):
    write_prepared(tmp_path / "kinetics", dataset="kinetics")
    module = _module(tmp_path, dataset="kinetics", subset=None)
    assert module.num_classes == 400 and module.classes[399] == "class_399" and "classes.yaml" in caplog.text


@pytest.mark.parametrize(
    ("dataset", "subset", "message"),
    [
        ("ntu60", "xset", "ntu60 has the subsets xsub, xview, got 'xset'"),
        ("ntu120", "xview", "ntu120 has the subsets xsub, xset, got 'xview'"),
        ("ntu60", None, "ntu60 has the subsets xsub, xview, got None"),
        ("kinetics", "xsub", "kinetics has no subsets"),
        ("ntu", "xsub", "dataset must be one of"),
    ],
)
def test_wrong_dataset_or_subset(tmp_path, dataset, subset, message):
    with pytest.raises(ValueError, match=message):
        SkeletonDataModule(root=tmp_path, dataset=dataset, subset=subset)


def test_wrong_stream_or_channels(tmp_path):
    with pytest.raises(ValueError, match="stream must be one of"):
        SkeletonDataModule(root=tmp_path, stream="velocity")
    with pytest.raises(ValueError, match="stream 'joint_bone' has 6 channels, got channels=3"):
        SkeletonDataModule(root=tmp_path, stream="joint_bone", channels=3)


def test_missing_files_name_the_path_and_the_preparation(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ntu60/xsub does not exist.*skeleton_prep ntu60 --raw"):
        _module(tmp_path)
    write_prepared(tmp_path / "ntu60" / "xsub", streams=("joint",))
    with pytest.raises(FileNotFoundError, match=r"train_data_bone.npy does not exist.*skeleton_prep derive"):
        _module(tmp_path, stream="joint_bone")
    (tmp_path / "ntu60" / "xsub" / "val_label.pkl").unlink()
    with pytest.raises(FileNotFoundError, match=r"val_label.pkl does not exist: expected the val labels"):
        _module(tmp_path)


def test_label_and_data_lengths_must_agree(tmp_path):
    folder = tmp_path / "ntu60" / "xsub"
    write_prepared(folder)
    with open(folder / "val_label.pkl", "wb") as f:
        pickle.dump((["a", "b"], [0, 1]), f)
    with pytest.raises(ValueError, match=r"val_data_joint.npy holds 4 samples but .*val_label.pkl has 2 labels"):
        _module(tmp_path)
    with open(folder / "val_label.pkl", "wb") as f:
        pickle.dump((["a", "b"], [0]), f)
    with pytest.raises(ValueError, match=r"val_label.pkl is not a pickle of \(sample_names, labels\)"):
        _module(tmp_path)


def test_classes_shapes_and_label_range_are_checked(tmp_path):
    folder = tmp_path / "ntu60" / "xsub"
    write_prepared(folder)
    with pytest.raises(ValueError, match="ntu60 has 60 classes but num_classes=10"):
        _module(tmp_path, num_classes=10)
    (tmp_path / "ntu60" / "classes.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"labels span \[0, 2\], outside the 2 classes"):
        _module(tmp_path)
    write_prepared(tmp_path / "ntu120" / "xsub", dataset="kinetics")
    with pytest.raises(ValueError, match=r"train_data_joint.npy has 18 joints"):
        _module(tmp_path, dataset="ntu120")
    np.save(folder / "train_data_joint.npy", np.zeros((6, 3, 300, 25), np.float32))
    with pytest.raises(ValueError, match=r"shape \(6, 3, 300, 25\); expected \(N, 3, T, V, M\)"):
        SkeletonDataset(folder, "train")


def test_split_folder(tmp_path):
    assert split_folder(tmp_path, "ntu120", "xsub") == tmp_path / "ntu120" / "xsub"
    assert split_folder(tmp_path, "kinetics", None) == tmp_path / "kinetics"
