"""Writers of tiny datasets in the real on-disk formats, shared by the datamodule tests.

Frame ``i`` of every written video is a uniform grey of level ``level(i)``, so a decoded clip tells which frames
were read (``frame_ids``) even after lossy compression.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datamodules.moving_digits import encode_mp4

#: grey levels 8 apart survive H.264 and JPEG at high quality (errors of 1-2 levels)
STEP, OFFSET, MAX_FRAMES = 8, 6, 31


def level(i: int) -> int:
    return OFFSET + STEP * i


def grey_frames(num_frames: int, height: int = 24, width: int = 32) -> np.ndarray:
    """``uint8 (T, H, W, 3)``: frame ``i`` is uniformly ``level(i)``."""
    assert num_frames <= MAX_FRAMES
    return np.stack([np.full((height, width, 3), level(i), np.uint8) for i in range(num_frames)])


def frame_ids(frames: torch.Tensor | np.ndarray) -> list[int]:
    """The indices of the grey frames ``uint8 (T, H, W, 3)``."""
    means = torch.as_tensor(np.asarray(frames)).float().mean(dim=(1, 2, 3))
    return [round((m - OFFSET) / STEP) for m in means.tolist()]


def write_mp4(path: Path, num_frames: int, fps: int = 30, height: int = 24, width: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_mp4(path, grey_frames(num_frames, height, width), fps, crf=0)
    return path


def write_kinetics(
    root: Path,
    videos: dict[str, Sequence[tuple[str, str, int]]],
    *,
    name: str = "kinetics400",
    fps: int = 30,
    json_splits: bool = True,
    folder=lambda label: label,
) -> Path:
    """``<root>/<name>/data/<split>/<folder(label)>/<id>_000000_000010.mp4`` for each ``(id, label, num_frames)``
    of each split (``train``, ``validate``, ``test``), plus ``splits/<split>.json`` in the crawler format."""
    dataset_dir = root / name
    for split, entries in videos.items():
        annotations = {}
        for youtube_id, label, num_frames in entries:
            write_mp4(dataset_dir / "data" / split / folder(label) / f"{youtube_id}_000000_000010.mp4", num_frames, fps)
            annotations[youtube_id] = {
                "annotations": {"label": label, "segment": [0.0, 10.0]},
                "duration": 10.0,
                "subset": split,
                "url": f"https://www.youtube.com/watch?v={youtube_id}",
            }
        if json_splits:
            (dataset_dir / "splits").mkdir(parents=True, exist_ok=True)
            (dataset_dir / "splits" / f"{split}.json").write_text(json.dumps(annotations))
    return dataset_dir


def write_charades(
    root: Path,
    splits: dict[str, dict[str, list[list[int]]]],
    *,
    num_classes: int = 157,
    height: int = 24,
    width: int = 32,
) -> Path:
    """Frame folders ``data/Charades_v1_rgb/<vid>/<vid>-%06d.jpg`` and SlowFast frame lists ``splits/<split>.csv``
    from ``{split: {vid: [labels of frame 0, labels of frame 1, ...]}}``, plus ``classes.txt``."""
    dataset_dir = root / "charades"
    frames_dir = dataset_dir / "data" / "Charades_v1_rgb"
    (dataset_dir / "splits").mkdir(parents=True, exist_ok=True)
    for split, videos in splits.items():
        rows = ["original_vido_id video_id frame_id path labels"]
        for video_index, (vid, frame_labels) in enumerate(videos.items()):
            (frames_dir / vid).mkdir(parents=True, exist_ok=True)
            for i, (frame, labels) in enumerate(zip(grey_frames(len(frame_labels), height, width), frame_labels)):
                relative = f"{vid}/{vid}-{i + 1:06d}.jpg"
                if not (frames_dir / relative).exists():
                    Image.fromarray(frame).save(frames_dir / relative, quality=98)
                rows.append(f'{vid} {video_index} {i} {relative} "{",".join(map(str, labels))}"')
        (dataset_dir / "splits" / f"{split}.csv").write_text("\n".join(rows) + "\n")
    classes = "".join(f"c{i:03d} Class number {i}\n" for i in range(num_classes))
    (dataset_dir / "splits" / "classes.txt").write_text(classes)
    return dataset_dir
