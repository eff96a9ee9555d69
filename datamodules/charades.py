"""Charades multi-label clips from the official 24 fps JPEG frame dump (paper/continual-3d-cnns.md).

On-disk layout (``datamodules/README.md`` says how to get there)::

    <root>/charades/data/Charades_v1_rgb/<vid>/<vid>-000001.jpg ...
    <root>/charades/splits/train.csv, val.csv, classes.txt

The CSVs are SlowFast's frame lists: space-separated columns ``original_vido_id video_id frame_id path labels``,
one row per frame, ``path`` relative to ``Charades_v1_rgb`` and ``labels`` the frame's classes like ``"59,147"``
(``""`` for none); a frame listed twice is an error. ``classes.txt`` has one line per class (157). The test
split is the val split.

Training takes a random clip and the union of the labels of the frames it spans; val/test take the centre clip
(``start = max(L - span, 0) // 2``) and the video-level labels (all frames). The frames are used at their 24 fps
(no resampling), so ``sampling_stride`` counts frames of the dump. Targets are float multi-hot ``(num_classes,)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from datamodules.robust import README, SkippingDataset, require_path, warn_skipped
from datamodules.video import VideoDataModule, VideoDecodeError, VideoTransform, clip_indices

__all__ = ["CharadesDataModule", "CharadesDataset", "FrameList", "read_classes", "read_frame_list"]

log = logging.getLogger(__name__)

FRAMES_DIR = "Charades_v1_rgb"
SPLIT_FILES = {"train": "train.csv", "val": "val.csv", "test": "val.csv"}
LAYOUT = f"data/{FRAMES_DIR}/<vid>/<vid>-000001.jpg ... and splits/{{train.csv,val.csv,classes.txt}}"
COLUMNS = ("original_vido_id", "video_id", "frame_id", "path", "labels")
#: Charades videos last 30 s on average (Sigurdsson et al., ECCV 2016); the frame dump is at 24 fps
VIDEO_FRAMES = 30 * 24


@dataclass
class FrameList:
    """A SlowFast frame list in flat arrays (one row per frame, videos contiguous), cheap to share with workers.

    Video ``v`` has frames ``frame_offsets[v]:frame_offsets[v + 1]`` of ``paths``; frame ``f`` has the labels
    ``label_values[label_offsets[f]:label_offsets[f + 1]]``.
    """

    video_ids: np.ndarray  # (V,) str
    frame_offsets: np.ndarray  # (V + 1,) int64
    paths: np.ndarray  # (F,) bytes, relative to Charades_v1_rgb
    label_offsets: np.ndarray  # (F + 1,) int64
    label_values: np.ndarray  # (sum of labels per frame,) int64

    def labels(self, first_frame: int, end_frame: int) -> np.ndarray:
        """The distinct labels of the frames ``first_frame:end_frame`` (global frame indices)."""
        return np.unique(self.label_values[self.label_offsets[first_frame] : self.label_offsets[end_frame]])


def _check_rows(path: Path, table: pd.DataFrame) -> None:
    """Every row has the five space-separated columns: an integer frame id, a path and comma-separated integer labels
    (possibly none). Another header or separator would otherwise parse into empty paths and no labels, silently."""
    labels_ok = table["labels"].str.fullmatch(r"(\d+(,\d+)*)?")
    bad = ~table["frame_id"].str.fullmatch(r"\d+") | (table["path"] == "") | ~labels_ok
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        line = int(table.index[first]) + 1
        row = " ".join(v for v in table.iloc[first] if v)
        raise ValueError(
            f"{path}, line {line}: {row!r} is not a frame row; a SlowFast Charades frame list has the space-separated "
            f"columns {' '.join(COLUMNS)} (an optional header line of those names), an integer frame_id and "
            "comma-separated integer labels"
        )


def read_frame_list(path: Path) -> FrameList:
    """Parse a SlowFast Charades frame list (header optional); a video's frames stay in file order."""
    table = pd.read_csv(path, sep=" ", header=None, names=COLUMNS, dtype=str, keep_default_na=False)
    if len(table) and table.iloc[0, 0].startswith("original_vid"):  # the header ("vido" in SlowFast's files)
        table = table.iloc[1:]
    if table.empty:
        raise ValueError(f"{path} has no frames; expected the columns {' '.join(COLUMNS)}")
    _check_rows(path, table)
    repeated = table["path"][table["path"].duplicated()].unique()
    if len(repeated):
        # a frame listed twice would silently make its video longer (and its clips wrong)
        raise ValueError(
            f"{path}: {len(repeated)} frames are listed more than once ({', '.join(repeated[:3])}); keep one row "
            "per frame (was the file concatenated with another?)"
        )
    # a stable sort by video groups each video's rows while keeping their order
    codes, video_ids = pd.factorize(table["original_vido_id"])
    order = np.argsort(codes, kind="stable")
    table = table.iloc[order]
    frame_offsets = np.searchsorted(codes[order], np.arange(len(video_ids) + 1))
    labels = table["labels"].str.split(",")
    counts = labels.map(lambda ls: sum(bool(s) for s in ls)).to_numpy()
    values = [int(s) for ls in labels for s in ls if s]
    return FrameList(
        video_ids=np.asarray(video_ids, dtype=str),
        frame_offsets=frame_offsets.astype(np.int64),
        paths=table["path"].to_numpy(dtype=bytes),
        label_offsets=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
        label_values=np.asarray(values, dtype=np.int64),
    )


def read_classes(path: Path) -> list[str]:
    """The class names of ``classes.txt``, one per non-empty line; line ``i`` is label ``i``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; see {README} (Charades)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_frames(paths: list[Path]) -> Tensor:
    """Decode JPEG files with PIL into ``uint8 (T, H, W, 3)``; ``VideoDecodeError`` names the first unreadable one."""
    frames = []
    for path in paths:
        try:
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, ValueError) as error:  # missing, truncated or not an image
            raise VideoDecodeError(f"cannot read frame {path}: {error}") from error
    if len({f.shape for f in frames}) > 1:
        raise VideoDecodeError(f"frames of {paths[0].parent} differ in size: {sorted({f.shape for f in frames})}")
    return torch.from_numpy(np.stack(frames))


class CharadesDataset(SkippingDataset):
    """``(clip, target)`` pairs of one Charades split: ``clip`` as returned by ``transform`` (default: the raw
    ``uint8 (T, H, W, 3)`` frames), ``target`` float multi-hot ``(num_classes,)``.

    ``train`` (default: split is ``train``) samples a random clip with the labels of its frames; otherwise the
    centre clip with the labels of the whole video. Videos whose frame folder is absent are dropped up front.
    """

    item = "video"

    def __init__(
        self,
        dataset_dir: str | Path,
        split: str,
        *,
        num_classes: int,
        frames_per_clip: int,
        sampling_stride: int,
        transform: Callable[[Tensor], Tensor] | None = None,
        train: bool | None = None,
    ) -> None:
        super().__init__()
        if split not in SPLIT_FILES:
            raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
        self.dataset_dir = Path(dataset_dir)
        require_path(self.dataset_dir, f"a Charades folder: {LAYOUT}", directory=True)
        self.frames_dir = self.dataset_dir / "data" / FRAMES_DIR
        self.num_classes = num_classes
        self.frames_per_clip = frames_per_clip
        self.sampling_stride = sampling_stride
        self.transform = transform
        self.random = split == "train" if train is None else train
        csv = self.dataset_dir / "splits" / SPLIT_FILES[split]
        if not csv.is_file():
            raise FileNotFoundError(f"{csv} does not exist; expected {LAYOUT}. See {README} (Charades)")
        self.frames = read_frame_list(csv)
        self._check_labels(csv)
        self._drop_missing(split)

    def _check_labels(self, csv: Path) -> None:
        values = self.frames.label_values
        if len(values) and (values.min() < 0 or values.max() >= self.num_classes):
            raise ValueError(
                f"{csv} has labels outside [0, {self.num_classes}): min {values.min()}, max {values.max()}"
            )

    def _drop_missing(self, split: str) -> None:
        """Keep the videos whose frame folder exists (checked once per video, not per frame)."""
        first = self.frames.paths[self.frames.frame_offsets[:-1]]
        present = np.array([(self.frames_dir / p.decode()).parent.is_dir() for p in first], dtype=bool)
        self.missing = [str(v) for v in self.frames.video_ids[~present]]
        warn_skipped(self.missing, len(present), f"{self.dataset_dir} {split}", items="annotated videos")
        self.videos = np.flatnonzero(present)  # indices into frames.video_ids
        if not len(self.videos):
            raise FileNotFoundError(f"No frame folders of the {split} videos under {self.frames_dir}; see {README}")

    def __len__(self) -> int:
        return len(self.videos)

    def describe(self, index: int) -> str:
        return str(self.frames_dir / str(self.frames.video_ids[self.videos[index]]))

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        video = self.videos[index]
        begin, end = self.frames.frame_offsets[video], self.frames.frame_offsets[video + 1]
        indices = clip_indices(int(end - begin), self.frames_per_clip, self.sampling_stride, random=self.random)
        # decode each frame once even when the clamped clip repeats it
        unique, inverse = np.unique(indices, return_inverse=True)
        frames = read_frames([self.frames_dir / self.frames.paths[begin + i].decode() for i in unique])[inverse]
        # train: the frames the clip spans; eval: the whole video
        labels = (
            self.frames.labels(begin + indices[0], begin + indices[-1] + 1)
            if self.random
            else self.frames.labels(begin, end)
        )
        target = torch.zeros(self.num_classes)
        target[torch.from_numpy(labels)] = 1.0
        clip = self.transform(frames) if self.transform is not None else frames
        return clip, target


class CharadesDataModule(VideoDataModule):
    """Train / val / test (= val) loaders of Charades; batches are ``(float32 (B, 3, T, S, S), float32 (B, C))``.

    Defaults follow the Charades Slow-8x8 config (8 frames, stride 8 at 24 fps, 256 x 256). ``num_classes``
    must equal the lines of ``classes.txt`` (157); ``VideoDataModule`` and ``VideoTransform`` explain the rest.
    """

    multi_label = True

    def __init__(
        self,
        *,
        root: str | Path = "data",
        name: str = "charades",
        num_classes: int = 157,
        clip_length: int = 8,
        eval_clip_length: int | None = None,
        sampling_stride: int = 8,
        crop_size: int = 256,
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
        require_path(self.dataset_dir, f"a Charades folder: {LAYOUT}", directory=True)
        if not self.classes:
            classes = read_classes(self.dataset_dir / "splits" / "classes.txt")
            if len(classes) != self.num_classes:
                raise ValueError(
                    f"{self.dataset_dir / 'splits' / 'classes.txt'} lists {len(classes)} classes but "
                    f"num_classes={self.num_classes}; set data.num_classes to match"
                )
            self.classes = classes
        super().setup(stage)

    def video_frames(self) -> int:
        """An average video: 30 s at 24 fps (the lengths vary a lot: the frame lists give each one's)."""
        return VIDEO_FRAMES

    def _build(self, split: str) -> CharadesDataset:
        h, train = self.hparams, split == "train"
        transform = VideoTransform(
            h.crop_size,
            train=train,
            scale_jitter=h.scale_jitter,
            normalisation=h.normalisation,
            rand_augment=h.rand_augment,
        )
        return CharadesDataset(
            self.dataset_dir,
            split,
            num_classes=self.num_classes,
            frames_per_clip=self.clip_length if train else self.eval_clip_length,
            sampling_stride=h.sampling_stride,
            transform=transform,
        )
