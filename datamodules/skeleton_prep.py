"""Preparation of skeleton datasets from their raw releases into the layout ``datamodules.skeletons`` reads.

The procedure is that of the 2s-AGCN scripts as kept in continual-skeletons (``datasets/data_preparation/``:
``ntu60_prep.py``, ``ntu120_prep.py``, ``kinetics400_prep.py``, ``preprocess.py`` + ``rotation.py``
(``pre_normalization``), ``bone_data_prep.py``, ``motion_data_prep.py``, ``merge_joint_bone_data.py``)::

    <out>/ntu60/{xsub,xview}/{train,val}_data_joint.npy   float32 (N, 3, 300, 25, 2)
    <out>/ntu60/{xsub,xview}/{train,val}_label.pkl        pickle of (sample_names, labels)
    <out>/ntu120/{xsub,xset}/...                          the same
    <out>/kinetics/{train,val}_data_joint.npy             float32 (N, 3, 300, 18, 2)
    <out>/kinetics/{train,val}_label.pkl, classes.yaml
    ... and the derived streams beside each joint file: *_data_bone.npy, *_data_joint_motion.npy,
    *_data_bone_motion.npy, *_data_joint_bone.npy (6 channels)

Where this differs from the scripts, on purpose: files are processed in sorted name order (the NTU-60 and
Kinetics scripts used ``os.listdir`` order, which depends on the file system); NTU-120 sample names are file
names, not paths; a sample that cannot be parsed is skipped and reported instead of stopping the run, and so are
Kinetics frames whose ``frame_index`` lies outside ``[0, 300)`` and NTU sequences longer than 300 frames (cut to
300), on which the scripts crashed. Every skipped sample is counted in ``prep_report.json``.

Real-size runs are resumable: each raw sample is parsed and normalised once, in chunks written atomically to
``<out>/<dataset>/.prep/`` (a finished chunk is kept by a re-run), and every output file is written under a
temporary name and renamed when complete; a re-run after an interruption continues and gives identical files.

``python -m datamodules.skeleton_prep --help`` lists the commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import pickle
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

__all__ = [
    "BENCHMARKS",
    "KINETICS_BONE_PAIRS",
    "NTU60_TRAINING_SUBJECTS",
    "NTU120_TRAINING_SUBJECTS",
    "NTU_BONE_PAIRS",
    "NTU_MISSING_SKELETONS",
    "PrepReport",
    "SkeletonDecodeError",
    "bone",
    "derive_streams",
    "is_training",
    "motion",
    "parse_ntu_name",
    "pre_normalization",
    "prepare_kinetics",
    "prepare_ntu",
    "read_kinetics_json",
    "read_ntu_skeleton",
    "read_ntu_xyz",
    "rotation_matrix",
    "select_bodies",
]

log = logging.getLogger(__name__)

MAX_FRAMES = 300  # T of every prepared array: the longest NTU sequence, and 10 s of Kinetics at 30 fps
NTU_JOINTS = 25
KINETICS_JOINTS = 18
MAX_BODIES_READ = 4  # Kinect bodies read per frame (ntu60_prep.py: max_body_kinect)
MAX_BODIES = 2  # bodies kept (max_body_true / num_person_out)
KINETICS_PERSONS_READ = 5  # OpenPose people read per frame (num_person_in)

# --- facts of the splits (ntu60_prep.py, ntu120_prep.py; Shahroudy et al. 2016, Liu et al. 2019) ----------------

NTU60_TRAINING_SUBJECTS = frozenset({1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38})
NTU60_TRAINING_CAMERAS = frozenset({2, 3})
NTU120_TRAINING_SUBJECTS = NTU60_TRAINING_SUBJECTS | frozenset(
    {45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94}
    | {95, 97, 98, 100, 103}
)
NTU120_TRAINING_SETUPS = frozenset(range(2, 33, 2))  # the even setup ids
#: the benchmarks (subset folders) of each dataset; Kinetics has none
BENCHMARKS: dict[str, tuple[str, ...]] = {"ntu60": ("xsub", "xview"), "ntu120": ("xsub", "xset"), "kinetics": ()}
PARTS = ("train", "val")

# --- bone pairs (bone_data_prep.py): (child, parent); bone = joint[child] - joint[parent] ---------------------

#: 1-based NTU joints, as in bone_data_prep.py. (21, 21) makes the spine-shoulder bone zero.
NTU_BONE_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10), (12, 11),
    (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23), (21, 21), (23, 8),
    (24, 25), (25, 12),
)  # fmt: skip
#: 0-based OpenPose joints, as in bone_data_prep.py (its Kinetics pairs are not shifted). (0, 0): the nose is zero.
KINETICS_BONE_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 0), (1, 0), (2, 1), (3, 2), (4, 3), (5, 1), (6, 5), (7, 6), (8, 2), (9, 8), (10, 9), (11, 5), (12, 11),
    (13, 12), (14, 0), (15, 0), (16, 14), (17, 15),
)  # fmt: skip


def bone_pairs(dataset: str) -> list[tuple[int, int]]:
    """0-based (child, parent) pairs of ``dataset`` (``ntu60``, ``ntu120``, ``kinetics``)."""
    if dataset == "kinetics":
        return list(KINETICS_BONE_PAIRS)
    if dataset in ("ntu60", "ntu120"):
        return [(child - 1, parent - 1) for child, parent in NTU_BONE_PAIRS]
    raise ValueError(f"dataset must be one of {sorted(BENCHMARKS)}, got {dataset!r}")


class SkeletonDecodeError(RuntimeError):
    """A raw sample file could not be parsed (the message names the file and the line)."""


# --- NTU RGB+D: .skeleton files ----------------------------------------------------------------------------

_NTU_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


@dataclass(frozen=True)
class NtuSampleId:
    """The ids in an NTU sample name ``SsssCcccPpppRrrrAaaa``: setup, camera, performer (subject), replication,
    action (1-based)."""

    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @property
    def label(self) -> int:
        """The class index: action - 1 (ntu60_prep.py)."""
        return self.action - 1


def parse_ntu_name(name: str) -> NtuSampleId:
    """The ids of ``S001C002P003R002A013.skeleton`` (or the bare name); a name not in that form is an error."""
    match = _NTU_NAME.match(Path(name).name)
    if match is None:
        raise ValueError(f"{name!r} is not an NTU sample name SsssCcccPpppRrrrAaaa[.skeleton]")
    return NtuSampleId(*(int(g) for g in match.groups()))


def is_training(sample: NtuSampleId, dataset: str, benchmark: str) -> bool:
    """Whether ``sample`` is in the training part of ``benchmark`` (everything else is ``val``): X-Sub by
    performer, X-View (NTU-60) by camera 2 or 3, X-Set (NTU-120) by an even setup id."""
    if (dataset, benchmark) == ("ntu60", "xsub"):
        return sample.performer in NTU60_TRAINING_SUBJECTS
    if (dataset, benchmark) == ("ntu60", "xview"):
        return sample.camera in NTU60_TRAINING_CAMERAS
    if (dataset, benchmark) == ("ntu120", "xsub"):
        return sample.performer in NTU120_TRAINING_SUBJECTS
    if (dataset, benchmark) == ("ntu120", "xset"):
        return sample.setup in NTU120_TRAINING_SETUPS
    raise ValueError(f"{dataset} has the benchmarks {BENCHMARKS.get(dataset)}, got {benchmark!r}")


def read_ntu_skeleton(path: str | Path, max_bodies: int = MAX_BODIES_READ, num_joints: int = NTU_JOINTS) -> np.ndarray:
    """The x, y, z (metres, Kinect camera space) of a ``.skeleton`` file: float64 ``(max_bodies, T, V, 3)``.

    The Kinect v2 text format (ntu60_prep.py ``read_skeleton_filter``): the frame count; per frame the body
    count; per body a line of 10 values (bodyID, clippedEdges, hand confidences and states, isRestricted,
    leanX, leanY, trackingState), the joint count, and one line per joint of 12 values (x y z depthX depthY
    colorX colorY orientationW..Z trackingState). Bodies are slotted by their position in the frame's list
    (not by bodyID); bodies beyond ``max_bodies`` and joints beyond ``num_joints`` are read past, as the
    script did. Raises ``SkeletonDecodeError`` on a truncated or malformed file.
    """
    path = Path(path)
    lines = path.read_text().split("\n")
    at = 0

    def next_line() -> str:
        nonlocal at
        if at >= len(lines):
            raise SkeletonDecodeError(f"{path}: ends early (line {at + 1})")
        at += 1
        return lines[at - 1]

    try:
        num_frames = int(next_line())
        data = np.zeros((max_bodies, num_frames, num_joints, 3))
        for t in range(num_frames):
            for m in range(int(next_line())):
                next_line()  # the body info line: not used
                for v in range(int(next_line())):
                    values = next_line().split()
                    if len(values) != 12:
                        raise SkeletonDecodeError(f"{path}: line {at}: a joint has 12 values, found {len(values)}")
                    if m < max_bodies and v < num_joints:
                        data[m, t, v] = [float(x) for x in values[:3]]
    except ValueError as error:
        raise SkeletonDecodeError(f"{path}: line {at}: {error}") from error
    return data


def body_energy(body: np.ndarray) -> float:
    """Motion energy of one body ``(T, V, 3)`` (ntu60_prep.py ``get_nonzero_std``): the sum over x, y, z of the
    standard deviation over its non-empty frames (frames whose coordinates sum to 0 are empty), 0 if none."""
    body = body[body.sum(-1).sum(-1) != 0]
    if len(body) == 0:
        return 0.0
    return float(body[:, :, 0].std() + body[:, :, 1].std() + body[:, :, 2].std())


def select_bodies(data: np.ndarray, keep: int = MAX_BODIES) -> np.ndarray:
    """The ``keep`` bodies of ``(M, T, V, 3)`` with the highest ``body_energy``, highest first."""
    energy = np.array([body_energy(body) for body in data])
    # the script's expression: argsort's order among equal energies (e.g. absent bodies) decides which is kept
    return data[energy.argsort()[::-1][:keep]]


def read_ntu_xyz(path: str | Path) -> np.ndarray:
    """One NTU sample as float64 ``(3, T, 25, 2)``: up to 4 bodies read, the 2 most energetic kept
    (ntu60_prep.py ``read_xyz``)."""
    return select_bodies(read_ntu_skeleton(path)).transpose(3, 1, 2, 0)


# --- pre_normalization (preprocess.py, rotation.py) -----------------------------------------------------------


def rotation_matrix(axis: np.ndarray, theta: float) -> np.ndarray:
    """The counter-clockwise rotation by ``theta`` radians about ``axis`` (Rodrigues); the identity for a
    (near) zero axis or angle, as rotation.py has it."""
    axis = np.asarray(axis, dtype=np.float64)
    if np.abs(axis).sum() < 1e-6 or abs(theta) < 1e-6:
        return np.eye(3)
    k = axis / math.sqrt(float(np.dot(axis, axis)))
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(theta) * cross + (1 - math.cos(theta)) * (cross @ cross)


def angle_between(v1: np.ndarray, v2: np.ndarray) -> float:
    """The angle in radians between two vectors; 0 when either is (near) zero (rotation.py)."""
    if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
        return 0.0
    u1, u2 = v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)
    return float(np.arccos(np.clip(np.dot(u1, u2), -1.0, 1.0)))


def pre_normalization(
    data: np.ndarray, zaxis: tuple[int, int] = (0, 1), xaxis: tuple[int, int] = (8, 4), *, progress: bool = False
) -> np.ndarray:
    """Normalise float32 ``(N, C=3, T, V, M)`` in place (and return it), sample by sample, as preprocess.py does:

    1. per person: if the first frame is empty, the non-empty frames are moved to the front; the trailing
       empty frames are then filled by looping the frames before them (empty frames in the middle stay);
    2. every frame is centred on joint ``zaxis[1]`` (NTU: 1, the middle of the spine) of the *first* person in
       *that* frame; joints that are all zero stay zero;
    3. everything is rotated so that ``zaxis[0] -> zaxis[1]`` (hip -> spine) of the first person in the first
       frame is parallel to +z;
    4. then so that ``xaxis[1] -> xaxis[0]`` (left -> right shoulder, joints 4 and 8) of the same frame, after
       step 3, is parallel to +x.

    Step 4 rotates about an axis perpendicular to the shoulder vector and x, so hip -> spine stays along z only
    when the shoulders are perpendicular to it. An antiparallel vector gives a zero rotation axis, and the
    script leaves it unrotated; so does this. Empty frames and persons are left untouched by 3 and 4.
    """
    if data.ndim != 5 or data.shape[1] != 3:
        raise ValueError(f"pre_normalization expects (N, 3, T, V, M), got {data.shape}")
    persons_first = np.transpose(data, (0, 4, 2, 3, 1))  # a view (N, M, T, V, C): the script's layout
    for skeleton in tqdm(persons_first, desc="pre_normalization", unit="sample", disable=not progress):
        _normalise_sample(skeleton, zaxis, xaxis)
    return data


def _normalise_sample(skeleton: np.ndarray, zaxis: tuple[int, int], xaxis: tuple[int, int]) -> None:
    """The four steps on one ``(M, T, V, C)`` view; each step skips an all-zero sample, as each of the
    script's loops does."""
    if skeleton.sum() == 0:
        return  # the script prints "has no skeleton" and leaves it
    for person in skeleton:
        _fill_trailing_frames(person)
    if skeleton.sum() != 0:
        centre = skeleton[0][:, zaxis[1] : zaxis[1] + 1, :].copy()  # (T, 1, C): first person, per frame
        for person in skeleton:
            if person.sum() != 0:
                present = (person.sum(-1) != 0)[..., None]
                person[...] = (person - centre) * present
    _align(skeleton, skeleton[0, 0, zaxis[1]] - skeleton[0, 0, zaxis[0]], np.array([0.0, 0.0, 1.0]))
    _align(skeleton, skeleton[0, 0, xaxis[0]] - skeleton[0, 0, xaxis[1]], np.array([1.0, 0.0, 0.0]))


def _fill_trailing_frames(person: np.ndarray) -> None:
    """Step 1 on one person ``(T, V, C)``, in place."""
    if person.sum() == 0:
        return
    if person[0].sum() == 0:
        valid = person.sum(-1).sum(-1) != 0
        kept = person[valid].copy()
        person[...] = 0
        person[: len(kept)] = kept
    frame_sums = person.reshape(len(person), -1).sum(-1)
    for i in np.flatnonzero(frame_sums == 0):
        if i > 0 and person[i:].sum() == 0:  # the first empty frame after which all are empty
            repeats = math.ceil((len(person) - i) / i)
            person[i:] = np.concatenate([person[:i]] * repeats)[: len(person) - i]
            return


def _align(skeleton: np.ndarray, vector: np.ndarray, target: np.ndarray) -> None:
    """Steps 3 / 4: rotate every non-empty frame of every present person so that ``vector`` (taken before the
    rotation) becomes parallel to ``target``. The rotation is computed in float64 and stored in float32."""
    if skeleton.sum() == 0:
        return
    matrix = rotation_matrix(np.cross(vector, target), angle_between(vector, target))
    for person in skeleton:
        if person.sum() == 0:
            continue
        frames = person.reshape(len(person), -1).sum(-1) != 0
        person[frames] = person[frames] @ matrix.T


# --- Kinetics-Skeleton: ST-GCN json release --------------------------------------------------------------------


def read_kinetics_json(
    path: str | Path, num_frames: int = MAX_FRAMES, persons_read: int = KINETICS_PERSONS_READ
) -> tuple[np.ndarray, int, int]:
    """One Kinetics-Skeleton sample as float64 ``(3, T, 18, 2)``, its ``label_index`` and the number of frames
    dropped because their ``frame_index`` lies outside ``[0, num_frames)``.

    The json (ST-GCN's release; kinetics400_prep.py ``Feeder_kinetics``): ``{"data": [{"frame_index": t,
    "skeleton": [{"pose": [x0, y0, x1, y1, ...], "score": [s0, ...]}, ...]}, ...], "label_index": k}`` with
    OpenPose coordinates normalised to [0, 1]. Up to 5 people are read per frame; channels are (x, y, score);
    x and y are shifted by -0.5 and y is negated (image rows grow downwards); x and y are zeroed where the score
    is 0; per frame the people are sorted by their summed score and the top 2 kept.
    """
    path = Path(path)
    try:
        video = json.loads(path.read_text())
        data = np.zeros((3, num_frames, KINETICS_JOINTS, persons_read))
        dropped = 0
        for frame in video["data"]:
            t = int(frame["frame_index"])
            if not 0 <= t < num_frames:
                dropped += 1
                continue
            for m, person in enumerate(frame["skeleton"][:persons_read]):
                pose = np.asarray(person["pose"], dtype=np.float64)
                data[0, t, :, m] = pose[0::2]
                data[1, t, :, m] = pose[1::2]
                data[2, t, :, m] = person["score"]
        label = int(video["label_index"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise SkeletonDecodeError(f"{path}: {type(error).__name__}: {error}") from error
    data[0:2] -= 0.5
    data[1] = -data[1]
    data[0][data[2] == 0] = 0
    data[1][data[2] == 0] = 0
    order = (-data[2].sum(axis=1)).argsort(axis=1)  # (T, persons): the script's per-frame order
    data = np.take_along_axis(data, order[None, :, None, :], axis=3)
    return data[..., :MAX_BODIES], label, dropped


# --- derived streams (bone_data_prep.py, motion_data_prep.py, merge_joint_bone_data.py) ------------------------


def bone(joint: np.ndarray, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """``joint[..., child, :] - joint[..., parent, :]`` for each 0-based pair, on ``(..., C, T, V, M)``. Joints
    in no pair keep their joint coordinates (the script starts from a copy of the joints; every NTU and
    Kinetics joint is in a pair)."""
    out = np.array(joint, dtype=np.float32, copy=True)
    for child, parent in pairs:
        out[..., child, :] = joint[..., child, :] - joint[..., parent, :]
    return out


def motion(data: np.ndarray) -> np.ndarray:
    """Frame differences on ``(..., C, T, V, M)``: ``out[t] = data[t + 1] - data[t]``, and the last frame is 0
    (motion_data_prep.py). Zero padding counts as frames: the last real frame's motion is ``-data[t]``."""
    out = np.zeros(data.shape, dtype=np.float32)
    out[..., :-1, :, :] = data[..., 1:, :, :] - data[..., :-1, :, :]
    return out


# --- resumable drivers -------------------------------------------------------------------------------------------


@dataclass
class PrepReport:
    """What a preparation run did: samples per output split and every skipped (or altered) sample by reason.

    Reasons: ``missing_skeletons`` (NTU: on the official list of samples with missing skeletons), ``unreadable``
    (could not be parsed), ``no_skeleton`` (Kinetics: ``has_skeleton`` false in the label file),
    ``unlabelled`` (Kinetics: absent from the label file). Kept but altered: ``truncated`` (NTU: longer than
    300 frames, cut) and ``frames_dropped`` (Kinetics: frames with an index outside [0, 300)).
    """

    dataset: str
    found: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    altered: dict[str, list[str]] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        return sum(len(names) for names in self.skipped.values())

    def add(self, other: dict[str, dict[str, list[str]]]) -> None:
        for kind in ("skipped", "altered"):
            for reason, names in other.get(kind, {}).items():
                getattr(self, kind).setdefault(reason, []).extend(names)

    def summary(self) -> str:
        skipped = ", ".join(f"{len(v)} {k}" for k, v in self.skipped.items() if v) or "none"
        altered = ", ".join(f"{len(v)} {k}" for k, v in self.altered.items() if v) or "none"
        splits = ", ".join(f"{k}: {v}" for k, v in self.splits.items())
        return f"{self.dataset}: {self.found} raw samples; skipped {skipped}; kept but altered {altered}; {splits}"

    def write(self, path: Path) -> None:
        _atomic_write_text(path, json.dumps(self.__dict__, indent=1))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_pickle(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f)
    os.replace(tmp, path)


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _run_chunks(
    work: Callable[[tuple[int, Sequence]], None], chunks: list[Sequence], done: Callable[[int, Sequence], bool],
    *, workers: int, desc: str, progress: bool,
) -> None:  # fmt: skip
    """``work((index, chunk))`` for every chunk not ``done`` yet, in ``workers`` processes, with a progress bar."""
    todo = [(i, chunk) for i, chunk in enumerate(chunks) if not done(i, chunk)]
    total = sum(len(c) for c in chunks)
    with tqdm(total=total, initial=total - sum(len(c) for _, c in todo), desc=desc, unit="sample",
              disable=not progress) as bar:  # fmt: skip
        if workers <= 1:
            for item in todo:
                work(item)
                bar.update(len(item[1]))
            return
        # fork: the workers only run numpy and file I/O, and need not re-import anything
        context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for item, _ in zip(todo, pool.map(work, todo)):
                bar.update(len(item[1]))


def _chunk_paths(work_dir: Path, index: int) -> tuple[Path, Path]:
    return work_dir / f"chunk_{index:05d}.npy", work_dir / f"chunk_{index:05d}.json"


def _chunk_done(work_dir: Path, index: int, names: Sequence[str]) -> bool:
    """A chunk is finished when its json (written last) lists exactly ``names``: a changed raw folder redoes it."""
    data_path, meta_path = _chunk_paths(work_dir, index)
    try:
        return json.loads(meta_path.read_text())["names"] == list(names) and data_path.is_file()
    except (OSError, ValueError, KeyError):
        return False


def _write_chunk(work_dir: Path, index: int, names: Sequence[str], data: np.ndarray, meta: dict) -> None:
    """The chunk's array, then its json (the marker), each under a temporary name renamed when complete."""
    data_path, meta_path = _chunk_paths(work_dir, index)
    tmp = data_path.with_name(f".{data_path.name}.tmp-{os.getpid()}.npy")
    np.save(tmp, data)
    os.replace(tmp, data_path)
    _atomic_write_text(meta_path, json.dumps({"names": list(names), **meta}))


def _ntu_chunk(item: tuple[int, Sequence[str]], *, paths: dict[str, Path], work_dir: Path) -> None:
    """Parse, pad and normalise one chunk of NTU samples (what ntu60_prep.py ``gendata`` does per sample)."""
    index, names = item
    kept, rows, unreadable, truncated = [], [], [], []
    for name in names:
        try:
            xyz = read_ntu_xyz(paths[name])
        except SkeletonDecodeError as error:
            log.warning(f"Skipping {name}: {error}")
            unreadable.append(name)
            continue
        if xyz.shape[1] > MAX_FRAMES:
            truncated.append(name)
        row = np.zeros((3, MAX_FRAMES, NTU_JOINTS, MAX_BODIES), dtype=np.float32)
        row[:, : min(xyz.shape[1], MAX_FRAMES)] = xyz[:, :MAX_FRAMES]
        kept.append(name)
        rows.append(row)
    data = np.stack(rows) if rows else np.zeros((0, 3, MAX_FRAMES, NTU_JOINTS, MAX_BODIES), np.float32)
    pre_normalization(data)
    meta = {"kept": kept, "skipped": {"unreadable": unreadable}, "altered": {"truncated": truncated}}
    _write_chunk(work_dir, index, names, data, meta)


def _ntu_files(raw_dirs: Sequence[str | Path]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for raw in raw_dirs:
        raw = Path(raw)
        if not raw.is_dir():
            raise FileNotFoundError(
                f"{raw} is not a folder: expected the unpacked NTU RGB+D skeleton archive (*.skeleton files), e.g. "
                "nturgb+d_skeletons/ (see datamodules/README.md)"
            )
        files.update({p.name: p for p in raw.iterdir() if p.suffix == ".skeleton"})
    if not files:
        raise FileNotFoundError(f"No *.skeleton files in {', '.join(map(str, raw_dirs))} (see datamodules/README.md)")
    return files


def prepare_ntu(
    dataset: str,
    raw_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    benchmarks: Sequence[str] | None = None,
    ignored: Iterable[str] | None = None,
    streams: Sequence[str] = ("bone",),
    chunk_size: int = 1000,
    workers: int = 1,
    keep_chunks: bool = False,
    progress: bool = True,
) -> PrepReport:
    """NTU RGB+D 60 or 120 from the ``.skeleton`` files in ``raw_dirs`` into ``<out>/<dataset>/<benchmark>/``.

    Samples named in ``ignored`` (default: the official list of samples with missing skeletons, restricted to the
    dataset's setups) are skipped, the others parsed, zero-padded to 300 frames and ``pre_normalization``-ed once
    each, in chunks of ``chunk_size`` under ``<out>/<dataset>/.prep/`` (``workers`` processes), and then
    gathered into each benchmark's train / val files. ``streams`` are derived afterwards (``derive_streams``).
    Resumable: finished chunks and output files are kept by a re-run.
    """
    if dataset not in ("ntu60", "ntu120"):
        raise ValueError(f"dataset must be ntu60 or ntu120, got {dataset!r}")
    benchmarks = tuple(benchmarks or BENCHMARKS[dataset])
    for benchmark in benchmarks:
        is_training(NtuSampleId(1, 1, 1, 1, 1), dataset, benchmark)  # rejects a benchmark of the other dataset
    files = _ntu_files(raw_dirs)
    if dataset == "ntu60":  # the NTU-120 archive holds the NTU-60 setups too
        files = {n: p for n, p in files.items() if parse_ntu_name(n).setup <= 17}
    ignored = set(NTU_MISSING_SKELETONS if ignored is None else (Path(n).stem for n in ignored))
    report = PrepReport(dataset, found=len(files))
    report.skipped["missing_skeletons"] = sorted(n for n in files if Path(n).stem in ignored)
    names = sorted(n for n in files if Path(n).stem not in ignored)
    dataset_dir = Path(out) / dataset
    work_dir = dataset_dir / ".prep"
    work_dir.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(names, chunk_size)
    work = _Bound(_ntu_chunk, paths=files, work_dir=work_dir)
    _run_chunks(work, chunks, lambda i, c: _chunk_done(work_dir, i, c), workers=workers, desc=dataset,
                progress=progress)  # fmt: skip
    metas = [json.loads(_chunk_paths(work_dir, i)[1].read_text()) for i in range(len(chunks))]
    for meta in metas:
        report.add(meta)
    for benchmark in benchmarks:
        for part in PARTS:

            def keep(name: str, part: str = part, benchmark: str = benchmark) -> bool:
                return is_training(parse_ntu_name(name), dataset, benchmark) == (part == "train")

            out_dir = dataset_dir / benchmark
            label = lambda n: parse_ntu_name(n).label  # noqa: E731
            shape = (3, MAX_FRAMES, NTU_JOINTS, MAX_BODIES)
            count = _gather(work_dir, metas, keep, out_dir, part, label, shape, progress)
            report.splits[f"{benchmark}/{part}"] = count
        derive_streams(dataset_dir / benchmark, dataset, streams, progress=progress)
    return _finish(report, dataset_dir, work_dir, keep_chunks)


class _Bound:
    """A picklable ``functools.partial`` stand-in whose call takes one positional item (for ``pool.map``)."""

    def __init__(self, fn: Callable, **kwargs: object) -> None:
        self.fn, self.kwargs = fn, kwargs

    def __call__(self, item: tuple[int, Sequence]) -> None:
        self.fn(item, **self.kwargs)


def _gather(
    work_dir: Path,
    metas: list[dict],
    keep: Callable[[str], bool],
    out_dir: Path,
    part: str,
    label_of: Callable[[str], int] | dict[str, int],
    shape: tuple[int, ...],
    progress: bool,
) -> int:
    """``<out_dir>/<part>_data_joint.npy`` and ``<part>_label.pkl`` from the chunks' kept samples that ``keep``
    accepts, in chunk order; skipped when both exist. The array is filled under a temporary name and renamed when
    complete, then the labels are written (so a label file means a complete data file)."""
    data_path, label_path = out_dir / f"{part}_data_joint.npy", out_dir / f"{part}_label.pkl"
    selected = [(i, [j for j, n in enumerate(m["kept"]) if keep(n)]) for i, m in enumerate(metas)]
    names = [metas[i]["kept"][j] for i, rows in selected for j in rows]
    if data_path.is_file() and label_path.is_file():
        return len(names)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_path.unlink(missing_ok=True)
    target = open_memmap(_partial(data_path), mode="w+", dtype=np.float32, shape=(len(names), *shape))
    at = 0
    for i, rows in tqdm(selected, desc=f"{out_dir.name}/{part}", unit="chunk", disable=not progress):
        if rows:
            target[at : at + len(rows)] = np.load(_chunk_paths(work_dir, i)[0], mmap_mode="r")[rows]
            at += len(rows)
    target.flush()
    del target
    os.replace(_partial(data_path), data_path)
    labels = [label_of[n] if isinstance(label_of, dict) else label_of(n) for n in names]
    _atomic_pickle(label_path, (names, labels))
    return len(names)


def _finish(report: PrepReport, dataset_dir: Path, work_dir: Path, keep_chunks: bool) -> PrepReport:
    report.write(dataset_dir / "prep_report.json")
    if not keep_chunks:
        shutil.rmtree(work_dir, ignore_errors=True)
    (log.warning if report.num_skipped else log.info)(report.summary())
    return report


def _kinetics_chunk(item: tuple[int, Sequence[str]], *, folder: Path, work_dir: Path) -> None:
    index, names = item
    kept, rows, labels, unreadable, dropped = [], [], [], [], []
    for name in names:
        try:
            data, label, frames_dropped = read_kinetics_json(folder / name)
        except SkeletonDecodeError as error:
            log.warning(f"Skipping {name}: {error}")
            unreadable.append(name)
            continue
        kept.append(name)
        rows.append(data.astype(np.float32))
        labels.append(label)
        if frames_dropped:
            dropped.append(name)
    data = np.stack(rows) if rows else np.zeros((0, 3, MAX_FRAMES, KINETICS_JOINTS, MAX_BODIES), np.float32)
    meta = {"kept": kept, "labels": labels, "skipped": {"unreadable": unreadable},
            "altered": {"frames_dropped": dropped}}  # fmt: skip
    _write_chunk(work_dir, index, names, data, meta)


def prepare_kinetics(
    raw: str | Path,
    out: str | Path,
    *,
    streams: Sequence[str] = ("bone",),
    chunk_size: int = 2000,
    workers: int = 1,
    keep_chunks: bool = False,
    progress: bool = True,
) -> PrepReport:
    """Kinetics-Skeleton from ST-GCN's release (``<raw>/kinetics_{train,val}/*.json`` and
    ``<raw>/kinetics_{train,val}_label.json``) into ``<out>/kinetics/`` (kinetics400_prep.py), plus
    ``classes.yaml`` from the label files' ``label`` / ``label_index``. No ``pre_normalization`` (the script
    has none). Samples whose label entry says ``has_skeleton: false`` are dropped, as are files absent from the
    label file and unreadable files; all are counted in the report. Resumable like ``prepare_ntu``.
    """
    raw, dataset_dir = Path(raw), Path(out) / "kinetics"
    report = PrepReport("kinetics")
    classes: dict[int, str] = {}
    for part in PARTS:
        folder, label_file = raw / f"kinetics_{part}", raw / f"kinetics_{part}_label.json"
        for path, what in ((folder, "a folder of per-video json files"), (label_file, "the split's label json")):
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} does not exist: expected {what} of the Kinetics-Skeleton release (ST-GCN's "
                    "kinetics-skeleton.zip, see datamodules/README.md)"
                )
        label_info = json.loads(label_file.read_text())
        classes.update({int(v["label_index"]): v["label"] for v in label_info.values() if "label" in v})
        files = sorted(p.name for p in folder.iterdir() if p.suffix == ".json")
        report.found += len(files)
        unlabelled = [n for n in files if Path(n).stem not in label_info]
        no_skeleton = [n for n in files if Path(n).stem in label_info and not label_info[Path(n).stem]["has_skeleton"]]
        report.add({"skipped": {"unlabelled": unlabelled, "no_skeleton": no_skeleton}})
        names = [n for n in files if Path(n).stem in label_info and label_info[Path(n).stem]["has_skeleton"]]
        work_dir = dataset_dir / ".prep" / part
        work_dir.mkdir(parents=True, exist_ok=True)
        chunks = _chunks(names, chunk_size)
        work = _Bound(_kinetics_chunk, folder=folder, work_dir=work_dir)
        _run_chunks(work, chunks, lambda i, c, w=work_dir: _chunk_done(w, i, c), workers=workers,
                    desc=f"kinetics {part}", progress=progress)  # fmt: skip
        metas = [json.loads(_chunk_paths(work_dir, i)[1].read_text()) for i in range(len(chunks))]
        for meta in metas:
            report.add(meta)
        # the label file's index, as the script (which asserted that the video's own label_index agrees)
        labels = {n: int(label_info[Path(n).stem]["label_index"]) for m in metas for n in m["kept"]}
        shape = (3, MAX_FRAMES, KINETICS_JOINTS, MAX_BODIES)
        report.splits[part] = _gather(work_dir, metas, lambda n: True, dataset_dir, part, labels, shape, progress)
    if classes:
        names = [classes.get(i, f"class_{i}") for i in range(max(classes) + 1)]
        _atomic_write_text(dataset_dir / "classes.yaml", "".join(f"- {json.dumps(n)}\n" for n in names))
    derive_streams(dataset_dir, "kinetics", streams, progress=progress)
    return _finish(report, dataset_dir, dataset_dir / ".prep", keep_chunks)


DERIVED_STREAMS = ("bone", "joint_motion", "bone_motion", "joint_bone")


def derive_streams(
    folder: str | Path, dataset: str, streams: Sequence[str], *, block: int = 256, progress: bool = True
) -> None:
    """Write ``<part>_data_<stream>.npy`` for each of ``streams`` (``bone``, ``joint_motion``, ``bone_motion``,
    ``joint_bone``) beside the ``<part>_data_joint.npy`` files in ``folder``, ``block`` samples at a time (the
    arrays need not fit in memory). ``bone_motion`` and ``joint_bone`` are made from the bones, which are then
    derived (and kept) too. Existing files are kept; each new one is renamed into place when complete."""
    unknown = set(streams) - set(DERIVED_STREAMS)
    if unknown:
        raise ValueError(f"streams must be among {DERIVED_STREAMS}, got {sorted(unknown)}")
    pairs, folder = bone_pairs(dataset), Path(folder)
    recipes: dict[str, tuple[tuple[str, ...], Callable[..., np.ndarray]]] = {
        "bone": (("joint",), lambda j: bone(j, pairs)),
        "joint_motion": (("joint",), motion),
        "bone_motion": (("bone",), motion),
        "joint_bone": (("joint", "bone"), lambda j, b: np.concatenate((j, b), axis=1)),
    }
    if {"bone_motion", "joint_bone"} & set(streams):
        streams = [*streams, "bone"]
    for stream in sorted(set(streams), key=DERIVED_STREAMS.index):
        for part in PARTS:
            target = folder / f"{part}_data_{stream}.npy"
            sources = [folder / f"{part}_data_{s}.npy" for s in recipes[stream][0]]
            if target.is_file():
                continue
            for source in sources:
                if not source.is_file():
                    raise FileNotFoundError(f"{source} does not exist: {stream} is derived from it")
            _derive(target, [np.load(s, mmap_mode="r") for s in sources], recipes[stream][1], block, progress)


def _derive(target: Path, sources: list[np.ndarray], fn: Callable[..., np.ndarray], block: int, progress: bool) -> None:
    n = len(sources[0])
    first = fn(*(s[:1] for s in sources))
    out = open_memmap(_partial(target), mode="w+", dtype=np.float32, shape=(n, *first.shape[1:]))
    for start in tqdm(range(0, n, block), desc=target.name, unit="block", disable=not progress):
        out[start : start + block] = fn(*(np.asarray(s[start : start + block]) for s in sources))
    out.flush()
    del out
    os.replace(_partial(target), target)


# --- command line ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.skeleton_prep",
        description="Prepare NTU RGB+D 60/120 and Kinetics-Skeleton from their raw releases into the layout "
        "datamodules.skeletons reads (the 2s-AGCN / continual-skeletons preparation). Resumable: re-run the same "
        "command after an interruption.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("ntu60", "ntu120"):
        sub = commands.add_parser(name, help=f"{name}: *.skeleton files -> <out>/{name}/<benchmark>/")
        sub.add_argument("--raw", nargs="+", required=True, help="folder(s) holding the *.skeleton files")
        sub.add_argument("--benchmarks", nargs="+", choices=BENCHMARKS[name], default=BENCHMARKS[name])
        sub.add_argument(
            "--ignored", type=Path, default=None, help="a list of sample names to skip, one a line (default: the "
            "official samples_with_missing_skeletons list, built in)",
        )  # fmt: skip
    sub = commands.add_parser("kinetics", help="kinetics: ST-GCN json release -> <out>/kinetics/")
    sub.add_argument("--raw", required=True, help="the folder holding kinetics_{train,val}/ and their label json")
    for sub in commands.choices.values():
        sub.add_argument("--out", required=True, type=Path, help="the data root (e.g. $DATA_DIR)")
        sub.add_argument("--streams", nargs="*", choices=DERIVED_STREAMS, default=["bone"],
                         help="streams derived from the joints afterwards (default: bone)")  # fmt: skip
        sub.add_argument("--workers", type=int, default=1, help="processes parsing raw files")
        sub.add_argument("--chunk-size", type=int, default=1000, help="samples per resumable chunk")
        sub.add_argument("--keep-chunks", action="store_true", help="keep <out>/<dataset>/.prep/ at the end")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = commands.add_parser("derive", help="derive streams from existing <part>_data_joint.npy files")
    sub.add_argument("--folder", required=True, type=Path, help="e.g. $DATA_DIR/ntu60/xsub or $DATA_DIR/kinetics")
    sub.add_argument("--dataset", required=True, choices=sorted(BENCHMARKS))
    sub.add_argument("--streams", nargs="+", choices=DERIVED_STREAMS, required=True)
    sub.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> PrepReport | None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    progress = not args.quiet
    if args.command == "derive":
        derive_streams(args.folder, args.dataset, args.streams, progress=progress)
        return None
    common = dict(streams=args.streams, chunk_size=args.chunk_size, workers=args.workers,
                  keep_chunks=args.keep_chunks, progress=progress)  # fmt: skip
    if args.command == "kinetics":
        report = prepare_kinetics(args.raw, args.out, **common)
    else:
        ignored = None if args.ignored is None else args.ignored.read_text().split()
        report = prepare_ntu(args.command, args.raw, args.out, benchmarks=args.benchmarks, ignored=ignored, **common)
    print(report.summary())
    return report


# --- the official list of NTU samples with missing skeletons (NTU RGB+D 120; NTU-60's are those of setups 1-17) --
# continual-skeletons datasets/data_preparation/nturgbd_raw/ntu120_samples_with_missing_skeletons.txt

_MISSING_SKELETONS = """
S001C002P005R002A008 S001C002P006R001A008 S001C003P002R001A055 S001C003P002R002A012 S001C003P005R002A004
S001C003P005R002A005 S001C003P005R002A006 S001C003P006R002A008 S002C002P011R002A030 S002C003P008R001A020
S002C003P010R002A010 S002C003P011R002A007 S002C003P011R002A011 S002C003P014R002A007 S003C001P019R001A055
S003C002P002R002A055 S003C002P018R002A055 S003C003P002R001A055 S003C003P016R001A055 S003C003P018R002A024
S004C002P003R001A013 S004C002P008R001A009 S004C002P020R001A003 S004C002P020R001A004 S004C002P020R001A012
S004C002P020R001A020 S004C002P020R001A021 S004C002P020R001A036 S005C002P004R001A001 S005C002P004R001A003
S005C002P010R001A016 S005C002P010R001A017 S005C002P010R001A048 S005C002P010R001A049 S005C002P016R001A009
S005C002P016R001A010 S005C002P018R001A003 S005C002P018R001A028 S005C002P018R001A029 S005C003P016R002A009
S005C003P018R002A013 S005C003P021R002A057 S006C001P001R002A055 S006C002P007R001A005 S006C002P007R001A006
S006C002P016R001A043 S006C002P016R001A051 S006C002P016R001A052 S006C002P022R001A012 S006C002P023R001A020
S006C002P023R001A021 S006C002P023R001A022 S006C002P023R001A023 S006C002P024R001A018 S006C002P024R001A019
S006C003P001R002A013 S006C003P007R002A009 S006C003P007R002A010 S006C003P007R002A025 S006C003P016R001A060
S006C003P017R001A055 S006C003P017R002A013 S006C003P017R002A014 S006C003P017R002A015 S006C003P022R002A013
S007C001P018R002A050 S007C001P025R002A051 S007C001P028R001A050 S007C001P028R001A051 S007C001P028R001A052
S007C002P008R002A008 S007C002P015R002A055 S007C002P026R001A008 S007C002P026R001A009 S007C002P026R001A010
S007C002P026R001A011 S007C002P026R001A012 S007C002P026R001A050 S007C002P027R001A011 S007C002P027R001A013
S007C002P028R002A055 S007C003P007R001A002 S007C003P007R001A004 S007C003P019R001A060 S007C003P027R002A001
S007C003P027R002A002 S007C003P027R002A003 S007C003P027R002A004 S007C003P027R002A005 S007C003P027R002A006
S007C003P027R002A007 S007C003P027R002A008 S007C003P027R002A009 S007C003P027R002A010 S007C003P027R002A011
S007C003P027R002A012 S007C003P027R002A013 S008C002P001R001A009 S008C002P001R001A010 S008C002P001R001A014
S008C002P001R001A015 S008C002P001R001A016 S008C002P001R001A018 S008C002P001R001A019 S008C002P008R002A059
S008C002P025R001A060 S008C002P029R001A004 S008C002P031R001A005 S008C002P031R001A006 S008C002P032R001A018
S008C002P034R001A018 S008C002P034R001A019 S008C002P035R001A059 S008C002P035R002A002 S008C002P035R002A005
S008C003P007R001A009 S008C003P007R001A016 S008C003P007R001A017 S008C003P007R001A018 S008C003P007R001A019
S008C003P007R001A020 S008C003P007R001A021 S008C003P007R001A022 S008C003P007R001A023 S008C003P007R001A025
S008C003P007R001A026 S008C003P007R001A028 S008C003P007R001A029 S008C003P007R002A003 S008C003P008R002A050
S008C003P025R002A002 S008C003P025R002A011 S008C003P025R002A012 S008C003P025R002A016 S008C003P025R002A020
S008C003P025R002A022 S008C003P025R002A023 S008C003P025R002A030 S008C003P025R002A031 S008C003P025R002A032
S008C003P025R002A033 S008C003P025R002A049 S008C003P025R002A060 S008C003P031R001A001 S008C003P031R002A004
S008C003P031R002A014 S008C003P031R002A015 S008C003P031R002A016 S008C003P031R002A017 S008C003P032R002A013
S008C003P033R002A001 S008C003P033R002A011 S008C003P033R002A012 S008C003P034R002A001 S008C003P034R002A012
S008C003P034R002A022 S008C003P034R002A023 S008C003P034R002A024 S008C003P034R002A044 S008C003P034R002A045
S008C003P035R002A016 S008C003P035R002A017 S008C003P035R002A018 S008C003P035R002A019 S008C003P035R002A020
S008C003P035R002A021 S009C002P007R001A001 S009C002P007R001A003 S009C002P007R001A014 S009C002P008R001A014
S009C002P015R002A050 S009C002P016R001A002 S009C002P017R001A028 S009C002P017R001A029 S009C003P017R002A030
S009C003P025R002A054 S010C001P007R002A020 S010C002P016R002A055 S010C002P017R001A005 S010C002P017R001A018
S010C002P017R001A019 S010C002P019R001A001 S010C002P025R001A012 S010C003P007R002A043 S010C003P008R002A003
S010C003P016R001A055 S010C003P017R002A055 S011C001P002R001A008 S011C001P018R002A050 S011C002P008R002A059
S011C002P016R002A055 S011C002P017R001A020 S011C002P017R001A021 S011C002P018R002A055 S011C002P027R001A009
S011C002P027R001A010 S011C002P027R001A037 S011C003P001R001A055 S011C003P002R001A055 S011C003P008R002A012
S011C003P015R001A055 S011C003P016R001A055 S011C003P019R001A055 S011C003P025R001A055 S011C003P028R002A055
S012C001P019R001A060 S012C001P019R002A060 S012C002P015R001A055 S012C002P017R002A012 S012C002P025R001A060
S012C003P008R001A057 S012C003P015R001A055 S012C003P015R002A055 S012C003P016R001A055 S012C003P017R002A055
S012C003P018R001A055 S012C003P018R001A057 S012C003P019R002A011 S012C003P019R002A012 S012C003P025R001A055
S012C003P027R001A055 S012C003P027R002A009 S012C003P028R001A035 S012C003P028R002A055 S013C001P015R001A054
S013C001P017R002A054 S013C001P018R001A016 S013C001P028R001A040 S013C002P015R001A054 S013C002P017R002A054
S013C002P028R001A040 S013C003P008R002A059 S013C003P015R001A054 S013C003P017R002A054 S013C003P025R002A022
S013C003P027R001A055 S013C003P028R001A040 S014C001P027R002A040 S014C002P015R001A003 S014C002P019R001A029
S014C002P025R002A059 S014C002P027R002A040 S014C002P039R001A050 S014C003P007R002A059 S014C003P015R002A055
S014C003P019R002A055 S014C003P025R001A048 S014C003P027R002A040 S015C001P008R002A040 S015C001P016R001A055
S015C001P017R001A055 S015C001P017R002A055 S015C002P007R001A059 S015C002P008R001A003 S015C002P008R001A004
S015C002P008R002A040 S015C002P015R001A002 S015C002P016R001A001 S015C002P016R002A055 S015C003P008R002A007
S015C003P008R002A011 S015C003P008R002A012 S015C003P008R002A028 S015C003P008R002A040 S015C003P025R002A012
S015C003P025R002A017 S015C003P025R002A020 S015C003P025R002A021 S015C003P025R002A030 S015C003P025R002A033
S015C003P025R002A034 S015C003P025R002A036 S015C003P025R002A037 S015C003P025R002A044 S016C001P019R002A040
S016C001P025R001A011 S016C001P025R001A012 S016C001P025R001A060 S016C001P040R001A055 S016C001P040R002A055
S016C002P008R001A011 S016C002P019R002A040 S016C002P025R002A012 S016C003P008R001A011 S016C003P008R002A002
S016C003P008R002A003 S016C003P008R002A004 S016C003P008R002A006 S016C003P008R002A009 S016C003P019R002A040
S016C003P039R002A016 S017C001P016R002A031 S017C002P007R001A013 S017C002P008R001A009 S017C002P015R001A042
S017C002P016R002A031 S017C002P016R002A055 S017C003P007R002A013 S017C003P008R001A059 S017C003P016R002A031
S017C003P017R001A055 S017C003P020R001A059 S019C001P046R001A075 S019C002P042R001A094 S019C002P042R001A095
S019C002P042R001A096 S019C002P042R001A097 S019C002P042R001A098 S019C002P042R001A099 S019C002P042R001A100
S019C002P042R001A101 S019C002P042R001A102 S019C002P049R002A074 S019C002P049R002A079 S019C002P051R001A061
S019C003P046R001A061 S019C003P046R002A061 S019C003P046R002A062 S020C002P041R001A063 S020C002P041R001A064
S020C002P044R001A063 S020C002P044R001A064 S020C002P044R001A066 S020C002P044R001A084 S020C002P054R001A081
S021C001P059R001A108 S021C002P055R001A065 S021C002P055R001A092 S021C002P055R001A093 S021C002P057R001A064
S021C002P058R001A063 S021C002P058R001A064 S021C002P059R001A074 S021C002P059R001A075 S021C002P059R001A076
S021C002P059R001A077 S021C002P059R001A078 S021C002P059R001A079 S021C003P057R002A078 S021C003P057R002A079
S021C003P057R002A094 S022C002P061R001A113 S022C003P061R002A061 S022C003P061R002A062 S022C003P063R002A061
S022C003P063R002A062 S022C003P063R002A063 S022C003P063R002A064 S022C003P063R002A078 S022C003P064R002A061
S022C003P064R002A062 S022C003P065R002A061 S022C003P065R002A062 S022C003P065R002A119 S022C003P067R002A064
S023C002P055R001A114 S023C002P055R002A092 S023C002P059R001A075 S023C002P063R001A075 S023C003P055R002A093
S023C003P055R002A094 S023C003P061R002A061 S023C003P064R001A092 S024C001P063R001A109 S024C002P062R002A074
S024C002P067R001A100 S024C002P067R001A101 S024C002P067R001A102 S024C002P067R001A103 S024C003P062R002A074
S024C003P063R002A061 S024C003P063R002A062 S025C001P055R002A119 S025C003P056R002A119 S025C003P059R002A115
S026C002P044R001A061 S026C002P044R001A062 S026C002P070R001A092 S026C003P069R002A075 S026C003P074R002A061
S026C003P074R002A062 S026C003P075R001A117 S026C003P075R001A118 S027C001P082R001A063 S027C002P044R002A092
S027C002P079R001A061 S027C002P079R001A062 S027C002P079R001A063 S027C002P079R001A064 S027C002P082R001A092
S027C002P084R001A061 S027C002P084R001A062 S027C002P086R001A061 S027C003P041R002A087 S027C003P080R002A061
S027C003P082R002A061 S027C003P082R002A062 S027C003P086R002A061 S027C003P086R002A062 S028C001P087R001A061
S028C002P041R001A091 S028C002P087R001A061 S028C003P042R002A064 S028C003P046R002A063 S028C003P046R002A066
S028C003P046R002A067 S028C003P046R002A068 S028C003P046R002A069 S028C003P046R002A070 S028C003P046R002A071
S028C003P046R002A072 S028C003P046R002A074 S028C003P046R002A075 S028C003P046R002A077 S028C003P046R002A081
S028C003P046R002A082 S028C003P046R002A083 S028C003P046R002A084 S028C003P048R002A061 S028C003P048R002A062
S028C003P048R002A073 S028C003P073R002A073 S028C003P087R001A061 S028C003P087R002A061 S028C003P087R002A062
S029C001P043R002A092 S029C001P044R002A092 S029C001P048R001A073 S029C001P089R001A063 S029C002P041R001A074
S029C002P041R001A084 S029C002P044R001A091 S029C002P048R001A075 S029C002P048R001A081 S029C002P074R001A081
S029C002P074R001A095 S029C002P074R001A096 S029C002P080R001A091 S029C002P088R001A066 S029C002P089R001A065
S029C002P090R001A067 S029C003P008R002A065 S029C003P008R002A067 S029C003P041R001A089 S029C003P043R001A080
S029C003P043R001A092 S029C003P043R001A105 S029C003P043R002A085 S029C003P043R002A086 S029C003P044R002A106
S029C003P048R001A065 S029C003P048R002A073 S029C003P048R002A074 S029C003P048R002A075 S029C003P048R002A076
S029C003P048R002A092 S029C003P048R002A094 S029C003P051R002A073 S029C003P051R002A074 S029C003P051R002A075
S029C003P051R002A076 S029C003P051R002A077 S029C003P051R002A078 S029C003P051R002A079 S029C003P051R002A080
S029C003P051R002A081 S029C003P051R002A082 S029C003P051R002A083 S029C003P051R002A084 S029C003P051R002A085
S029C003P051R002A086 S029C003P051R002A110 S029C003P067R001A098 S029C003P074R002A110 S029C003P080R002A066
S029C003P088R002A078 S029C003P089R001A075 S029C003P089R002A061 S029C003P089R002A062 S029C003P089R002A063
S029C003P090R002A092 S029C003P090R002A095 S030C002P091R002A091 S030C002P091R002A092 S030C002P091R002A093
S030C002P091R002A094 S030C002P091R002A095 S030C002P091R002A096 S030C002P091R002A097 S030C002P091R002A098
S030C002P091R002A099 S030C002P091R002A100 S030C002P091R002A101 S030C002P091R002A102 S030C002P091R002A103
S030C002P091R002A104 S030C002P091R002A105 S030C003P044R002A065 S030C003P044R002A081 S030C003P044R002A084
S031C002P042R001A111 S031C002P051R001A061 S031C002P051R001A062 S031C002P067R001A067 S031C002P067R001A068
S031C002P067R001A069 S031C002P067R001A070 S031C002P067R001A071 S031C002P067R001A072 S031C002P082R001A075
S031C002P082R002A117 S031C002P097R001A061 S031C002P097R001A062 S031C003P043R002A074 S031C003P043R002A075
S031C003P044R002A094 S031C003P082R002A067 S031C003P082R002A068 S031C003P082R002A069 S031C003P082R002A070
S031C003P082R002A071 S031C003P082R002A072 S031C003P082R002A073 S031C003P082R002A075 S031C003P082R002A076
S031C003P082R002A077 S031C003P082R002A084 S031C003P082R002A085 S031C003P082R002A086 S032C002P067R001A092
S032C003P067R002A066 S032C003P067R002A067 S032C003P067R002A075 S032C003P067R002A076 S032C003P067R002A077
"""
NTU_MISSING_SKELETONS: frozenset[str] = frozenset(_MISSING_SKELETONS.split())

if __name__ == "__main__":
    main()
