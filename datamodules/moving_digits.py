"""Moving Digits: a small built-in video set whose class is a motion, written as real mp4s in the Kinetics layout.

Each video shows one scikit-learn digit (``sklearn.datasets.load_digits``, 8 x 8, scaled to ``digit_size``)
on a ``size x size`` canvas of random colours, moving in one of ``MOTIONS``: eight translation directions
(wrapping around the borders, so the digit never leaves) and two rotation senses. The digit, its start
position and orientation, speed, colours and pixel noise are random, and every frame on its own shows a digit at
a uniformly random place and angle whatever the class, so one frame cannot tell the class: a model has to use
time. (A tiny 3D CNN reaches 0.88 validation top-1 on 8-frame clips and 0.11, chance, on single frames; see the
slow test in tests/datamodules/test_moving_digits.py.)

The videos are lossless H.264 mp4 files (libx264rgb, qp 0) in the Kinetics-400 layout and JSON format::

    <root>/moving_digits/data/{train,validate,test}/<motion>/<split>-<i:05d>_000000_<end:06d>.mp4
    <root>/moving_digits/splits/{train,validate,test}.json
    <root>/moving_digits/generation.json   (the parameters it was generated with)

so the same ``KineticsDataset`` and decord decoder read them. What is guaranteed: the decoded frames equal the
rendered frames bit for bit (lossless RGB), and rendering is pure numpy seeded per video ``(seed, split, index)``,
so the decoded dataset is identical for any number of worker processes and on every run. The mp4 bytes are not
guaranteed (x264 may emit a different but equivalent bitstream). Generation is redone when the parameters in
``generation.json`` differ. The default 1200/300/300 videos of 64 frames take ~45 s with 2 processes on 2 cores;
a video takes ~10 ms to render and ~40 ms to encode (~150 KB: the pixel noise does not compress).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import socket
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from datamodules.kinetics import KineticsDataModule

__all__ = ["MOTIONS", "MovingDigitsDataModule", "MovingDigitsParams", "ensure_moving_digits", "render_video"]

log = logging.getLogger(__name__)

#: The classes: (row, column) velocity directions, and the rotation senses (+1 = counter-clockwise on screen).
TRANSLATIONS = {
    "up": (-1, 0),
    "down": (1, 0),
    "left": (0, -1),
    "right": (0, 1),
    "up_left": (-1, -1),
    "up_right": (-1, 1),
    "down_left": (1, -1),
    "down_right": (1, 1),
}
ROTATIONS = {"rotate_ccw": 1, "rotate_cw": -1}
MOTIONS = (*TRANSLATIONS, *ROTATIONS)
SPLITS = ("train", "validate", "test")
MARKER = "generation.json"
#: bump when the rendering or encoding changes, so that old folders are regenerated (2: lossless RGB)
VERSION = 2


@dataclass(frozen=True)
class MovingDigitsParams:
    """Everything the generated files depend on (recorded in ``generation.json``)."""

    num_train: int = 1200
    num_val: int = 300
    num_test: int = 300
    num_frames: int = 64
    fps: int = 30
    size: int = 32
    digit_size: int = 16
    speed: tuple[float, float] = (0.75, 1.5)  # pixels per frame, translations
    angular_speed: tuple[float, float] = (3.0, 6.0)  # degrees per frame, rotations
    noise: float = 0.03  # std of the Gaussian pixel noise, in [0, 1] intensity units
    seed: int = 0
    version: int = VERSION

    def counts(self) -> dict[str, int]:
        return {"train": self.num_train, "validate": self.num_val, "test": self.num_test}

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# --- rendering ---------------------------------------------------------------------------------------


@functools.cache
def _digit_images() -> np.ndarray:
    """The 1797 scikit-learn digits as float32 ``(N, 8, 8)`` in [0, 1] (bundled with scikit-learn: no download)."""
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0).astype(np.float32)


def render_video(digit: np.ndarray, motion: str, params: MovingDigitsParams, rng: np.random.Generator) -> np.ndarray:
    """One clip ``uint8 (num_frames, size, size, 3)`` of ``digit`` (8 x 8 in [0, 1]) moving as ``motion``."""
    t = np.arange(params.num_frames, dtype=np.float64)
    start = rng.uniform(0, params.size, 2)  # centre (row, col) in pixels
    angle0 = rng.uniform(0, 2 * math.pi)
    if motion in TRANSLATIONS:
        direction = np.array(TRANSLATIONS[motion], dtype=np.float64)
        velocity = rng.uniform(*params.speed) * direction / np.linalg.norm(direction)
        centre = start + t[:, None] * velocity  # (T, 2)
        angle = np.full_like(t, angle0)
    else:
        centre = np.broadcast_to(start, (len(t), 2))
        angle = angle0 + ROTATIONS[motion] * math.radians(rng.uniform(*params.angular_speed)) * t
    intensity = _draw(digit, centre, angle, params.size, params.digit_size).astype(np.float32)  # (T, H, W)
    background, foreground = rng.uniform(0.0, 0.35, 3).astype(np.float32), rng.uniform(0.6, 1.0, 3).astype(np.float32)
    frames = background + intensity[..., None] * (foreground - background)  # (T, H, W, 3)
    frames += np.float32(params.noise) * rng.standard_normal(frames.shape, dtype=np.float32)
    return (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)


def _draw(digit: np.ndarray, centre: np.ndarray, angle: np.ndarray, size: int, digit_size: int) -> np.ndarray:
    """Sample the digit on the canvas per frame: ``(T, size, size)`` intensities.

    Every canvas pixel is mapped into the digit's frame: its offset from the centre on the torus (so a digit
    crossing a border shows on both sides), rotated by ``-angle`` and scaled so that the digit spans
    ``digit_size`` pixels; the digit is then read there bilinearly, zero outside.
    """
    pixels = np.arange(size) + 0.5
    dy = _wrap(pixels[None, :] - centre[:, 0:1], size)[:, :, None]  # (T, H, 1)
    dx = _wrap(pixels[None, :] - centre[:, 1:2], size)[:, None, :]  # (T, 1, W)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    # rows grow downwards, so this turns the digit counter-clockwise on screen for a growing angle
    scale = digit.shape[0] / digit_size  # digit pixels per canvas pixel
    col = (cos * dx - sin * dy) * scale + digit.shape[1] / 2 - 0.5  # digit pixel coordinates (centres at k)
    row = (sin * dx + cos * dy) * scale + digit.shape[0] / 2 - 0.5
    return _bilinear(digit, row, col)


def _bilinear(image: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """``image`` read at fractional ``(row, col)``, zero outside (a border of zeros keeps the indexing simple)."""
    padded = np.pad(image, 1)
    r0, c0 = np.floor(row), np.floor(col)
    wr, wc = row - r0, col - c0
    # +1 for the border; indices beyond it clip onto it, i.e. read zero
    r0, c0 = r0.astype(np.int64) + 1, c0.astype(np.int64) + 1
    r0, r1 = np.clip(r0, 0, padded.shape[0] - 1), np.clip(r0 + 1, 0, padded.shape[0] - 1)
    c0, c1 = np.clip(c0, 0, padded.shape[1] - 1), np.clip(c0 + 1, 0, padded.shape[1] - 1)
    top = padded[r0, c0] * (1 - wc) + padded[r0, c1] * wc
    bottom = padded[r1, c0] * (1 - wc) + padded[r1, c1] * wc
    return top * (1 - wr) + bottom * wr


def _wrap(d: np.ndarray, size: int) -> np.ndarray:
    return np.remainder(d + size / 2, size) - size / 2


def encode_mp4(path: Path, frames: np.ndarray, fps: int, crf: int | None = None) -> None:
    """Write ``uint8 (T, H, W, 3)`` frames as H.264 with PyAV.

    ``crf=None`` (Moving Digits): lossless RGB (libx264rgb, qp 0), so decoding returns exactly ``frames``. An int
    writes the lossy yuv420p H.264 of a typical download at that constant rate factor (tests of the readers).
    Lossy x264 output is not reproducible bit for bit across runs on every machine, which is why generation
    does not use it.
    """
    import av  # only generation needs an encoder; decord reads the files

    with av.open(str(path), "w", format="mp4") as container:
        if crf is None:
            stream = container.add_stream("libx264rgb", rate=fps)
            stream.pix_fmt, stream.options = "rgb24", {"qp": "0", "preset": "veryfast"}
        else:
            stream = container.add_stream("libx264", rate=fps)
            stream.pix_fmt, stream.options = "yuv420p", {"crf": str(crf), "preset": "veryfast"}
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.thread_count = 1  # small frames: threads cost more than they give
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush


# --- the dataset folder ------------------------------------------------------------------------------


def read_marker(dataset_dir: Path) -> dict | None:
    """The parameters a folder was generated with, or None when it has no (readable) marker."""
    try:
        return json.loads((dataset_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_generated(dataset_dir: Path, params: MovingDigitsParams) -> bool:
    return read_marker(dataset_dir) == params.to_json()


def ensure_moving_digits(
    dataset_dir: str | Path, params: MovingDigitsParams, *, progress: bool = True, workers: int = 1
) -> bool:
    """Generate the folder unless it holds these parameters' videos already; returns whether it generated.

    ``workers`` processes render and encode in parallel (the decoded frames are the same for any number).

    The videos are written into a temporary sibling folder that replaces ``dataset_dir`` only when complete, so
    an interrupted run never leaves a half-written set behind. A ``dataset_dir`` that exists without a marker was
    not made here and is never deleted.
    """
    dataset_dir = Path(dataset_dir)
    not_folders = [p for p in (dataset_dir.parent, *dataset_dir.parent.parents) if p.exists() and not p.is_dir()]
    if not_folders:  # DATA_DIR / data.root naming a file: mkdir would fail deep inside the writer
        raise NotADirectoryError(
            f"Moving Digits would be generated in {dataset_dir}, but {not_folders[0]} is a file, not a folder; "
            "point DATA_DIR (data.root) to a folder"
        )
    if is_generated(dataset_dir, params):
        return False
    if dataset_dir.exists() and read_marker(dataset_dir) is None:
        raise FileExistsError(
            f"{dataset_dir} exists but holds no {MARKER}, so it was not generated by MovingDigits; "
            "move it away or choose another data.root / data.name"
        )
    tmp = dataset_dir.with_name(f".{dataset_dir.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info(f"Generating Moving Digits in {dataset_dir} ({params})")
    _write_all(tmp, params, progress, workers)
    if is_generated(dataset_dir, params):  # another process (e.g. another node's rank 0) finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return True
    if dataset_dir.exists():
        shutil.rmtree(dataset_dir)  # generated earlier with other parameters (it has a marker)
    try:
        tmp.rename(dataset_dir)
    except OSError:
        if not is_generated(dataset_dir, params):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _write_all(out: Path, params: MovingDigitsParams, progress: bool, workers: int) -> None:
    end = math.ceil(params.num_frames / params.fps)  # seconds, like the Kinetics segment
    videos = []  # (path, split index, video index, motion)
    for split_index, (split, count) in enumerate(params.counts().items()):
        # a balanced, shuffled class sequence per split; each video then draws from its own generator
        labels = np.random.default_rng([params.seed, split_index]).permutation(np.arange(count) % len(MOTIONS))
        annotations = {}
        for motion in MOTIONS:
            (out / "data" / split / motion).mkdir(parents=True, exist_ok=True)
        for i, label in enumerate(labels):
            motion, video_id = MOTIONS[label], f"{split}-{i:05d}"
            videos.append((out / "data" / split / motion / f"{video_id}_000000_{end:06d}.mp4", split_index, i, motion))
            annotations[video_id] = {
                "annotations": {"label": motion, "segment": [0.0, float(end)]},
                "duration": params.num_frames / params.fps,
                "subset": split,
            }
        (out / "splits").mkdir(exist_ok=True)
        (out / "splits" / f"{split}.json").write_text(json.dumps(annotations, indent=1))
    write = functools.partial(_write_video, params=params)
    with tqdm(total=len(videos), desc="Moving Digits", unit="video", disable=not progress) as bar:
        if workers <= 1:
            for video in videos:
                bar.update(write(video))
        else:
            # fork is cheap (no re-import) and safe here: the workers only run numpy and PyAV
            context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                for done in pool.map(write, videos, chunksize=16):
                    bar.update(done)
    # last: the marker says the set is complete
    (out / MARKER).write_text(json.dumps(params.to_json(), indent=1))


def _write_video(video: tuple[Path, int, int, str], params: MovingDigitsParams) -> int:
    path, split_index, index, motion = video
    rng = np.random.default_rng([params.seed, split_index, index])
    digits = _digit_images()
    encode_mp4(path, render_video(digits[rng.integers(len(digits))], motion, params, rng), params.fps)
    return 1


# --- datamodule ----------------------------------------------------------------------------------------


class MovingDigitsDataModule(KineticsDataModule):
    """The Kinetics datamodule on a generated Moving Digits folder (made by ``prepare_data`` when missing).

    Generation parameters: ``num_train``/``num_val``/``num_test`` videos of ``num_frames`` frames at 30 fps,
    ``size`` pixels square, ``noise``, ``seed`` (see ``MovingDigitsParams``). The clip defaults (8 frames,
    stride 2 at 30 fps, no resize at ``crop_size == size``) suit small CPU models; 64-frame videos leave room
    for continual warm-ups (longer clips repeat the last frame). Under DDP, Lightning calls ``prepare_data`` on
    one process per node before ``setup``; outside a Trainer ``setup`` generates by itself.
    """

    def __init__(
        self,
        *,
        root: str | Path = "data",
        name: str = "moving_digits",
        num_train: int = 1200,
        num_val: int = 300,
        num_test: int = 300,
        num_frames: int = 64,
        size: int = 32,
        noise: float = 0.03,
        seed: int = 0,
        num_classes: int = len(MOTIONS),
        clip_length: int = 8,
        eval_clip_length: int | None = None,
        sampling_stride: int = 2,
        crop_size: int = 32,
        scale_jitter: float = 1.25,
        normalisation: str = "feichtenhofer",
        batch_size: int = 32,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        progress: bool = True,
        channels: int = 3,
        height: int | None = None,
        width: int | None = None,
    ) -> None:
        if num_classes != len(MOTIONS):
            raise ValueError(f"Moving Digits has {len(MOTIONS)} classes ({', '.join(MOTIONS)}), got {num_classes}")
        super().__init__(
            root=root,
            name=name,
            num_classes=num_classes,
            clip_length=clip_length,
            eval_clip_length=eval_clip_length,
            sampling_stride=sampling_stride,
            target_fps=30.0,
            crop_size=crop_size,
            scale_jitter=scale_jitter,
            normalisation=normalisation,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            channels=channels,
            height=height,
            width=width,
        )
        self.params = MovingDigitsParams(
            num_train=num_train,
            num_val=num_val,
            num_test=num_test,
            num_frames=num_frames,
            size=size,
            noise=noise,
            seed=seed,
        )
        self.progress = progress

    def video_frames(self) -> int:
        """Every generated video has ``num_frames`` frames at 30 fps, the clip frame rate."""
        return self.params.num_frames

    def prepare_data(self) -> None:
        ensure_moving_digits(self.dataset_dir, self.params, progress=self.progress, workers=self.num_workers)

    def setup(self, stage: str | None = None) -> None:
        if not is_generated(self.dataset_dir, self.params):
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                raise RuntimeError(f"{self.dataset_dir} is not generated: prepare_data should have run first")
            self.prepare_data()
        super().setup(stage)
