"""NTU RGB+D 60 / 120 and Kinetics-Skeleton from their preprocessed arrays (paper/ of the continual ST-GCNs).

On-disk layout (written by ``python -m datamodules.skeleton_prep``; ``datamodules/README.md`` says how)::

    <root>/ntu60/{xsub,xview}/{train,val}_data_{joint,bone}.npy    float32 (N, 3, 300, 25, 2)
    <root>/ntu60/{xsub,xview}/{train,val}_label.pkl                pickle of (sample_names, labels)
    <root>/ntu120/{xsub,xset}/...                                  the same
    <root>/kinetics/{train,val}_data_{joint,bone}.npy, {train,val}_label.pkl    (N, 3, 300, 18, 2)
    optional: *_data_joint_bone.npy (6 channels), *_data_joint_motion.npy, *_data_bone_motion.npy
    optional: <root>/<dataset>/classes.yaml (a YAML list of class names)

as the continual-skeletons loader (``datasets/datasets.py``, ``GraphDataset``) reads it: arrays memory-mapped
(``np.load(mmap_mode="r")``), no augmentation (the paper's scripts switch all of it off), and the test split is
the val split (the paper reports val accuracy). Streams (``stream``):

* ``joint``, ``bone``: the files of that name;
* ``joint_bone``: joint and bone concatenated on C (6 channels), read from ``*_data_joint_bone.npy`` when it
  exists (merge_joint_bone_data.py), otherwise concatenated per sample from the two files;
* ``motion`` / ``bone_motion``: frame differences of the joints / bones, read from ``*_data_joint_motion.npy`` /
  ``*_data_bone_motion.npy`` when they exist, otherwise computed per sample as motion_data_prep.py does
  (``m[t] = x[t + 1] - x[t]``, the last frame 0): the values are the same either way.

Batches are ``(float32 (B, C, 300, V, 2), int64 (B,))``, the ``(clip, label)`` pairs every datamodule of this
package gives and ``ClassificationSystem`` consumes (the original loader's third element, the index, is left
out: ``dataset.sample_names[i]`` / ``describe(i)`` name a sample). Class names come from
``<root>/<dataset>/classes.yaml`` when present, else from the lists built in here (NTU-60 / NTU-120, from
continual-skeletons ``datasets/ntu120/classes.yaml``). Its ``datasets/kinetics/classes.yaml`` is a copy of the
NTU-120 list, so Kinetics names come only from the ``classes.yaml`` that ``skeleton_prep kinetics`` writes from
the release's label files; without it they are ``class_<i>`` (with a warning).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.robust import SkippingDataset, require_path, skip_counts
from datamodules.skeleton_prep import BENCHMARKS, KINETICS_JOINTS, NTU_JOINTS, motion

__all__ = [
    "DATASETS",
    "NTU60_CLASSES",
    "NTU120_CLASSES",
    "STREAMS",
    "SkeletonDataModule",
    "SkeletonDataset",
    "skeleton_classes",
    "split_folder",
]

log = logging.getLogger(__name__)

#: dataset -> (number of classes, joints V)
DATASETS: dict[str, tuple[int, int]] = {
    "ntu60": (60, NTU_JOINTS),
    "ntu120": (120, NTU_JOINTS),
    "kinetics": (400, KINETICS_JOINTS),
}
#: stream -> input channels
STREAMS: dict[str, int] = {"joint": 3, "bone": 3, "joint_bone": 6, "motion": 3, "bone_motion": 3}
#: what each stream is read from: the file stem when it exists, else the files it is built from
_STREAM_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "joint": ("joint", ("joint",)),
    "bone": ("bone", ("bone",)),
    "joint_bone": ("joint_bone", ("joint", "bone")),
    "motion": ("joint_motion", ("joint",)),
    "bone_motion": ("bone_motion", ("bone",)),
}
SPLIT_FILES = {"train": "train", "val": "val", "test": "val"}  # test = val, as in the paper's scripts


def _prep_command(dataset: str) -> str:
    raw = "--raw <kinetics_raw>" if dataset == "kinetics" else "--raw <folder of *.skeleton files>"
    return f"python -m datamodules.skeleton_prep {dataset} {raw} --out <root>"


def _derive_hint(folder: Path, stream: str) -> str:
    return (
        f"Derive it from the joints with `python -m datamodules.skeleton_prep derive --folder {folder} "
        f"--dataset <ntu60|ntu120|kinetics> --streams {stream}`."
    )


def split_folder(root: str | Path, dataset: str, subset: str | None) -> Path:
    """``<root>/<dataset>/<subset>`` (Kinetics: ``<root>/kinetics``); a subset the dataset lacks is an error."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    subsets = BENCHMARKS[dataset]
    if not subsets:
        if subset is not None:
            raise ValueError(f"{dataset} has no subsets (no benchmark folders); set subset=null, got {subset!r}")
        return Path(root) / dataset
    if subset not in subsets:
        raise ValueError(
            f"{dataset} has the subsets {', '.join(subsets)}, got {subset!r} "
            "(NTU-60: xsub, xview; NTU-120: xsub, xset; Kinetics: none)"
        )
    return Path(root) / dataset / subset


def skeleton_classes(root: str | Path, dataset: str) -> list[str]:
    """The class names of ``dataset``: ``<root>/<dataset>/classes.yaml`` when present, else the built-in NTU
    list, else (Kinetics) ``class_<i>``."""
    path = Path(root) / dataset / "classes.yaml"
    if path.is_file():
        classes = yaml.safe_load(path.read_text())
        if not isinstance(classes, list) or not classes:
            raise ValueError(f"{path} is not a YAML list of class names")
        return [str(c) for c in classes]
    if dataset == "ntu60":
        return list(NTU60_CLASSES)
    if dataset == "ntu120":
        return list(NTU120_CLASSES)
    log.warning(f"{path} does not exist: Kinetics class names are class_<i> (skeleton_prep kinetics writes it)")
    return [f"class_{i}" for i in range(DATASETS[dataset][0])]


def _read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(sample_names, labels)`` from a label pickle (those written by Python 2 read with latin-1, as the
    original loader does)."""
    try:
        with open(path, "rb") as f:
            try:
                content = pickle.load(f)
            except UnicodeDecodeError:
                f.seek(0)
                content = pickle.load(f, encoding="latin1")
        names, labels = content
        if len(names) != len(labels):
            raise ValueError(f"{len(names)} names but {len(labels)} labels")
        # numpy arrays, not lists: forked DataLoader workers then share the pages instead of copying on access
        return np.array([str(n) for n in names]), np.asarray(labels, dtype=np.int64).reshape(-1)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a pickle of (sample_names, labels): {error}") from error


class SkeletonDataset(SkippingDataset):
    """``(sequence, label)`` pairs of one split: ``sequence`` float32 ``(C, T, V, M)`` of ``stream``, ``label``
    an int. ``folder`` holds the ``<part>_data_<stream>.npy`` and ``<part>_label.pkl`` files; ``split`` is
    ``train``, ``val`` or ``test`` (= val). ``limit`` keeps the first samples only (quick runs). ``joints`` is
    the V the files must have (None: any). The arrays are opened memory-mapped on first use in each process.
    """

    item = "skeleton sequence"

    def __init__(
        self,
        folder: str | Path,
        split: str,
        *,
        stream: str = "joint",
        joints: int | None = None,
        limit: int | None = None,
        train: bool | None = None,
        how: str = "",
    ) -> None:
        super().__init__()
        if split not in SPLIT_FILES:
            raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {sorted(STREAMS)}, got {stream!r}")
        self.folder, self.split, self.stream = Path(folder), split, stream
        part = SPLIT_FILES[split]
        self.random = part == "train" if train is None else train
        label_path = self.folder / f"{part}_label.pkl"
        require_path(label_path, f"the {part} labels, a pickle of (sample_names, labels)", how)
        self.sample_names, self.labels = _read_labels(label_path)
        merged, sources = _STREAM_FILES[stream]
        merged_path = self.folder / f"{part}_data_{merged}.npy"
        # a stream's own file when it exists (the prepared merged / motion files), else the files it is built from
        self.files = [merged_path] if merged_path.is_file() else [self.folder / f"{part}_data_{s}.npy" for s in sources]
        self.computes_motion = stream.endswith("motion") and self.files != [merged_path]
        for path in self.files:
            what = path.stem.split("_data_")[1]
            hint = how if what == "joint" else _derive_hint(self.folder, what)
            require_path(path, f"the {part} {what} array (N, C, T, V, M)", hint)
        self._check_shapes(label_path, joints)
        count = len(self.labels) if limit is None else min(limit, len(self.labels))
        self.sample_names, self.labels = self.sample_names[:count], self.labels[:count]
        self._arrays: list[np.ndarray] | None = None

    def _check_shapes(self, label_path: Path, joints: int | None) -> None:
        expected_channels = STREAMS[self.stream] if len(self.files) == 1 else 3
        for path in self.files:
            try:
                shape = np.load(path, mmap_mode="r").shape
            except (ValueError, OSError) as error:
                raise ValueError(f"{path} is not a readable .npy array ({error}); prepare it again") from error
            if len(shape) != 5 or shape[1] != expected_channels or shape[4] < 1:
                raise ValueError(
                    f"{path} has shape {shape}; expected (N, {expected_channels}, T, V, M) for stream {self.stream!r}"
                )
            if joints is not None and shape[3] != joints:
                raise ValueError(f"{path} has {shape[3]} joints (V); this dataset has {joints}")
            if shape[0] != len(self.labels):
                raise ValueError(
                    f"{path} holds {shape[0]} samples but {label_path} has {len(self.labels)} labels: they come "
                    "from different preparations; prepare the split again"
                )

    def __getstate__(self) -> dict[str, Any]:
        # memory maps are reopened in each DataLoader worker rather than pickled (which would copy the data)
        return {**self.__dict__, "_arrays": None}

    def _open(self) -> list[np.ndarray]:
        if self._arrays is None:
            self._arrays = [np.load(path, mmap_mode="r") for path in self.files]
        return self._arrays

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self, index: int) -> str:
        return f"{self.files[0]}[{index}] ({self.sample_names[index]})"

    def load(self, index: int) -> tuple[Tensor, int]:
        parts = [np.array(array[index], dtype=np.float32) for array in self._open()]
        sequence = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        if self.computes_motion:
            sequence = motion(sequence)
        return torch.from_numpy(sequence), int(self.labels[index])

    @property
    def shape(self) -> tuple[int, ...]:
        """``(C, T, V, M)`` of one sample."""
        arrays = self._open()
        return (sum(a.shape[1] for a in arrays), *arrays[0].shape[2:])


class SkeletonDataModule(pl.LightningDataModule):
    """Train / val / test (= val) loaders of NTU RGB+D 60 / 120 or Kinetics-Skeleton (module docstring).

    ``dataset`` is ``ntu60``, ``ntu120`` or ``kinetics``; ``subset`` its benchmark (``xsub``/``xview``,
    ``xsub``/``xset``, None); ``stream`` one of ``STREAMS``. ``num_classes`` (what the model's head is built with)
    must equal the class list's length when given; None takes it from the list. ``channels`` (for configs that
    read it) must match the stream when given. ``limit`` keeps the first samples of every split.
    ``pin_memory`` defaults to whether CUDA is available. Batches: ``(float32 (B, C, T, V, M), int64 (B,))``.
    """

    multi_label = False

    def __init__(
        self,
        *,
        root: str | Path = "data",
        dataset: str = "ntu60",
        subset: str | None = "xsub",
        stream: str = "joint",
        num_classes: int | None = None,
        channels: int | None = None,
        limit: int | None = None,
        batch_size: int = 16,
        num_workers: int = 4,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        self.folder = split_folder(root, dataset, subset)  # checks dataset and subset
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {sorted(STREAMS)}, got {stream!r}")
        if channels is not None and channels != STREAMS[stream]:
            raise ValueError(f"stream {stream!r} has {STREAMS[stream]} channels, got channels={channels}")
        self.save_hyperparameters(logger=False)
        self.root, self.dataset, self.stream = Path(root), dataset, stream
        self.channels, self.num_joints = STREAMS[stream], DATASETS[dataset][1]
        self.num_classes = num_classes
        self.batch_size, self.num_workers = batch_size, num_workers
        # page-locked batches copy to a GPU faster; without one they only cost memory (and a warning)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.classes: list[str] = []
        self.datasets: dict[str, SkeletonDataset] = {}

    @property
    def how(self) -> str:
        return f"Prepare it with `{_prep_command(self.dataset)}`."

    def setup(self, stage: str | None = None) -> None:
        require_path(self.folder, f"the prepared {self.dataset} arrays and labels", self.how, directory=True)
        if not self.classes:
            self.classes = self._classes()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in needed.get(stage, ("train", "val", "test")):
            if split not in self.datasets:
                self.datasets[split] = self._build(split)

    def _classes(self) -> list[str]:
        classes = skeleton_classes(self.root, self.dataset)
        if self.num_classes is None:
            self.num_classes = len(classes)
        elif len(classes) != self.num_classes:
            raise ValueError(
                f"{self.dataset} has {len(classes)} classes but num_classes={self.num_classes}; set data.num_classes "
                "to match (the model's head is built with it)"
            )
        return classes

    def _build(self, split: str) -> SkeletonDataset:
        h = self.hparams
        dataset = SkeletonDataset(
            self.folder, split, stream=h.stream, joints=self.num_joints, limit=h.limit, how=self.how
        )
        if len(dataset) and not (dataset.labels.min() >= 0 and dataset.labels.max() < self.num_classes):
            raise ValueError(
                f"{dataset.folder} {split} labels span [{dataset.labels.min()}, {dataset.labels.max()}], outside the "
                f"{self.num_classes} classes of {self.dataset}"
            )
        return dataset

    def skipped(self) -> dict[str, dict[str, int]]:
        """Per split: ``{"missing": n, "unreadable": k, "failed": m}`` (``datamodules.robust``)."""
        return {split: skip_counts(dataset) for split, dataset in self.datasets.items()}

    def _loader(self, split: str) -> DataLoader:
        dataset = self.datasets[split]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=split == "train",
            # a ragged last training batch may hold one sequence, which BatchNorm cannot normalise
            drop_last=split == "train" and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


# --- class names (continual-skeletons datasets/ntu120/classes.yaml; NTU-60's are its first 60) ------------------

_NTU120_CLASSES = """
drink water
eat meal/snack
brushing teeth
brushing hair
drop
pickup
throw
sitting down
standing up (from sitting position)
clapping
reading
writing
tear up paper
wear jacket
take off jacket
wear a shoe
take off a shoe
wear on glasses
take off glasses
put on a hat/cap
take off a hat/cap
cheer up
hand waving
kicking something
reach into pocket
hopping (one foot jumping)
jump up
make a phone call/answer phone
playing with phone/tablet
typing on a keyboard
pointing to something with finger
taking a selfie
check time (from watch)
rub two hands together
nod head/bow
shake head
wipe face
salute
put the palms together
cross hands in front (say stop)
sneeze/cough
staggering
falling
touch head (headache)
touch chest (stomachache/heart pain)
touch back (backache)
touch neck (neckache)
nausea or vomiting condition
use a fan (with hand or paper)/feeling warm
punching/slapping other person
kicking other person
pushing other person
pat on back of other person
point finger at the other person
hugging other person
giving something to other person
touch other person's pocket
handshaking
walking towards each other
walking apart from each other
put on headphone
take off headphone
shoot at the basket
bounce ball
tennis bat swing
juggling table tennis balls
hush (quite)
flick hair
thumb up
thumb down
make ok sign
make victory sign
staple book
counting money
cutting nails
cutting paper (using scissors)
snapping fingers
open bottle
sniff (smell)
squat down
toss a coin
fold paper
ball up paper
play magic cube
apply cream on face
apply cream on hand back
put on bag
take off bag
put something into a bag
take something out of a bag
open a box
move heavy objects
shake fist
throw up cap/hat
hands up (both hands)
cross arms
arm circles
arm swings
running on the spot
butt kicks (kick backward)
cross toe touch
side kick
yawn
stretch oneself
blow nose
hit other person with something
wield knife towards other person
knock over other person (hit with body)
grab other person’s stuff
shoot at other person with a gun
step on foot
high-five
cheers and drink
carry something with other person
take a photo of other person
follow other person
whisper in other person’s ear
exchange things with other person
support somebody with hand
finger-guessing game (playing rock-paper-scissors)
"""
NTU120_CLASSES: tuple[str, ...] = tuple(line for line in _NTU120_CLASSES.split("\n") if line)
NTU60_CLASSES: tuple[str, ...] = NTU120_CLASSES[:60]
