"""A video stream for online inference: the frames of a video file or of a folder of frame images, one at a time,
played at a model's frame rate and transformed into its step input.

``StreamSource(path, target_fps=..., crop_size=..., normalisation=...)`` iterates ``float32 (C, S, S)`` steps. Videos
decode with decord in chunks of ``chunk`` frames (never the whole file at once); a folder's ``*.jpg``/``*.png``
files (sorted by name) are read one chunk at a time too. The stream is resampled to ``target_fps`` with the same
index arithmetic as the clip datasets (``datamodules.video.resample_indices``: a lower rate drops frames, a higher
one repeats them) from the container's frame rate, or from ``fps`` for a folder (its frames carry no timestamps).
Each frame is transformed like an evaluation clip (``datamodules.video.VideoTransform``: short side scaled to
``crop_size``, centre crop, mean/std of ``normalisation``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import decord
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from datamodules.video import VideoDecodeError, VideoTransform, resample_indices

__all__ = ["FRAME_SUFFIXES", "StreamSource", "frame_files"]

log = logging.getLogger(__name__)

#: The image files a frame folder may hold (lower-case suffixes; the stream is their name order)
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def frame_files(folder: Path) -> list[Path]:
    """The frame images of ``folder`` sorted by name; a folder without any is an error naming it."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"{folder} holds no frame images ({', '.join(FRAME_SUFFIXES)}): give a video file or a folder of "
            "frames named in playing order (e.g. 000001.jpg)"
        )
    return files


class StreamSource:
    """The steps of ``path`` (a video file or a folder of frames) at ``target_fps``: see the module docstring.

    ``len()`` is the number of steps, ``duration_s`` how long the stream plays, ``source_fps`` the rate it was
    recorded at and ``source_frames`` its frame count.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        target_fps: float,
        crop_size: int,
        normalisation: str = "feichtenhofer",
        fps: float | None = None,
        chunk: int = 16,
    ) -> None:
        if not target_fps > 0 or chunk < 1:
            raise ValueError(f"target_fps and chunk must be positive, got {target_fps} and {chunk}")
        self.path = Path(path)
        self.target_fps = float(target_fps)
        self.chunk = chunk
        self.transform = VideoTransform(crop_size, train=False, normalisation=normalisation)
        if not self.path.exists():
            raise FileNotFoundError(f"video {self.path} does not exist: give a video file or a folder of frames")
        if self.path.is_dir():
            self._files: list[Path] | None = frame_files(self.path)
            self._reader = None
            self.source_frames = len(self._files)
            if fps is None:
                log.info(f"{self.path}: frames taken to be at the model's {self.target_fps:g} fps (set fps= if not)")
            self.source_fps = float(fps or self.target_fps)
        else:
            self._files = None
            self._reader = _open(self.path)
            self.source_frames = len(self._reader)
            self.source_fps = float(fps or self._reader.get_avg_fps())
        if not self.source_fps > 0:
            raise ValueError(f"{self.path}: the frame rate must be positive, got fps={self.source_fps}")
        self.indices = resample_indices(self.source_frames, self.source_fps, self.target_fps)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def duration_s(self) -> float:
        """How long the stream plays at ``target_fps`` (what a real-time consumer has to keep up with)."""
        return len(self) / self.target_fps

    def __iter__(self) -> Iterator[Tensor]:
        for start in range(0, len(self.indices), self.chunk):
            indices = self.indices[start : start + self.chunk]
            # decode each source frame once even when resampling repeats it
            unique, inverse = np.unique(indices, return_inverse=True)
            steps = self.transform(self._decode(unique)[inverse])  # (C, T, S, S)
            yield from steps.unbind(1)

    def _decode(self, indices: np.ndarray) -> Tensor:
        """``uint8 (T, H, W, 3)`` source frames ``indices``."""
        if self._files is not None:
            images = [_read_image(self._files[i]) for i in indices]
            for i, image in zip(indices, images, strict=True):
                if image.shape != images[0].shape:  # one scale and crop per chunk, as for a clip
                    raise VideoDecodeError(
                        f"frame {self._files[i]} is {image.shape[1]}x{image.shape[0]} but "
                        f"{self._files[indices[0]].name} is {images[0].shape[1]}x{images[0].shape[0]}: "
                        "the frames of a stream must have one size"
                    )
            return torch.from_numpy(np.stack(images))
        try:
            return torch.from_numpy(self._reader.get_batch(indices.tolist()).asnumpy())
        except (decord.DECORDError, RuntimeError, OSError) as error:
            raise VideoDecodeError(f"cannot decode frames {indices.tolist()} of {self.path}: {error}") from error


def _open(path: Path) -> decord.VideoReader:
    try:
        reader = decord.VideoReader(str(path), num_threads=1)
    except (decord.DECORDError, RuntimeError, OSError) as error:
        raise VideoDecodeError(
            f"cannot open video {path} ({error}); give a video that decord/ffmpeg reads (mp4, avi, webm...) "
            "or a folder of frame images"
        ) from error
    if len(reader) < 1:
        raise VideoDecodeError(f"video {path} has no frames: give another file")
    return reader


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise VideoDecodeError(f"cannot read frame {path} ({error}): replace or remove it") from error
