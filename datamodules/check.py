"""Check a dataset before a long run: ``python -m datamodules.check --data kinetics400 --root data [--workers 8]``.

Builds every split as training would (so annotated files absent from disk, labels outside the class list and
files annotated twice are found as a run finds them), then decodes every sample once, in parallel, with a
progress bar: every frame of a video (not only a clip's), every frame file of a Charades video, every image.
Writes one CSV row per problem (``split, kind, file, detail``; ``--out``, default ``<root>/<data>_check.csv``)
and prints a summary per split. The kinds:

* ``missing``: annotated, absent from disk;      ``unreadable``: a file (or frame) that does not decode;
* ``short``: a video with fewer frames (at the clip frame rate) than ``--min-frames`` (default: what one
  evaluation clip of the dataset's default config spans), whose clips repeat their last frame;
* ``unknown_label``: a label outside the class list;   ``duplicate``: one file annotated (or filed) twice.

Exits with status 1 when anything is unreadable, missing or mislabelled (short videos only warn), so a script can
stop before training. A Kinetics download with 1 % broken files is found in minutes instead of mid-run.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import multiprocessing as mp
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from datamodules.robust import DecodeError, SkippingDataset
from datamodules.video import resample_indices

__all__ = ["DATASETS", "Problem", "check", "main"]

#: kinds that make the check fail (``short`` only warns: such clips are valid, with repeated frames)
ERRORS = ("missing", "unreadable", "unknown_label", "duplicate")
#: frames decoded per call while reading a whole video (bounded memory for long videos)
CHUNK = 32


@dataclass(frozen=True)
class Problem:
    split: str
    kind: str
    file: str
    detail: str = ""


def _kinetics(name: str) -> Callable[[Path], Any]:
    def build(root: Path) -> Any:
        from datamodules.kinetics import KineticsDataModule  # imports decord: only for video datasets

        # num_classes=None: the check reports the class count found instead of refusing another one
        return KineticsDataModule(root=root, name=name, num_classes=None, num_workers=0)

    return build


def _moving_digits(root: Path) -> Any:
    """The Kinetics loader on the folder as it is (never generated), with Moving Digits' clip defaults."""
    from datamodules.kinetics import KineticsDataModule
    from datamodules.moving_digits import MovingDigitsDataModule

    defaults = inspect.signature(MovingDigitsDataModule).parameters
    clip = {key: defaults[key].default for key in ("name", "clip_length", "sampling_stride", "crop_size")}
    return KineticsDataModule(root=root, num_classes=None, num_workers=0, **clip)


def _charades(root: Path) -> Any:
    from datamodules.charades import CharadesDataModule, read_classes

    classes = read_classes(root / "charades" / "splits" / "classes.txt")
    return CharadesDataModule(root=root, num_classes=len(classes), num_workers=0)


def _images(module: str, cls: str) -> Callable[[Path], Any]:
    def build(root: Path) -> Any:
        import importlib

        return getattr(importlib.import_module(module), cls)(root=root, num_workers=0)

    return build


#: ``--data`` names and how each builds its datamodule from ``--root`` (the folder holding ``<name>/``)
DATASETS: dict[str, Callable[[Path], Any]] = {
    "kinetics400": _kinetics("kinetics400"),
    "kinetics600": _kinetics("kinetics600"),
    "kinetics700": _kinetics("kinetics700"),
    "moving_digits": _moving_digits,
    "charades": _charades,
    "flowers102": _images("datamodules.flowers", "Flowers102DataModule"),
    "stanford_cars": _images("datamodules.cars", "StanfordCarsDataModule"),
    "catsdogs": _images("datamodules.catsdogs", "CatsDogsDataModule"),
}

#: the lists of files a ``SkippingDataset`` dropped when its split was built; each is a problem kind
LISTS = ("missing", "unreadable", "unknown_label", "duplicate")


# --- decoding every sample once --------------------------------------------------------------------------


def _video_frames(path: str, target_fps: float) -> int:
    """Frames of the video at ``target_fps`` after decoding every frame; ``DecodeError`` names what failed."""
    import decord

    try:
        reader = decord.VideoReader(path, num_threads=1)
        num_frames, fps = len(reader), reader.get_avg_fps()
        for start in range(0, num_frames, CHUNK):
            reader.get_batch(list(range(start, min(start + CHUNK, num_frames)))).asnumpy()
    except (decord.DECORDError, RuntimeError, OSError) as error:
        raise DecodeError(f"{error}".splitlines()[0] if str(error) else type(error).__name__) from error
    if num_frames < 1:
        raise DecodeError("no frames")
    return len(resample_indices(num_frames, fps, target_fps))


def _charades_frames(dataset: Any, index: int) -> int:
    """Frames of Charades video ``index`` after decoding each frame file; ``DecodeError`` names the first bad one."""
    frames = dataset.frames
    video = dataset.videos[index]
    begin, end = frames.frame_offsets[video], frames.frame_offsets[video + 1]
    for path in frames.paths[begin:end]:
        try:
            with Image.open(dataset.frames_dir / path.decode()) as image:
                image.load()
        except (OSError, ValueError) as error:
            raise DecodeError(f"frame {path.decode()}: {error}") from error
    return int(end - begin)


def probe(dataset: Any, index: int) -> int | None:
    """Decode sample ``index`` of ``dataset`` whole: its frames at the clip frame rate (None: an image)."""
    if hasattr(dataset, "target_fps") and hasattr(dataset, "paths"):  # Kinetics layout: mp4 files
        return _video_frames(str(dataset.paths[index]), dataset.target_fps)
    if hasattr(dataset, "frames_dir"):  # Charades: frame folders
        return _charades_frames(dataset, index)
    dataset.load(index)  # images: the loader's own decoding and transform
    return None


_DATASET: Any = None  # the dataset a pool worker probes (inherited at fork, never pickled)


def _probe_one(index: int) -> tuple[int, int | None, str | None]:
    try:
        return index, probe(_DATASET, index), None
    except DecodeError as error:
        return index, None, str(error)


def _probe_all(dataset: Any, workers: int, desc: str) -> Iterator[tuple[int, int | None, str | None]]:
    global _DATASET
    _DATASET = dataset
    indices = range(len(dataset))
    if workers <= 1:
        yield from tqdm(map(_probe_one, indices), total=len(dataset), desc=desc, unit="file")
        return
    # fork: the workers inherit the dataset (and its numpy arrays) instead of unpickling it once per task
    with mp.get_context("fork").Pool(workers) as pool:
        results = pool.imap_unordered(_probe_one, indices, chunksize=max(1, min(64, len(dataset) // (workers * 8))))
        yield from tqdm(results, total=len(dataset), desc=desc, unit="file")


def _clip_span(dataset: Any) -> int | None:
    """Frames one evaluation clip spans (None: not a video dataset)."""
    frames, stride = getattr(dataset, "frames_per_clip", None), getattr(dataset, "sampling_stride", None)
    return None if frames is None or stride is None else (frames - 1) * stride + 1


# --- the check -------------------------------------------------------------------------------------------


def check_split(split: str, dataset: Any, workers: int, min_frames: int | None = None) -> list[Problem]:
    """The problems of one built split: what its lists hold, then what decoding every sample finds. A video is
    short below ``min_frames`` (default: the frames one evaluation clip of the datamodule's defaults spans)."""
    problems = [Problem(split, kind, name) for kind in LISTS for name in getattr(dataset, kind, ())]
    if not isinstance(dataset, SkippingDataset):
        return problems  # held in memory (CIFAR): nothing to decode
    span = min_frames or _clip_span(dataset)
    for index, frames, error in _probe_all(dataset, workers, f"{split}"):
        if error is not None:
            problems.append(Problem(split, "unreadable", dataset.describe(index), error))
        elif span is not None and frames is not None and frames < span:
            detail = f"{frames} frames at the clip frame rate, fewer than {span}"
            problems.append(Problem(split, "short", dataset.describe(index), detail))
    return problems


def check(
    data: str,
    root: Path,
    *,
    workers: int,
    splits: Sequence[str] | None = None,
    min_frames: int | None = None,
) -> dict[str, list[Problem]]:
    """Build ``data`` under ``root`` and check each split (default: every split it has); problems per split. A
    split that cannot be built at all (no annotation file, no video of it) is one ``missing`` problem."""
    if data not in DATASETS:
        raise ValueError(f"--data must be one of {sorted(DATASETS)}, got {data!r}")
    datamodule = DATASETS[data](Path(root))
    try:
        datamodule.setup("test")  # the class list first (from the training split), then the test split
    except FileNotFoundError:
        if not getattr(datamodule, "classes", True):
            raise  # no class list: nothing can be checked
    results: dict[str, list[Problem]] = {}
    for split in splits or _splits(datamodule):
        try:
            dataset = _dataset(datamodule, split)
        except FileNotFoundError as error:
            results[split] = [Problem(split, "missing", f"the {split} split", str(error))]
            continue
        results[split] = check_split(split, dataset, workers, min_frames)
    return results


def _splits(datamodule: Any) -> list[str]:
    return ["train", "test"] if hasattr(datamodule, "dataset") else ["train", "val", "test"]


def _dataset(datamodule: Any, split: str) -> Any:
    if hasattr(datamodule, "dataset"):  # the image datamodules build their splits on demand
        return datamodule.dataset(split)
    if split not in datamodule.datasets:
        datamodule.datasets[split] = datamodule._build(split)
    return datamodule.datasets[split]


def write_report(results: dict[str, list[Problem]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "kind", "file", "detail"])
        writer.writerows([p.split, p.kind, p.file, p.detail] for problems in results.values() for p in problems)
    return path


def summary(results: dict[str, list[Problem]], report: Path) -> str:
    """One line per split: how many problems of each kind (or none)."""
    total = sum(map(len, results.values()))
    lines = [f"Data check: {total} problems (report: {report})"]
    for split, problems in results.items():
        counts = Counter(p.kind for p in problems)
        found = [f"{counts[kind]} {kind}" for kind in (*ERRORS, "short") if counts[kind]]
        lines.append(f"  {split}: {', '.join(found) if found else 'no problem found'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datamodules.check", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, choices=sorted(DATASETS))
    parser.add_argument("--root", required=True, type=Path, help="the folder holding <data>/ (DATA_DIR)")
    parser.add_argument("--workers", type=int, default=min(8, mp.cpu_count()), help="decoding processes")
    parser.add_argument("--splits", nargs="*", help="default: every split")
    parser.add_argument(
        "--min-frames",
        type=int,
        help="a video with fewer frames (at the clip frame rate) is short; default: the span of one evaluation "
        "clip of the dataset's default config (Kinetics: 13 frames x 6 = 73, Charades: 8 x 8 = 57, Moving Digits: "
        "8 x 2 = 15)",
    )
    parser.add_argument("--out", type=Path, help="the CSV report (default <root>/<data>_check.csv)")
    args = parser.parse_args(argv)
    results = check(args.data, args.root, workers=args.workers, splits=args.splits, min_frames=args.min_frames)
    report = write_report(results, args.out or args.root / f"{args.data}_check.csv")
    print(summary(results, report))
    return 1 if any(p.kind in ERRORS for problems in results.values() for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
