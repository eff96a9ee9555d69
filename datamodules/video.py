"""Temporal clip sampling, spatial transforms and the datamodule base shared by the video datasets.

Conventions: decoded frames are ``uint8 (T, H, W, C)``; a transformed clip is ``float32 (C, T, S, S)`` (the
channels-first layout of DESIGN.md). Temporal sampling follows Co3D / SlowFast (paper/continual-3d-cnns.md):

* a video is first resampled to ``target_fps`` by index arithmetic (frame ``i`` of the resampled video is
  frame ``floor(i * fps / target_fps)`` of the file), so ``sampling_stride`` means the same time step for every
  video whatever its frame rate;
* a clip is ``frames_per_clip`` frames ``sampling_stride`` apart; training starts it at random, evaluation at
  the centre (``start = max(L - span, 0) // 2``);
* indices are clamped to the video, so a clip longer than the video repeats its last frame. The continual
  protocols need this: their warm-up can be longer than a 10 s Kinetics video (CoX3D-L needs 73 frames at stride 5).

Random choices draw from torch's global generator, which the DataLoader seeds per worker (and
``pl.seed_everything(workers=True)`` makes reproducible). Missing and unreadable files are handled by the layer
every datamodule shares, ``datamodules.robust``. Nothing here decodes video: ``datamodules.decoding`` does (the
one module that imports decord, which has wheels for x86_64 only), so datasets of frames or features need no
video decoder.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.robust import (
    NORMALISATIONS,
    DecodeError,
    SkippingDataset,
    SkippingLoader,
    normalisation_stats,
    skip_counts,
)

__all__ = [
    "NORMALISATIONS",  # datamodules.robust's table, re-exported: the names VideoTransform accepts
    "VideoDataModule",
    "VideoDecodeError",
    "VideoTransform",
    "clip_indices",
    "clip_start",
    "distinct_clip_frames",
    "resample_indices",
]


class VideoDecodeError(DecodeError):
    """A video (or frame) could not be read. ``SkippingDataset`` skips these and counts them; others propagate."""


# --- temporal sampling -----------------------------------------------------------------------------


def resample_indices(num_frames: int, fps: float, target_fps: float) -> np.ndarray:
    """Indices into a ``num_frames``-frame video at ``fps`` that play it at ``target_fps``.

    The resampled video lasts as long as the original (``floor(num_frames * target_fps / fps)`` frames, at least
    one); a lower ``target_fps`` drops frames, a higher one repeats them. An unknown ``fps`` (0 or NaN, as
    some containers report) is taken to be ``target_fps``.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if not (fps > 0 and math.isfinite(fps)):
        fps = target_fps
    length = max(int(num_frames * target_fps / fps + 1e-6), 1)
    # + 1e-6: floor of a ratio that is integral in exact arithmetic must not fall one short in floating point
    return np.minimum((np.arange(length) * (fps / target_fps) + 1e-6).astype(np.int64), num_frames - 1)


def clip_start(num_frames: int, span: int, *, random: bool) -> int:
    """First frame of a clip covering ``span`` frames: uniform in ``[0, max(num_frames - span, 0)]`` or the centre."""
    last_start = max(num_frames - span, 0)
    if random:
        return int(torch.randint(last_start + 1, ()).item())
    return last_start // 2


def distinct_clip_frames(num_frames: int, stride: int) -> int:
    """The longest clip of a ``num_frames``-frame video whose frames are all ``stride`` apart: its span
    ``(n - 1) * stride + 1`` must fit, so ``ceil(num_frames / stride)``. A longer clip is clamped to the last
    frame (``clip_indices``), so the frames beyond are copies of it."""
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames} and {stride}")
    return -(-num_frames // stride)


def clip_indices(num_frames: int, frames_per_clip: int, stride: int, *, random: bool) -> np.ndarray:
    """``frames_per_clip`` indices ``stride`` apart into a ``num_frames``-frame video, clamped to its last frame."""
    if frames_per_clip < 1 or stride < 1:
        raise ValueError(f"frames_per_clip and stride must be >= 1, got {frames_per_clip} and {stride}")
    span = (frames_per_clip - 1) * stride + 1
    start = clip_start(num_frames, span, random=random)
    return np.minimum(start + stride * np.arange(frames_per_clip), num_frames - 1)


# --- spatial transforms ----------------------------------------------------------------------------


class VideoTransform:
    """``uint8 (T, H, W, C)`` → ``float32 (C, T, S, S)``: to [0, 1], short-side scale, crop ``S``, normalise.

    Training scales the short side to a random integer in ``[S, scale_jitter * S]`` and crops at a random place;
    evaluation scales it to exactly ``S`` and crops the centre (paper/continual-3d-cnns.md). The same scale and crop
    apply to every frame of a clip. ``rand_augment`` adds RandAugment (2 ops, magnitude 7 of 10, as pytorchvideo's in
    Co3D) to training clips, after scaling and before cropping.
    """

    def __init__(
        self,
        crop_size: int,
        *,
        train: bool,
        scale_jitter: float = 1.25,
        normalisation: str = "feichtenhofer",
        rand_augment: bool = False,
    ) -> None:
        mean, std = normalisation_stats(normalisation)
        if scale_jitter < 1:
            raise ValueError(
                f"scale_jitter must be >= 1 (the short side is scaled to [S, jitter * S]), got {scale_jitter}"
            )
        self.crop_size = crop_size
        self.train = train
        self.max_short_side = round(scale_jitter * crop_size) if train else crop_size
        self.mean = torch.tensor(mean).view(-1, 1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1, 1)
        self.rand_augment = None
        if rand_augment and train:
            from torchvision.transforms import v2

            # magnitude 7 on 11 bins = pytorchvideo's 7 out of 10
            self.rand_augment = v2.RandAugment(num_ops=2, magnitude=7, num_magnitude_bins=11)

    def __call__(self, frames: Tensor) -> Tensor:
        if frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames (T, H, W, 3), got shape {tuple(frames.shape)}")
        clip = frames.permute(0, 3, 1, 2).float().div_(255)  # (T, C, H, W): frames as an image batch
        short_side = int(torch.randint(self.crop_size, self.max_short_side + 1, ()).item())
        clip = short_side_scale(clip, short_side)
        if self.rand_augment is not None:
            clip = self.rand_augment(clip)  # a (T, C, H, W) tensor: one set of random ops for all frames
        clip = crop(clip, self.crop_size, random=self.train)
        clip = clip.permute(1, 0, 2, 3)  # (C, T, S, S)
        return ((clip - self.mean) / self.std).contiguous()


def short_side_scale(clip: Tensor, size: int) -> Tensor:
    """Bilinear resize of ``(T, C, H, W)`` so that ``min(H, W) == size``, keeping the aspect ratio."""
    height, width = clip.shape[-2:]
    if min(height, width) == size:
        return clip
    if height <= width:
        new_height, new_width = size, max(round(width * size / height), size)
    else:
        new_height, new_width = max(round(height * size / width), size), size
    return F.interpolate(clip, size=(new_height, new_width), mode="bilinear", align_corners=False)


def crop(clip: Tensor, size: int, *, random: bool) -> Tensor:
    """A ``size x size`` crop of ``(..., H, W)``: at a uniform random place or the centre."""
    height, width = clip.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"cannot crop {size}x{size} from frames of {height}x{width}")
    if random:
        top = int(torch.randint(height - size + 1, ()).item())
        left = int(torch.randint(width - size + 1, ()).item())
    else:
        top, left = (height - size) // 2, (width - size) // 2
    return clip[..., top : top + size, left : left + size]


# --- datamodule ------------------------------------------------------------------------------------


class VideoDataModule(pl.LightningDataModule):
    """What the video datamodules share: clip geometry checks, lazily built splits, loaders, skip counts.

    Subclasses implement ``_build(split)`` (one of ``train``, ``val``, ``test``) and set ``multi_label``.
    ``clip_length`` is the training clip; ``eval_clip_length`` (default ``clip_length``) the val/test clip, e.g.
    the warm-up plus predicted frames of a continual protocol. ``pin_memory`` defaults to whether CUDA is
    available. ``channels``, ``height`` and ``width`` describe the
    clips for configs that read them (the profiler's input shape) and must be 3 and ``crop_size``.

    ``video_frames()`` is how long a video is, roughly (frames at the clip frame rate; None: unknown), and
    ``max_clip_frames()`` how many distinct frames a clip ``sampling_stride`` apart can take from it: an
    evaluation protocol that needs longer clips gets the last frame repeated (``clip_indices``).
    """

    #: whether targets are multi-hot float vectors (multi-label, BCE) rather than class indices
    multi_label: bool = False

    def __init__(
        self,
        *,
        clip_length: int,
        eval_clip_length: int | None,
        crop_size: int,
        batch_size: int,
        num_workers: int,
        pin_memory: bool | None,
        channels: int = 3,
        height: int | None = None,
        width: int | None = None,
    ) -> None:
        super().__init__()
        if channels != 3 or (height or crop_size) != crop_size or (width or crop_size) != crop_size:
            raise ValueError(
                f"clips are RGB crop_size x crop_size = 3 x {crop_size} x {crop_size}; got channels={channels}, "
                f"height={height}, width={width} (set crop_size instead)"
            )
        self.clip_length = clip_length
        self.eval_clip_length = eval_clip_length or clip_length
        self.batch_size = batch_size
        self.num_workers = num_workers
        # page-locked batches copy to a GPU faster; without one they only cost memory (and a warning)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.datasets: dict[str, SkippingDataset] = {}

    @abstractmethod
    def _build(self, split: str) -> SkippingDataset:
        """The dataset of ``split`` (``train``, ``val`` or ``test``)."""

    def video_frames(self) -> int | None:
        """Frames of a typical video at the clip frame rate, as far as the datamodule knows; None: unknown."""
        return None

    def max_clip_frames(self) -> int | None:
        """Distinct frames a clip ``hparams.sampling_stride`` frames apart can take from a typical video (None:
        unknown)."""
        frames = self.video_frames()
        return None if frames is None else distinct_clip_frames(frames, self.hparams.sampling_stride)

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in needed.get(stage, ("train", "val", "test")):
            if split not in self.datasets:
                self.datasets[split] = self._build(split)

    def skipped(self) -> dict[str, dict[str, int]]:
        """Per built split, ``datamodules.robust.skip_counts``: annotated files missing from disk, unreadable,
        with a label outside the class list, annotated twice, and samples that failed to decode so far."""
        return {s: skip_counts(d) for s, d in self.datasets.items()}

    def _loader(self, split: str) -> DataLoader:
        dataset = self.datasets[split]
        # evaluation leaves unreadable videos out of the batches (and a batch of only those out of the loop)
        return SkippingLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=split == "train",
            # a ragged last training batch may hold one clip, which BatchNorm cannot normalise
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
