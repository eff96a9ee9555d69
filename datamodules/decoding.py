"""Video decoding with decord: the one module that imports it (decord has wheels for x86_64 only, so datamodules
that decode no video must not import this).

``read_video`` opens a file, resamples it to ``target_fps`` and decodes one clip with the sampling of
``datamodules.video``; a file decord cannot read raises ``VideoDecodeError`` naming it, which the datasets skip
and count (``datamodules.robust.SkippingDataset``).
"""

from __future__ import annotations

from pathlib import Path

import decord
import numpy as np
import torch
from torch import Tensor

from datamodules.video import VideoDecodeError, clip_indices, resample_indices

__all__ = ["read_video"]


def read_video(path: str | Path, frames_per_clip: int, stride: int, *, target_fps: float, random: bool) -> Tensor:
    """Decode one clip of ``path`` with decord: ``uint8 (frames_per_clip, H, W, 3)``.

    Raises ``VideoDecodeError`` (naming the file) when decord cannot open or decode it.
    """
    try:
        # one thread per reader: the DataLoader workers already decode in parallel
        reader = decord.VideoReader(str(path), num_threads=1)
        num_frames, fps = len(reader), reader.get_avg_fps()
    except (decord.DECORDError, RuntimeError, OSError) as error:
        raise VideoDecodeError(f"cannot open {path}: {error}") from error
    if num_frames < 1:
        raise VideoDecodeError(f"{path} has no frames")
    resampled = resample_indices(num_frames, fps, target_fps)
    indices = resampled[clip_indices(len(resampled), frames_per_clip, stride, random=random)]
    # decode each frame once even when the clamped clip repeats it
    unique, inverse = np.unique(indices, return_inverse=True)
    try:
        frames = reader.get_batch(unique.tolist()).asnumpy()
    except (decord.DECORDError, RuntimeError, OSError) as error:
        raise VideoDecodeError(f"cannot decode frames {unique.tolist()} of {path}: {error}") from error
    return torch.from_numpy(frames[inverse])
