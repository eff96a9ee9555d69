"""Kinetics-400/600/700 clips from mp4 files, decoded with decord (paper/continual-3d-cnns.md).

On-disk layout (``datamodules/README.md`` says how to get there)::

    <root>/<name>/data/{train,validate,test}/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4
    <root>/<name>/splits/{train,validate,test}.json

Each split JSON maps a YouTube id to ``{"subset": ..., "annotations": {"label": str, "segment": [start, end]}}``
(the ActivityNet crawler format; ``write_split_json`` converts the CSVs); the split name ``val`` means
``validate``. Files are found by name in any folder under ``data/<split>/`` or directly in it, so the label
folders may be spelt with spaces or underscores, or be absent. Without a JSON the split is read from the
folders alone (label = folder name). The class list is the sorted set of training labels.

Videos that the JSON lists but the disk lacks are dropped when the dataset is built (``missing``, one warning),
so are videos whose label is not a training class (``unknown_label``) and file names found in two label folders
(``duplicate``: which label?); an id listed twice in a split JSON is an error. Videos that exist but cannot be
decoded are skipped and counted while loading (``SkippingDataset``: left out of evaluation).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from datamodules.decoding import read_video
from datamodules.robust import README, SkippingDataset, require_path, warn_skipped
from datamodules.video import VideoDataModule, VideoTransform

__all__ = [
    "KineticsAnnotation",
    "KineticsDataModule",
    "KineticsDataset",
    "kinetics_classes",
    "read_annotations",
    "split_dir",
    "write_split_json",
]

log = logging.getLogger(__name__)

SPLIT_DIRS = {"train": "train", "val": "validate", "validate": "validate", "test": "test"}
STANDARD_NUM_CLASSES = (400, 600, 700)
#: Kinetics videos are trimmed to 10 s segments (a few are shorter)
VIDEO_SECONDS = 10.0


def split_dir(split: str) -> str:
    """The folder name of ``split`` (``val`` → ``validate``)."""
    if split not in SPLIT_DIRS:
        raise ValueError(f"split must be one of {sorted(SPLIT_DIRS)}, got {split!r}")
    return SPLIT_DIRS[split]


@dataclass(frozen=True)
class KineticsAnnotation:
    """One annotated video: its YouTube id, label and the trimmed segment in whole seconds."""

    youtube_id: str
    label: str
    start: int
    end: int

    @property
    def filename(self) -> str:
        return f"{self.youtube_id}_{self.start:06d}_{self.end:06d}.mp4"


def read_annotations(dataset_dir: Path, split: str) -> list[KineticsAnnotation]:
    """The annotations of ``split`` from ``splits/<split>.json``, or from the label folders if there is no JSON."""
    path = dataset_dir / "splits" / f"{split_dir(split)}.json"
    if path.is_file():
        with open(path) as f:
            try:
                entries = json.load(f, object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path} is not valid JSON ({error}); regenerate it with write_split_json from the official CSV "
                    "(datamodules/README.md, Kinetics)"
                ) from None
        return [_annotation(youtube_id, entry, path) for youtube_id, entry in entries.items()]
    return [_parse_filename(p.name, p.parent.name) for p in _list_videos(dataset_dir / "data" / split_dir(split))]


def _unique_keys(pairs: list[tuple[str, object]], path: Path) -> dict:
    """A JSON object as a dict; a key listed twice is an error (``json.load`` would keep the last silently, and
    a video annotated twice has no one label)."""
    entries = dict(pairs)
    if len(entries) < len(pairs):
        counts = Counter(key for key, _value in pairs)
        repeated = [f"{key!r} listed {n} times" for key, n in counts.items() if n > 1]
        raise ValueError(
            f"{path}: {len(repeated)} ids are annotated more than once ({', '.join(repeated[:5])}); keep one entry "
            "per video (regenerate the file with write_split_json from the official CSV)"
        )
    return entries


def _annotation(youtube_id: str, entry: dict, path: Path) -> KineticsAnnotation:
    try:
        annotations = entry["annotations"]
        start, end = annotations["segment"]
        # unlabelled entries (the original Kinetics test JSON) get "" and are dropped by the dataset
        return KineticsAnnotation(youtube_id, annotations.get("label", ""), int(start), int(end))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{path}: entry {youtube_id!r} is not {{'annotations': {{'label': str, 'segment': [start, end]}}}}"
        ) from error


def _parse_filename(filename: str, label: str) -> KineticsAnnotation:
    # YouTube ids may contain "_": split the two numbers off the right
    parts = Path(filename).stem.rsplit("_", 2)
    if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        raise ValueError(f"{label}/{filename} is not named <youtube_id>_<start:06d>_<end:06d>.mp4")
    return KineticsAnnotation(parts[0], label, int(parts[1]), int(parts[2]))


def _list_videos(data_dir: Path, *, flat: bool = False) -> list[Path]:
    """Every ``<label>/<file>.mp4`` under ``data_dir`` (one scandir per label: fast on 240k files), and with
    ``flat`` also the ``<file>.mp4`` directly in it (the CVDF archives unpack without label folders)."""
    if not data_dir.is_dir():
        return []
    videos = []
    for entry in os.scandir(data_dir):
        if entry.is_dir():
            videos += [Path(e.path) for e in os.scandir(entry.path) if e.name.endswith(".mp4")]
        elif flat and entry.name.endswith(".mp4"):
            videos.append(Path(entry.path))
    return sorted(videos)


def write_split_json(csv_path: str | Path, json_path: str | Path) -> int:
    """Convert a Kinetics annotation CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``, as in the CVDF
    and DeepMind archives) into the crawler JSON this loader reads; returns the number of videos."""
    import pandas as pd

    table = pd.read_csv(csv_path, dtype={"youtube_id": str, "label": str}, keep_default_na=False)
    missing = {"label", "youtube_id", "time_start", "time_end", "split"} - set(table.columns)
    if missing:
        raise ValueError(f"{csv_path} lacks the columns {sorted(missing)}")
    entries = {
        row.youtube_id: {
            "annotations": {"label": row.label, "segment": [float(row.time_start), float(row.time_end)]},
            "subset": SPLIT_DIRS.get(row.split, row.split),
        }
        for row in table.itertuples()
    }
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(entries))
    return len(entries)


def kinetics_classes(dataset_dir: Path) -> list[str]:
    """Sorted training labels (``splits/train.json``, else the folders of ``data/train``)."""
    labels = sorted({a.label for a in read_annotations(dataset_dir, "train")} - {""})
    if not labels:
        raise FileNotFoundError(
            f"No training labels under {dataset_dir}: neither splits/train.json nor data/train/<label>/*.mp4 "
            f"exist. See {README}."
        )
    return labels


class KineticsDataset(SkippingDataset):
    """``(clip, label)`` pairs of one Kinetics split: ``clip`` as returned by ``transform`` (by default the raw
    ``uint8 (T, H, W, 3)`` frames), ``label`` an index into ``classes``.

    ``frames_per_clip`` frames ``sampling_stride`` apart at ``target_fps``; ``train`` (default: split is
    ``train``) draws the clip start at random, otherwise the centre clip is taken (``datamodules.video``).
    """

    item = "video"

    def __init__(
        self,
        dataset_dir: str | Path,
        split: str,
        *,
        classes: list[str],
        frames_per_clip: int,
        sampling_stride: int,
        target_fps: float = 30.0,
        transform: Callable[[Tensor], Tensor] | None = None,
        train: bool | None = None,
    ) -> None:
        super().__init__()
        self.dataset_dir = Path(dataset_dir)
        require_path(self.dataset_dir, f"a Kinetics folder: {KineticsDataModule.layout}", directory=True)
        self.split = split_dir(split)
        self.classes = classes
        self.frames_per_clip = frames_per_clip
        self.sampling_stride = sampling_stride
        self.target_fps = target_fps
        self.transform = transform
        self.random = self.split == "train" if train is None else train
        self._index(read_annotations(self.dataset_dir, split))

    def _index(self, annotations: list[KineticsAnnotation]) -> None:
        files = self._files()
        class_index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({a.label for a in annotations} - set(class_index))
        self.unknown_label = [f"{a.label}/{a.filename}" for a in annotations if a.label in unknown]
        if unknown:
            log.warning(
                f"{self.dataset_dir} {self.split}: {len(self.unknown_label)} videos have labels outside the "
                f"{len(self.classes)} training classes and are skipped: {unknown[:5]}"
            )
        paths, labels = [], []
        for a in annotations:
            if a.label not in class_index:
                continue
            if a.filename in files and files[a.filename] is None:
                continue  # in several folders: counted in ``duplicate``
            if a.filename in files:
                paths.append(str(files[a.filename]))
                labels.append(class_index[a.label])
            else:
                self.missing.append(f"{a.label}/{a.filename}")
        total = len(self.missing) + len(paths)
        warn_skipped(self.missing, total, f"{self.dataset_dir} {self.split}", items="annotated videos")
        if not paths:
            raise FileNotFoundError(f"No readable {self.split} videos under {self.dataset_dir / 'data'}; see {README}")
        # numpy arrays instead of lists of str: forked DataLoader workers do not copy them page by page on access
        self.paths = np.array(paths)
        self.labels = np.array(labels, dtype=np.int64)

    def _files(self) -> dict[str, Path | None]:
        """The videos of the split by file name; a name found in several folders maps to None and its copies
        go to ``duplicate`` (one warning): a file filed under two labels has no one label."""
        files: dict[str, Path | None] = {}
        copies: dict[str, list[Path]] = {}
        for path in _list_videos(self.dataset_dir / "data" / self.split, flat=True):
            copies.setdefault(path.name, []).append(path)
        for name, found in copies.items():
            files[name] = found[0] if len(found) == 1 else None
            if len(found) > 1:
                self.duplicate += [f"{p.parent.name}/{p.name}" for p in found]
        warn_skipped(
            self.duplicate,
            len(self.duplicate) + len(files),
            f"{self.dataset_dir} {self.split}",
            items="videos",
            reason="share a file name with another folder's (which label?)",
        )
        return files

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def load(self, index: int) -> tuple[Tensor, int]:
        frames = read_video(
            self.paths[index],
            self.frames_per_clip,
            self.sampling_stride,
            target_fps=self.target_fps,
            random=self.random,
        )
        clip = self.transform(frames) if self.transform is not None else frames
        return clip, int(self.labels[index])


class KineticsDataModule(VideoDataModule):
    """Train / val (``validate``) / test loaders of Kinetics-400, 600 or 700 (``name`` picks the folder).

    ``clip_length`` frames (``eval_clip_length`` for val/test) ``sampling_stride`` apart at ``target_fps``,
    ``crop_size`` square; ``VideoTransform`` explains ``scale_jitter``, ``normalisation`` and ``rand_augment``,
    ``VideoDataModule`` the rest. Batches are ``(float32 (B, 3, T, S, S), int64 (B,))``.

    ``num_classes`` (what the model's head is built with) must equal the number of training labels when given;
    when ``None``, ``setup`` sets it and warns about a count other than 400/600/700.
    """

    multi_label = False
    layout = "data/{train,validate,test}/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4 and splits/<split>.json"

    def __init__(
        self,
        *,
        root: str | Path = "data",
        name: str = "kinetics400",
        num_classes: int | None = 400,
        clip_length: int = 13,
        eval_clip_length: int | None = None,
        sampling_stride: int = 6,
        target_fps: float = 30.0,
        crop_size: int = 160,
        scale_jitter: float = 1.25,
        normalisation: str = "feichtenhofer",
        rand_augment: bool = False,
        batch_size: int = 16,
        num_workers: int = 4,
        pin_memory: bool | None = None,
        channels: int = 3,
        height: int | None = None,
        width: int | None = None,
    ) -> None:
        super().__init__(
            clip_length=clip_length,
            eval_clip_length=eval_clip_length,
            crop_size=crop_size,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            channels=channels,
            height=height,
            width=width,
        )
        self.save_hyperparameters(logger=False)
        self.dataset_dir = Path(root) / name
        self.num_classes = num_classes
        self.classes: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        require_path(self.dataset_dir, f"a Kinetics folder: {self.layout}", directory=True)
        if not self.classes:
            self.classes = self._classes()
        super().setup(stage)

    def _classes(self) -> list[str]:
        classes = kinetics_classes(self.dataset_dir)
        if self.num_classes is None:
            if len(classes) not in STANDARD_NUM_CLASSES:
                log.warning(f"{self.dataset_dir}: {len(classes)} classes, not one of {STANDARD_NUM_CLASSES}")
            self.num_classes = len(classes)
        elif len(classes) != self.num_classes:
            raise ValueError(
                f"{self.dataset_dir} has {len(classes)} training classes but num_classes={self.num_classes}; "
                "set data.num_classes to match (the model's head is built with it)"
            )
        return classes

    def video_frames(self) -> int:
        """A 10 s segment at ``target_fps``: 300 frames at 30 fps."""
        return round(VIDEO_SECONDS * self.hparams.target_fps)

    def _build(self, split: str) -> KineticsDataset:
        h, train = self.hparams, split == "train"
        transform = VideoTransform(
            h.crop_size,
            train=train,
            scale_jitter=h.scale_jitter,
            normalisation=h.normalisation,
            rand_augment=h.rand_augment,
        )
        return KineticsDataset(
            self.dataset_dir,
            split,
            classes=self.classes,
            frames_per_clip=self.clip_length if train else self.eval_clip_length,
            sampling_stride=h.sampling_stride,
            target_fps=h.target_fps,
            transform=transform,
        )
