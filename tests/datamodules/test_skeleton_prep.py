"""Skeleton preparation from tiny raw files in the true formats: NTU .skeleton text, Kinetics-Skeleton json."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from datamodules import skeleton_prep as sp

# --- writers of the raw formats ----------------------------------------------------------------------------


def write_skeleton(path: Path, frames: list[list[np.ndarray]]) -> Path:
    """An NTU ``.skeleton`` file: ``frames[t]`` lists the bodies of frame t, each ``(25, 3)`` x, y, z. The other
    values of each line (body info, depth/colour/orientation, tracking state) are filler of the right count."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for m, body in enumerate(bodies):
            lines.append(f"7205759403792{m:04d} 0 1 1 1 1 0 0.1 -0.2 2")
            lines.append(str(len(body)))
            lines += [f"{x:.7f} {y:.7f} {z:.7f} 250.1 180.2 960.3 540.4 0.1 0.2 0.3 0.4 2" for x, y, z in body]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\r\n".join(lines) + "\r\n")  # the release has Windows line ends
    return path


def body(seed: int, scale: float = 0.1, frames: int = 1) -> list[np.ndarray]:
    """``frames`` random poses of one body, moving by ``scale`` (its motion energy grows with it)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-0.5, 0.5, (25, 3)) + np.array([0.0, 0.0, 3.0])
    return [base + scale * rng.standard_normal((25, 3)) for _ in range(frames)]


def upright(frames: int, *, angle: float = 0.3, offset=(0.4, -0.2, 3.0), seed: int = 0) -> list[np.ndarray]:
    """A moving skeleton whose hip->spine (joints 0->1) and left->right shoulder (4->8) are perpendicular,
    rotated by ``angle`` about a skew axis and moved to ``offset``."""
    rng = np.random.default_rng(seed)
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    rotation = sp.rotation_matrix(axis, angle)
    poses = []
    for t in range(frames):
        joints = rng.uniform(-0.3, 0.3, (25, 3))
        joints[0], joints[1] = [0, 0, 0], [0, 0, 0.3]  # hip, spine middle (body frame: spine along z)
        joints[4], joints[8] = [-0.2, 0, 0.5], [0.2, 0, 0.5]  # left, right shoulder along x
        poses.append((joints + np.array([0.01 * t, 0.0, 0.0])) @ rotation.T + offset)
    return poses


# --- NTU parsing --------------------------------------------------------------------------------------------


def test_sample_names_and_splits():
    sample = sp.parse_ntu_name("S012C001P025R002A060.skeleton")
    assert (sample.setup, sample.camera, sample.performer, sample.replication, sample.action) == (12, 1, 25, 2, 60)
    assert sample.label == 59
    assert sp.is_training(sample, "ntu60", "xsub") and not sp.is_training(sample, "ntu60", "xview")
    assert not sp.is_training(sp.parse_ntu_name("S012C002P003R001A001"), "ntu60", "xsub")
    assert sp.is_training(sp.parse_ntu_name("S012C002P003R001A001"), "ntu60", "xview")
    assert sp.is_training(sp.parse_ntu_name("S032C001P103R001A120"), "ntu120", "xset")  # even setup
    assert sp.is_training(sp.parse_ntu_name("S031C001P103R001A120"), "ntu120", "xsub")  # subject 103
    assert not sp.is_training(sp.parse_ntu_name("S031C001P104R001A120"), "ntu120", "xsub")
    assert len(sp.NTU120_TRAINING_SUBJECTS) == 53 and sp.NTU60_TRAINING_SUBJECTS < sp.NTU120_TRAINING_SUBJECTS
    with pytest.raises(ValueError, match=r"xsub, xview|xset"):
        sp.is_training(sample, "ntu60", "xset")
    with pytest.raises(ValueError, match="not an NTU sample name"):
        sp.parse_ntu_name("video_001.skeleton")


def test_read_skeleton_places_bodies_by_position_and_reads_xyz(tmp_path):
    a, b = body(1)[0], body(2)[0]
    path = write_skeleton(tmp_path / "S001C001P001R001A001.skeleton", [[a], [a, b], []])
    data = sp.read_ntu_skeleton(path)
    assert data.shape == (4, 3, 25, 3) and data.dtype == np.float64
    np.testing.assert_allclose(data[0, 0], a, atol=1e-6)
    np.testing.assert_allclose(data[1, 1], b, atol=1e-6)
    assert not data[1, 0].any() and not data[:, 2].any() and not data[2:].any()


def test_the_two_most_moving_of_four_bodies_are_kept_and_a_fifth_is_not_read(tmp_path):
    frames = 6
    still, slow, fast, faster, fifth = (body(i, scale, frames) for i, scale in enumerate((0.0, 0.05, 0.2, 0.4, 1.0)))
    bodies = [[still[t], fast[t], slow[t], faster[t], fifth[t]] for t in range(frames)]
    xyz = sp.read_ntu_xyz(write_skeleton(tmp_path / "S001C001P001R001A001.skeleton", bodies))
    assert xyz.shape == (3, frames, 25, 2)
    # order: highest energy first; the fifth body (the most moving) is beyond the 4 the Kinect slots hold
    np.testing.assert_allclose(xyz[..., 0].transpose(1, 2, 0), np.stack(faster), atol=1e-6)
    np.testing.assert_allclose(xyz[..., 1].transpose(1, 2, 0), np.stack(fast), atol=1e-6)
    # the energy by hand: sum over x, y, z of the std over the frames and joints
    energy = sum(np.stack(fast)[..., c].std() for c in range(3))
    assert sp.body_energy(np.stack(fast)) == pytest.approx(energy)


@pytest.mark.parametrize("corrupt", ["truncated", "short_line", "not_a_number"])
def test_malformed_skeleton_files_raise_naming_the_file(tmp_path, corrupt):
    path = write_skeleton(tmp_path / "S001C001P001R001A001.skeleton", [[body(1)[0]]] * 2)
    lines = path.read_text().splitlines()
    if corrupt == "truncated":
        lines = lines[:20]
    elif corrupt == "short_line":
        lines[5] = "0.1 0.2 0.3"
    else:
        lines[0] = "two"
    path.write_text("\n".join(lines))
    with pytest.raises(sp.SkeletonDecodeError, match=r"S001C001P001R001A001.skeleton"):
        sp.read_ntu_skeleton(path)


# --- pre_normalization ------------------------------------------------------------------------------------------


def _sample(frames_a: list[np.ndarray], frames_b: list[np.ndarray] | None = None, length: int = 12) -> np.ndarray:
    data = np.zeros((1, 3, length, 25, 2), dtype=np.float32)
    for m, frames in enumerate((frames_a, frames_b or [])):
        for t, pose in enumerate(frames):
            data[0, :, t, :, m] = pose.T
    return data


def test_pre_normalization_geometry():
    data = _sample(upright(5), upright(5, offset=(1.4, -0.2, 3.5), seed=1), length=12)
    raw = data.copy()
    out = sp.pre_normalization(data)
    assert out is data  # in place
    joints = out[0].transpose(3, 1, 2, 0)  # (M, T, V, C)
    # 1. the 7 trailing empty frames of both people are filled by looping their 5 frames
    for m in range(2):
        np.testing.assert_allclose(joints[m, 5:10], joints[m, 0:5], atol=1e-6)
        np.testing.assert_allclose(joints[m, 10:12], joints[m, 0:2], atol=1e-6)
    # 2. the first person's spine joint is the origin in every frame
    np.testing.assert_allclose(joints[0, :, 1], 0, atol=1e-6)
    # 3./4. hip -> spine along +z and left -> right shoulder along +x in the first frame
    spine, shoulders = joints[0, 0, 1] - joints[0, 0, 0], joints[0, 0, 8] - joints[0, 0, 4]
    np.testing.assert_allclose(spine / np.linalg.norm(spine), [0, 0, 1], atol=1e-5)
    np.testing.assert_allclose(shoulders / np.linalg.norm(shoulders), [1, 0, 0], atol=1e-5)
    # a rigid motion per frame: distances between joints and between the people are kept
    before = raw[0, :, :5].transpose(3, 1, 2, 0)  # (M, T, V, C)
    for t in range(5):
        np.testing.assert_allclose(
            np.linalg.norm(joints[:, t, 3] - joints[0, t, 7], axis=-1),
            np.linalg.norm(before[:, t, 3] - before[0, t, 7], axis=-1),
            atol=1e-5,
        )


def test_pre_normalization_moves_leading_empty_frames_and_keeps_zeros_zero():
    poses = upright(4)
    data = _sample([np.zeros((25, 3))] * 2 + poses, length=8)  # frames 0, 1 empty, 2-5 real, 6-7 empty
    data[0, :, 3, 7, 0] = 0  # a missing joint in a real frame
    empty = np.zeros((1, 3, 8, 25, 2), dtype=np.float32)
    sp.pre_normalization(data)
    sp.pre_normalization(empty)
    assert not empty.any()  # an empty sample is left alone
    joints = data[0, ..., 0].transpose(1, 2, 0)  # (T, V, C)
    assert np.abs(joints).sum(axis=(1, 2)).min() > 0  # no empty frame left: moved to the front, then looped
    np.testing.assert_allclose(joints[4:8], joints[0:4], atol=1e-6)
    assert not joints[1, 7].any()  # the missing joint (now in frame 1) stays zero through centring and rotation
    assert not data[0, ..., 1].any()  # the absent second person stays zero


def test_rotation_matrix_turns_vectors_onto_axes():
    v = np.array([0.3, -0.4, 0.8])
    for target in np.eye(3):
        matrix = sp.rotation_matrix(np.cross(v, target), sp.angle_between(v, target))
        np.testing.assert_allclose(matrix @ v, np.linalg.norm(v) * target, atol=1e-12)
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    # the script's degenerate cases: an antiparallel vector (zero axis) is not rotated
    np.testing.assert_array_equal(sp.rotation_matrix(np.cross(-target, target), math.pi), np.eye(3))


# --- bone and motion ----------------------------------------------------------------------------------------------


def test_bone_and_motion_by_hand():
    rng = np.random.default_rng(0)
    joint = rng.standard_normal((2, 3, 5, 25, 2)).astype(np.float32)
    bones = sp.bone(joint, sp.bone_pairs("ntu60"))
    np.testing.assert_array_equal(bones[:, :, :, 0], joint[:, :, :, 0] - joint[:, :, :, 1])  # (1, 2) 1-based
    np.testing.assert_array_equal(bones[:, :, :, 22], joint[:, :, :, 22] - joint[:, :, :, 7])  # (23, 8)
    assert not bones[:, :, :, 20].any()  # (21, 21): the spine shoulder is the root
    kinetics = rng.standard_normal((1, 3, 4, 18, 2)).astype(np.float32)
    kin_bones = sp.bone(kinetics, sp.bone_pairs("kinetics"))
    assert not kin_bones[:, :, :, 0].any()
    np.testing.assert_array_equal(kin_bones[:, :, :, 11], kinetics[:, :, :, 11] - kinetics[:, :, :, 5])
    moved = sp.motion(joint)
    np.testing.assert_array_equal(moved[:, :, 2], joint[:, :, 3] - joint[:, :, 2])
    assert not moved[:, :, -1].any()


# --- NTU end to end, resumable ----------------------------------------------------------------------------------

NAMES = {
    "S001C001P001R001A001": 7,  # xsub train (P001), xview val (C001)
    "S001C002P003R001A002": 5,  # xsub val, xview train
    "S002C003P002R002A060": 3,  # xsub train, xview train
    "S003C001P007R001A010": 9,  # xsub val, xview val
    "S018C002P045R001A061": 4,  # NTU-120 only (setup 18)
}
MISSING = "S001C002P005R002A008"  # on the official missing-skeleton list
BROKEN = "S002C001P004R001A003"


@pytest.fixture
def ntu_raw(tmp_path) -> Path:
    raw = tmp_path / "nturgb+d_skeletons"
    for i, (name, frames) in enumerate(NAMES.items()):
        write_skeleton(raw / f"{name}.skeleton", [[pose] for pose in upright(frames, seed=i)])
    write_skeleton(raw / f"{MISSING}.skeleton", [[]])
    write_skeleton(raw / f"{BROKEN}.skeleton", [[body(0)[0]]]).write_text("1\n1\n")
    (raw / "readme.txt").write_text("not a sample")
    return raw


def _outputs(folder: Path) -> dict[str, object]:
    out: dict[str, object] = {str(p.relative_to(folder)): np.load(p) for p in sorted(folder.rglob("*.npy"))}
    out.update({str(p.relative_to(folder)): pickle.loads(p.read_bytes()) for p in sorted(folder.rglob("*.pkl"))})
    return out


def test_prepare_ntu60(ntu_raw, tmp_path):
    report = sp.prepare_ntu("ntu60", [ntu_raw], tmp_path / "out", chunk_size=2, progress=False)
    dataset_dir = tmp_path / "out" / "ntu60"
    assert report.found == 6  # the 7 files minus the NTU-120 one; readme.txt is no sample
    assert report.skipped["missing_skeletons"] == [f"{MISSING}.skeleton"]
    assert report.skipped["unreadable"] == [f"{BROKEN}.skeleton"]
    assert report.splits == {"xsub/train": 2, "xsub/val": 2, "xview/train": 2, "xview/val": 2}
    assert json.loads((dataset_dir / "prep_report.json").read_text())["splits"] == report.splits
    assert not (dataset_dir / ".prep").exists()  # the chunks are removed at the end
    names, labels = pickle.loads((dataset_dir / "xsub" / "train_label.pkl").read_bytes())
    assert names == ["S001C001P001R001A001.skeleton", "S002C003P002R002A060.skeleton"] and labels == [0, 59]
    names, labels = pickle.loads((dataset_dir / "xview" / "val_label.pkl").read_bytes())
    assert names == ["S001C001P001R001A001.skeleton", "S003C001P007R001A010.skeleton"] and labels == [0, 9]
    joint = np.load(dataset_dir / "xsub" / "train_data_joint.npy", mmap_mode="r")
    assert joint.shape == (2, 3, 300, 25, 2) and joint.dtype == np.float32
    # the 7-frame sample, parsed, padded to 300 and normalised, equals pre_normalization of the parsed file
    expected = np.zeros((1, 3, 300, 25, 2), dtype=np.float32)
    expected[0, :, :7] = sp.read_ntu_xyz(ntu_raw / "S001C001P001R001A001.skeleton")
    np.testing.assert_array_equal(joint[0], sp.pre_normalization(expected)[0])
    np.testing.assert_allclose(joint[0, :, 7:14], joint[0, :, 0:7])  # looped, not zero-padded
    bones = np.load(dataset_dir / "xsub" / "train_data_bone.npy")
    np.testing.assert_array_equal(bones, sp.bone(np.asarray(joint), sp.bone_pairs("ntu60")))


def test_ntu120_keeps_the_later_setups_and_uses_xset(ntu_raw, tmp_path):
    report = sp.prepare_ntu("ntu120", [ntu_raw], tmp_path, benchmarks=["xset"], streams=(), progress=False)
    assert report.splits == {"xset/train": 2, "xset/val": 3}  # setups 2 and 18 are even
    names, labels = pickle.loads((tmp_path / "ntu120" / "xset" / "train_label.pkl").read_bytes())
    assert names == ["S002C003P002R002A060.skeleton", "S018C002P045R001A061.skeleton"] and labels == [59, 60]
    with pytest.raises(ValueError, match="xview"):
        sp.prepare_ntu("ntu120", [ntu_raw], tmp_path, benchmarks=["xview"], progress=False)


def test_interrupted_preparation_resumes_to_identical_files(ntu_raw, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    sp.prepare_ntu("ntu60", [ntu_raw], clean, chunk_size=2, streams=("bone", "joint_motion"), progress=False)
    calls: list[str] = []
    read, interrupt = sp.read_ntu_xyz, [True]

    def interrupted(path):
        calls.append(Path(path).name)
        if interrupt[0] and len(calls) == 4:  # in the second chunk
            raise KeyboardInterrupt
        return read(path)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(sp, "read_ntu_xyz", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sp.prepare_ntu("ntu60", [ntu_raw], resumed, chunk_size=2, streams=("bone", "joint_motion"), progress=False)
    assert sorted(p.name for p in (resumed / "ntu60" / ".prep").glob("*.json")) == ["chunk_00000.json"]
    first_chunk, interrupt[0] = calls[:2], False
    calls.clear()
    sp.prepare_ntu("ntu60", [ntu_raw], resumed, chunk_size=2, streams=("bone", "joint_motion"), progress=False)
    assert len(calls) == 3 and not set(first_chunk) & set(calls)  # the finished chunk is not parsed again
    a, b = _outputs(clean / "ntu60"), _outputs(resumed / "ntu60")
    assert a.keys() == b.keys() and len(a) == 4 * 4  # 2 benchmarks x (train, val) x (joint, bone, motion, labels)
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def test_finished_outputs_are_kept_and_partial_ones_redone(ntu_raw, tmp_path):
    sp.prepare_ntu("ntu60", [ntu_raw], tmp_path, benchmarks=["xsub"], streams=(), keep_chunks=True, progress=False)
    folder = tmp_path / "ntu60" / "xsub"
    stamp = (folder / "train_data_joint.npy").stat().st_mtime_ns
    (folder / "val_label.pkl").unlink()  # as if interrupted between the array and its labels
    sp.prepare_ntu("ntu60", [ntu_raw], tmp_path, benchmarks=["xsub"], streams=(), progress=False)
    assert (folder / "train_data_joint.npy").stat().st_mtime_ns == stamp
    assert (folder / "val_label.pkl").is_file()
    assert not list(folder.glob(".*"))  # no temporary files left


def test_derive_streams(tmp_path):
    rng = np.random.default_rng(1)
    joint = rng.standard_normal((5, 3, 6, 18, 2)).astype(np.float32)
    for part in sp.PARTS:
        np.save(tmp_path / f"{part}_data_joint.npy", joint)
    sp.derive_streams(tmp_path, "kinetics", ["joint_bone", "bone_motion", "joint_motion"], block=2, progress=False)
    bones = sp.bone(joint, sp.bone_pairs("kinetics"))
    np.testing.assert_array_equal(np.load(tmp_path / "val_data_bone.npy"), bones)
    np.testing.assert_array_equal(np.load(tmp_path / "val_data_joint_bone.npy"), np.concatenate((joint, bones), 1))
    np.testing.assert_array_equal(np.load(tmp_path / "train_data_bone_motion.npy"), sp.motion(bones))
    np.testing.assert_array_equal(np.load(tmp_path / "train_data_joint_motion.npy"), sp.motion(joint))
    with pytest.raises(ValueError, match="streams must be among"):
        sp.derive_streams(tmp_path, "kinetics", ["velocity"])
    with pytest.raises(FileNotFoundError, match=r"train_data_joint.npy does not exist: bone is derived from it"):
        sp.derive_streams(tmp_path / "nowhere", "ntu60", ["bone"])


def test_missing_raw_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere is not a folder.*skeleton"):
        sp.prepare_ntu("ntu60", [tmp_path / "nowhere"], tmp_path)
    with pytest.raises(FileNotFoundError, match=r"No \*.skeleton files"):
        sp.prepare_ntu("ntu60", [tmp_path], tmp_path)
    with pytest.raises(FileNotFoundError, match=r"kinetics_train does not exist.*Kinetics-Skeleton"):
        sp.prepare_kinetics(tmp_path, tmp_path)


# --- Kinetics-Skeleton --------------------------------------------------------------------------------------------


def _person(x: float, y: float, score: float) -> dict:
    pose = [v for j in range(18) for v in (x + 0.01 * j, y)]
    return {"pose": pose, "score": [score] * 17 + [0.0]}  # the last joint undetected


def write_kinetics(raw: Path) -> None:
    """Three training videos (one without skeleton per the label file, one not in it) and one val video."""
    videos = {
        "train": {
            "vid_a": {"frames": {0: [_person(0.2, 0.3, 0.5), _person(0.6, 0.7, 0.9), _person(0.1, 0.1, 0.2)],
                                 1: [_person(0.3, 0.4, 0.8)], 300: [_person(0.5, 0.5, 0.5)]}, "label": 3},
            "vid_b": {"frames": {}, "label": 1, "has_skeleton": False},
            "vid_c": {"frames": {0: [_person(0.5, 0.5, 0.5)]}, "label": 0, "unlabelled": True},
        },
        "val": {"vid_d": {"frames": {2: [_person(0.9, 0.1, 0.7)]}, "label": 1}},
    }  # fmt: skip
    for part, entries in videos.items():
        (raw / f"kinetics_{part}").mkdir(parents=True)
        labels = {}
        for vid, entry in entries.items():
            data = [{"frame_index": t, "skeleton": people} for t, people in entry["frames"].items()]
            name = ["juggling", "skiing", "yoga", "zumba"][entry["label"]]
            video = {"data": data, "label": name, "label_index": entry["label"]}
            (raw / f"kinetics_{part}" / f"{vid}.json").write_text(json.dumps(video))
            if not entry.get("unlabelled"):
                has = entry.get("has_skeleton", True)
                labels[vid] = {"has_skeleton": has, "label": name, "label_index": entry["label"]}
        (raw / f"kinetics_{part}_label.json").write_text(json.dumps(labels))


def test_kinetics_json_to_arrays(tmp_path):
    write_kinetics(tmp_path / "raw")
    data, label, dropped = sp.read_kinetics_json(tmp_path / "raw" / "kinetics_train" / "vid_a.json")
    assert data.shape == (3, 300, 18, 2) and label == 3 and dropped == 1  # frame_index 300 is beyond T
    # frame 0: the people sorted by score (0.9 first, then 0.5; 0.2 dropped), x - 0.5, y negated after - 0.5
    np.testing.assert_allclose(data[0, 0, :17, 0], 0.6 + 0.01 * np.arange(17) - 0.5)
    np.testing.assert_allclose(data[1, 0, :17, 0], -(0.7 - 0.5))
    np.testing.assert_allclose(data[2, 0, :17], [[0.9, 0.5]] * 17)
    np.testing.assert_allclose(data[1, 0, :17, 1], -(0.3 - 0.5))
    assert not data[:, 0, 17].any()  # score 0: x and y zeroed
    np.testing.assert_allclose(data[1, 1, 0], [-(0.4 - 0.5), 0])
    assert not data[:, 2:].any()  # no padding by repetition: Kinetics has no pre_normalization


def test_prepare_kinetics(tmp_path):
    write_kinetics(tmp_path / "raw")
    report = sp.prepare_kinetics(tmp_path / "raw", tmp_path / "out", streams=("bone", "joint_bone"), progress=False)
    assert report.found == 4 and report.splits == {"train": 1, "val": 1}
    assert report.skipped == {"unlabelled": ["vid_c.json"], "no_skeleton": ["vid_b.json"], "unreadable": []}
    assert report.altered["frames_dropped"] == ["vid_a.json"]
    folder = tmp_path / "out" / "kinetics"
    assert pickle.loads((folder / "train_label.pkl").read_bytes()) == (["vid_a.json"], [3])
    assert pickle.loads((folder / "val_label.pkl").read_bytes()) == (["vid_d.json"], [1])
    joint = np.load(folder / "train_data_joint.npy")
    assert joint.shape == (1, 3, 300, 18, 2) and joint.dtype == np.float32
    expected = sp.read_kinetics_json(tmp_path / "raw/kinetics_train/vid_a.json")[0].astype(np.float32)
    np.testing.assert_array_equal(joint[0], expected)
    assert np.load(folder / "val_data_joint_bone.npy").shape == (1, 6, 300, 18, 2)
    # class names from the label files: indices 1 and 3 are known, the others are named by index
    assert (folder / "classes.yaml").read_text().split("\n")[:4] == [
        '- "class_0"',
        '- "skiing"',
        '- "class_2"',
        '- "zumba"',
    ]


def test_cli(ntu_raw, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sp.main(["--help"])
    assert exit_info.value.code == 0 and "ntu60" in capsys.readouterr().out
    ignored = tmp_path / "ignored.txt"
    ignored.write_text(f"{BROKEN}\nS003C001P007R001A010\n")
    report = sp.main(["ntu60", "--raw", str(ntu_raw), "--out", str(tmp_path), "--benchmarks", "xview", "--ignored",
                      str(ignored), "--streams", "--quiet"])  # fmt: skip
    assert report.splits == {"xview/train": 3, "xview/val": 1}  # the bodiless MISSING sample is kept: all zeros
    assert report.skipped["missing_skeletons"] == [f"{BROKEN}.skeleton", "S003C001P007R001A010.skeleton"]
    assert "xview/val: 1" in capsys.readouterr().out
    assert not (tmp_path / "ntu60" / "xview" / "train_data_bone.npy").exists()
    sp.main(["derive", "--folder", str(tmp_path / "ntu60" / "xview"), "--dataset", "ntu60", "--streams", "bone",
             "--quiet"])  # fmt: skip
    assert np.load(tmp_path / "ntu60" / "xview" / "train_data_bone.npy").shape == (3, 3, 300, 25, 2)
