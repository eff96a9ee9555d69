"""Synthetic skeletons: a small generated action set in exactly the prepared NTU-60 layout, for CPU runs and tests.

A procedurally animated 25-joint skeleton in the NTU joint order (Kinect v2: 1 spine base, 2 spine middle, 3
neck, 4 head, 5-8 left shoulder, elbow, wrist, hand, 9-12 the right ones, 13-16 left hip, knee, ankle, foot,
17-20 the right ones, 21 spine shoulder, 22/23 left hand tip / thumb, 24/25 the right ones; 1-based), with bone
lengths of an adult in metres, performs one of 12 actions, six pairs in which one is the other played backwards:

    raise_right_arm / lower_right_arm    raise_left_arm / lower_left_arm    squat_down / stand_up
    turn_left / turn_right               bow / straighten_up                step_forward / step_back

A reversed action is the same animation, noise included, with its frames in reverse order, and its parameters
are drawn from the same distributions; so both members of a pair show the same poses, and a classifier that
sees one frame cannot tell them apart (it can only tell the pair): the class is in the temporal order. Per
sample, all random: body size, action length (50-150 frames at 30 fps, i.e. speed), onset and duration of the
movement within it (phase), amplitude, an idle sway of arms and torso, the heading and place of the person,
the camera's tilt and roll, Gaussian joint noise (1 cm), and in 30 % of the samples a second, idle person. The
coordinates are Kinect camera space (metres; y up, z away from the camera), as the raw NTU files hold them.

Files (``datamodules.skeletons`` reads them with ``dataset=ntu60, subset=xsub``)::

    <root>/synthetic_skeletons_v<VERSION>/ntu60/xsub/{train,val}_data_{joint,bone}.npy   float32 (N, 3, 300, 25, 2)
    <root>/synthetic_skeletons_v<VERSION>/ntu60/xsub/{train,val}_label.pkl               (sample_names, labels)
    <root>/synthetic_skeletons_v<VERSION>/ntu60/classes.yaml                             the 12 action names
    <root>/synthetic_skeletons_v<VERSION>/generation.json                                the parameters

The sequences are zero-padded to 300 frames and the absent second person is zeros, as in the NTU arrays
(``pre_normalization`` is not applied: the camera pose stays random). Bones come from
``skeleton_prep.bone`` with the NTU pairs. Every sample is drawn from its own generator ``(seed, split,
index)``: the files are the same on every run. ``VERSION`` is in the folder name (a change of the animation
gives a new folder) and the parameters in ``generation.json`` (other parameters regenerate the folder).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datamodules.generated import MARKER, generate_once, read_marker
from datamodules.skeleton_prep import MAX_BODIES, MAX_FRAMES, NTU_JOINTS, bone, bone_pairs
from datamodules.skeletons import SkeletonDataModule

__all__ = [
    "ACTIONS",
    "VERSION",
    "SyntheticSkeletonDataModule",
    "SyntheticSkeletonParams",
    "animate",
    "dataset_root",
    "ensure_synthetic_skeletons",
    "render_sample",
]

log = logging.getLogger(__name__)

#: bump when the animation changes: the folder name carries it, so old data is never read as new
VERSION = 1
#: (forward action, its time reversal); class 2k is pair k's forward action, 2k + 1 its reversal
PAIRS = (
    ("raise_right_arm", "lower_right_arm"),
    ("raise_left_arm", "lower_left_arm"),
    ("squat_down", "stand_up"),
    ("turn_left", "turn_right"),
    ("bow", "straighten_up"),
    ("step_forward", "step_back"),
)
ACTIONS: tuple[str, ...] = tuple(name for pair in PAIRS for name in pair)
SPLITS = ("train", "val")

# body proportions in metres (adult, scaled per sample)
SPINE, NECK, HEAD = 0.5, 0.08, 0.14
SHOULDER, HIP = 0.18, 0.1
UPPER_ARM, FOREARM, HAND, HAND_TIP, THUMB = 0.28, 0.26, 0.08, 0.06, 0.05
THIGH, SHIN, FOOT, ANKLE = 0.45, 0.43, 0.15, 0.07


@dataclass(frozen=True)
class SyntheticSkeletonParams:
    """Everything the generated files depend on (recorded in ``generation.json``)."""

    num_train: int = 360
    num_val: int = 120
    min_frames: int = 50
    max_frames: int = 150
    noise: float = 0.01  # joint noise std, metres
    second_person: float = 0.3  # probability of a second (idle) person
    seed: int = 0
    version: int = VERSION

    def counts(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val}

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# --- animation ---------------------------------------------------------------------------------------------


def _progress(length: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth 0 -> 1 ramp over ``length`` frames: still, then moving over 50-85 % of the frames from a
    random onset (the phase), then still."""
    duration = max(int(length * rng.uniform(0.5, 0.85)), 2)
    onset = int(rng.integers(0, length - duration + 1))
    s = np.clip((np.arange(length) - onset) / (duration - 1), 0.0, 1.0)
    return s * s * (3 - 2 * s)  # smoothstep: no jerk at the ends


def _dofs(forward: str | None, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-frame degrees of freedom (radians, metres) of the forward action ``forward`` (None: standing idle),
    with idle sway."""
    t = np.arange(length) / 30.0
    sway = lambda amplitude: amplitude * np.sin(2 * math.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * math.pi))  # noqa: E731
    dof = {
        "arm_r": np.radians(8) + sway(np.radians(5)),  # elevation in the frontal plane: 0 = hanging
        "arm_l": np.radians(8) + sway(np.radians(5)),
        "elbow_r": np.radians(rng.uniform(5, 25)) + 0 * t,
        "elbow_l": np.radians(rng.uniform(5, 25)) + 0 * t,
        "squat": np.radians(3) + 0 * t,  # thigh angle from vertical, knees forward
        "pitch": sway(np.radians(2)),  # torso lean forward
        "yaw": 0 * t,  # turn to the person's left
        "forward": 0 * t,  # walked distance
        "swing": 0 * t,  # leg swing while stepping
    }
    s, amplitude = _progress(length, rng), rng.uniform(0.7, 1.0)
    if forward == "raise_right_arm":
        dof["arm_r"] += amplitude * np.radians(150) * s
    elif forward == "raise_left_arm":
        dof["arm_l"] += amplitude * np.radians(150) * s
    elif forward == "squat_down":
        dof["squat"] += amplitude * np.radians(60) * s
        dof["pitch"] += amplitude * np.radians(30) * s  # the torso leans to keep balance
    elif forward == "turn_left":
        dof["yaw"] += amplitude * np.radians(90) * s
    elif forward == "bow":
        dof["pitch"] += amplitude * np.radians(60) * s
    elif forward == "step_forward":
        dof["forward"] += amplitude * 0.5 * s
        dof["swing"] += amplitude * np.radians(25) * np.sin(math.pi * s)
    return dof


def _unit(angle: np.ndarray, side: np.ndarray, down: np.ndarray) -> np.ndarray:
    """``(T, 3)`` directions at ``angle`` from ``down`` towards ``side`` (both ``(T, 3)`` or ``(3,)`` unit vectors)."""
    return np.sin(angle)[:, None] * side + np.cos(angle)[:, None] * down


def _pose(dof: dict[str, np.ndarray], size: float) -> np.ndarray:
    """Joint positions ``(T, 25, 3)`` in the body frame (x: the person's left, y: up, z: forward; the floor at
    y = 0)."""
    length = len(dof["yaw"])
    joints = np.zeros((length, NTU_JOINTS, 3))
    x, y, z = np.eye(3)
    down = np.broadcast_to(-y, (length, 3))
    thigh = _unit(dof["squat"] + dof["swing"], np.broadcast_to(z, (length, 3)), down)
    shin = _unit(-dof["squat"] + dof["swing"], np.broadcast_to(z, (length, 3)), down)
    lift = -(THIGH * thigh[:, 1] + SHIN * shin[:, 1]) + ANKLE  # pelvis height over the floor
    pelvis = np.stack([0 * lift, lift, dof["forward"]], axis=1)
    up = _unit(dof["pitch"], np.broadcast_to(z, (length, 3)), np.broadcast_to(y, (length, 3)))  # torso axis
    set_ = lambda j, p: joints.__setitem__((slice(None), j - 1), p)  # noqa: E731 - 1-based NTU joints
    set_(1, pelvis)
    set_(2, pelvis + 0.5 * SPINE * up)
    set_(21, pelvis + SPINE * up)
    set_(3, pelvis + (SPINE + NECK) * up)
    set_(4, pelvis + (SPINE + NECK + HEAD) * up)
    for side, (shoulder, elbow, wrist, hand, tip, thumb, arm, flex) in (
        (1.0, (5, 6, 7, 8, 22, 23, "arm_l", "elbow_l")),
        (-1.0, (9, 10, 11, 12, 24, 25, "arm_r", "elbow_r")),
    ):
        root = pelvis + (SPINE - 0.03) * up + side * SHOULDER * x
        upper = _unit(dof[arm], side * x, -up)
        fore = _unit(dof[arm] + dof[flex], side * x, -up)
        set_(shoulder, root)
        set_(elbow, root + UPPER_ARM * upper)
        set_(wrist, root + UPPER_ARM * upper + FOREARM * fore)
        set_(hand, root + UPPER_ARM * upper + (FOREARM + HAND) * fore)
        set_(tip, root + UPPER_ARM * upper + (FOREARM + HAND + HAND_TIP) * fore)
        set_(thumb, root + UPPER_ARM * upper + (FOREARM + HAND) * fore + THUMB * z)
    for side, (hip, knee, ankle, foot) in ((1.0, (13, 14, 15, 16)), (-1.0, (17, 18, 19, 20))):
        # the right leg swings the other way while stepping
        leg_thigh = thigh if side > 0 else _unit(dof["squat"] - dof["swing"], np.broadcast_to(z, (length, 3)), down)
        leg_shin = shin if side > 0 else _unit(-dof["squat"] - dof["swing"], np.broadcast_to(z, (length, 3)), down)
        root = pelvis + side * HIP * x
        set_(hip, root)
        set_(knee, root + THIGH * leg_thigh)
        set_(ankle, root + THIGH * leg_thigh + SHIN * leg_shin)
        set_(foot, root + THIGH * leg_thigh + SHIN * leg_shin + FOOT * z - ANKLE * y)
    return joints * size


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def _to_camera(joints: np.ndarray, heading: np.ndarray, place: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """Body frame -> Kinect camera space: turn by ``heading`` (per frame) about the vertical, face the camera
    (a half turn: the body's forward is the camera's -z), stand at ``place``, then tilt by the camera matrix."""
    cos, sin = np.cos(heading)[:, None], np.sin(heading)[:, None]
    turned = joints.copy()
    turned[..., 0] = cos * joints[..., 0] + sin * joints[..., 2]
    turned[..., 2] = -sin * joints[..., 0] + cos * joints[..., 2]
    facing = turned * np.array([-1.0, 1.0, -1.0])  # rotation by pi about y
    return (facing + place) @ camera.T


def animate(action: str, rng: np.random.Generator, params: SyntheticSkeletonParams) -> np.ndarray:
    """One performance of ``action``: float64 ``(3, L, 25, 2)``, L in ``[min_frames, max_frames]``, person 2
    zeros unless present. A reversed action consumes ``rng`` exactly as its forward action and returns its
    frames reversed."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    length = int(rng.integers(params.min_frames, params.max_frames + 1))
    dof = _dofs(PAIRS[ACTIONS.index(action) // 2][0], length, rng)
    camera = _rotation(0, math.radians(rng.uniform(-10, 10))) @ _rotation(2, math.radians(rng.uniform(-5, 5)))
    floor = rng.uniform(-1.1, -0.8)  # the sensor stands ~1 m above the floor
    place = np.array([rng.uniform(-0.6, 0.6), floor, rng.uniform(2.5, 3.5)])
    heading = rng.uniform(-math.radians(30), math.radians(30)) + dof["yaw"]
    people = np.zeros((MAX_BODIES, length, NTU_JOINTS, 3))
    people[0] = _to_camera(_pose(dof, rng.uniform(0.9, 1.1)), heading, place, camera)
    people[0] += params.noise * rng.standard_normal(people[0].shape)
    if rng.uniform() < params.second_person:
        idle = _dofs(None, length, rng)
        other = place + np.array([rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.2), 0.0, rng.uniform(-0.3, 0.3)])
        turn = np.full(length, rng.uniform(-math.radians(45), math.radians(45)))
        people[1] = _to_camera(_pose(idle, rng.uniform(0.9, 1.1)), turn, other, camera)
        people[1] += params.noise * rng.standard_normal(people[1].shape)
    if ACTIONS.index(action) % 2:
        people = people[:, ::-1]
    return people.transpose(3, 1, 2, 0)


def render_sample(label: int, rng: np.random.Generator, params: SyntheticSkeletonParams) -> np.ndarray:
    """``animate`` zero-padded to 300 frames: float32 ``(3, 300, 25, 2)``."""
    performance = animate(ACTIONS[label], rng, params)
    sample = np.zeros((3, MAX_FRAMES, NTU_JOINTS, MAX_BODIES), dtype=np.float32)
    sample[:, : performance.shape[1]] = performance
    return sample


# --- the dataset folder --------------------------------------------------------------------------------------


def dataset_root(root: str | Path) -> Path:
    """Where the generated set of this ``VERSION`` lives under the data root."""
    return Path(root) / f"synthetic_skeletons_v{VERSION}"


def is_generated(folder: Path, params: SyntheticSkeletonParams) -> bool:
    return read_marker(folder) == params.to_json()


def ensure_synthetic_skeletons(folder: str | Path, params: SyntheticSkeletonParams) -> bool:
    """Generate ``folder`` (a ``dataset_root``) unless it holds these parameters' data; returns whether it did.

    Written into a temporary sibling that replaces ``folder`` when complete, so an interruption never leaves a
    half-written set; a ``folder`` without a marker was not made here and is never deleted.
    """
    return generate_once(folder, params.to_json(), lambda tmp: _write(tmp, params), f"synthetic skeletons ({params})")


def _write(out: Path, params: SyntheticSkeletonParams) -> None:
    split_dir = out / "ntu60" / "xsub"
    split_dir.mkdir(parents=True)
    for split_index, (split, count) in enumerate(params.counts().items()):
        # a balanced, shuffled class sequence per split; each sample then draws from its own generator
        labels = np.random.default_rng([params.seed, split_index]).permutation(np.arange(count) % len(ACTIONS))
        joint = np.zeros((count, 3, MAX_FRAMES, NTU_JOINTS, MAX_BODIES), dtype=np.float32)
        for i, label in enumerate(labels):
            joint[i] = render_sample(int(label), np.random.default_rng([params.seed, split_index, i]), params)
        np.save(split_dir / f"{split}_data_joint.npy", joint)
        np.save(split_dir / f"{split}_data_bone.npy", bone(joint, bone_pairs("ntu60")))
        names = [f"synthetic_{split}_{i:05d}_{ACTIONS[y]}" for i, y in enumerate(labels)]
        with open(split_dir / f"{split}_label.pkl", "wb") as f:
            pickle.dump((names, [int(y) for y in labels]), f)
    (out / "ntu60" / "classes.yaml").write_text("".join(f"- {name}\n" for name in ACTIONS))
    (out / MARKER).write_text(json.dumps(params.to_json(), indent=1))  # last: the set is complete


# --- datamodule --------------------------------------------------------------------------------------------------


class SyntheticSkeletonDataModule(SkeletonDataModule):
    """``SkeletonDataModule`` (``dataset=ntu60``, ``subset=xsub``) on the generated set under ``root``, made by
    ``prepare_data`` (or by ``setup`` outside a Trainer) when missing. Generation parameters: ``num_train``,
    ``num_val`` (test = val), ``noise``, ``seed`` (``SyntheticSkeletonParams``)."""

    def __init__(
        self,
        *,
        root: str | Path = "data",
        num_train: int = 360,
        num_val: int = 120,
        noise: float = 0.01,
        seed: int = 0,
        stream: str = "joint",
        num_classes: int = len(ACTIONS),
        channels: int | None = None,
        limit: int | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        if num_classes != len(ACTIONS):
            raise ValueError(
                f"the synthetic skeletons have {len(ACTIONS)} classes ({', '.join(ACTIONS)}), got {num_classes}"
            )
        super().__init__(
            root=dataset_root(root),
            dataset="ntu60",
            subset="xsub",
            stream=stream,
            num_classes=num_classes,
            channels=channels,
            limit=limit,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
        self.params = SyntheticSkeletonParams(num_train=num_train, num_val=num_val, noise=noise, seed=seed)

    def prepare_data(self) -> None:
        ensure_synthetic_skeletons(self.root, self.params)

    def setup(self, stage: str | None = None) -> None:
        if not is_generated(self.root, self.params):
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                raise RuntimeError(f"{self.root} is not generated: prepare_data should have run first")
            self.prepare_data()
        super().setup(stage)
