"""An untrimmed Moving Digits stream: several actions in a row in one lossless mp4, with the true segments beside it.

``render_stream(path)`` writes ``num_segments`` Moving Digits clips (``datamodules.moving_digits.render_video``)
back to back, each a random motion (never the one before it) of a random digit lasting a random
``seconds[0]..seconds[1]`` seconds at 30 fps, as one lossless H.264 file (``encode_mp4``), and the segments to
``<path>.segments.json``::

    {"fps": 30, "num_frames": N, "classes": [...], "params": {...},
     "segments": [{"label": "up_left", "start_frame": 0, "end_frame": 75, "start_s": 0.0, "end_s": 2.5}, ...]}

(``end_frame`` exclusive). Each segment starts with a new digit, place and colours, so a boundary is a cut.
``classes`` is the class order of a model trained on Moving Digits: the Kinetics datamodule numbers the sorted
training labels. The segments file is written last, so a stream without it is incomplete and is made again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.moving_digits import MOTIONS, MovingDigitsParams, _digit_images, encode_mp4, render_video

__all__ = ["CLASSES", "ensure_stream", "read_segments", "render_stream", "segments_path"]

log = logging.getLogger(__name__)

#: Class index -> motion of a model trained on Moving Digits (``kinetics_classes``: sorted training labels)
CLASSES = tuple(sorted(MOTIONS))


def segments_path(video: str | Path) -> Path:
    """Where the true segments of ``video`` are kept: ``<video>.segments.json``."""
    video = Path(video)
    return video.with_name(f"{video.name}.segments.json")


def render_stream(
    path: str | Path,
    *,
    num_segments: int = 6,
    seconds: tuple[float, float] = (2.0, 3.0),
    params: MovingDigitsParams | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the stream to ``path`` and its segments to ``segments_path(path)``; returns the segments record.
    ``params``: the look of each segment (canvas size, speeds, noise, fps; default ``MovingDigitsParams()``)."""
    params = params or MovingDigitsParams()
    if num_segments < 1 or not 0 < seconds[0] <= seconds[1]:
        raise ValueError(f"need num_segments >= 1 and 0 < seconds[0] <= seconds[1], got {num_segments}, {seconds}")
    path = Path(path)
    rng = np.random.default_rng([seed, 7])  # 7: apart from the dataset's (seed, split) generators
    digits = _digit_images()
    clips, segments, start, previous = [], [], 0, None
    for _ in range(num_segments):
        motion = str(rng.choice([m for m in MOTIONS if m != previous]))
        frames = max(round(rng.uniform(*seconds) * params.fps), 1)
        clip_params = dataclasses.replace(params, num_frames=frames)
        clips.append(render_video(digits[rng.integers(len(digits))], motion, clip_params, rng))
        segments.append({
            "label": motion, "start_frame": start, "end_frame": start + frames,
            "start_s": start / params.fps, "end_s": (start + frames) / params.fps,
        })  # fmt: skip
        start, previous = start + frames, motion
    record = {
        "fps": params.fps,
        "num_frames": start,
        "classes": list(CLASSES),
        "params": _generation(num_segments, seconds, params, seed),
        "segments": segments,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    encode_mp4(tmp, np.concatenate(clips), params.fps)
    tmp.replace(path)
    segments_path(path).write_text(json.dumps(record, indent=1) + "\n")  # last: the stream is complete
    return record


def _generation(num_segments: int, seconds: tuple[float, float], params: MovingDigitsParams, seed: int) -> dict:
    return {"num_segments": num_segments, "seconds": list(seconds), "seed": seed, "video": params.to_json()}


def ensure_stream(path: str | Path, **kwargs: Any) -> bool:
    """``render_stream(path, **kwargs)`` unless ``path`` and its segments of these parameters exist; returns whether
    it rendered. A ``path`` without a segments file of ours is never overwritten."""
    path = Path(path)
    wanted = {"num_segments": 6, "seconds": (2.0, 3.0), "params": None, "seed": 0} | kwargs
    wanted["params"] = wanted["params"] or MovingDigitsParams()
    marker = segments_path(path)
    if path.exists():
        if not marker.exists():
            raise FileExistsError(f"{path} exists without {marker.name}, so it was not generated here; move it away "
                                  "or give another path")  # fmt: skip
        if read_segments(path)["params"] == _generation(**wanted):
            return False
    log.info(f"Rendering an untrimmed Moving Digits stream to {path}")
    render_stream(path, **wanted)
    return True


def read_segments(video: str | Path) -> dict[str, Any]:
    """The segments record beside ``video`` (see the module docstring); a malformed one is an error naming it."""
    path = segments_path(video)
    try:
        record = json.loads(path.read_text())
        for segment in record["segments"]:
            if not 0 <= segment["start_s"] < segment["end_s"] or not isinstance(segment["label"], str):
                raise ValueError(f"segment {segment} needs a label and 0 <= start_s < end_s")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not a segments file ({type(error).__name__}: {error}); it holds "
            '{"segments": [{"label": ..., "start_s": ..., "end_s": ...}, ...]}: fix or remove it'
        ) from error
    return record
