"""Writers of tiny datasets in their real on-disk formats, shared by the datamodule tests: videos and frame folders
(Kinetics, Charades), CIFAR pickles, MATLAB annotation files and jpgs (Flowers-102, Stanford Cars, Cats & Dogs).
Each returns what it wrote, so tests can compare.

Frame ``i`` of every written video is a uniform grey of level ``level(i)``, so a decoded clip tells which frames
were read (``frame_ids``) even after lossy compression. Each written image is a uniform ``colour(id)``, so a decoded
image tells which file it came from.

Importing this module needs no video decoder (the image tests run where decord has no wheel): the mp4 encoder is
imported by ``write_mp4`` only.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image

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
    from datamodules.moving_digits import encode_mp4  # imports decord (via Kinetics): only the video tests need it

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


# --- images ---------------------------------------------------------------------------------------------

#: 3 x 8 bits of "colour" per image id, so a decoded uniform image tells which file it came from
COLOUR_STEP = 40


def colour(i: int) -> tuple[int, int, int]:
    """A distinct, JPEG-robust RGB colour per small integer (levels 40 apart)."""
    return (20 + COLOUR_STEP * (i % 6), 20 + COLOUR_STEP * (i // 6 % 6), 20 + COLOUR_STEP * (i // 36 % 6))


def write_jpg(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30), mode: str = "RGB") -> Path:
    """A uniform image (``size`` = width, height) as a high-quality jpg; ``mode="L"`` writes a grey one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, rgb)
    (image.convert("L") if mode == "L" else image).save(path, format="JPEG", quality=98)
    return path


# --- CIFAR -------------------------------------------------------------------------------------------------


def _cifar_pickle(path: Path, entries: dict, bytes_keys: bool) -> None:
    if bytes_keys:  # what a Python 2 pickle loaded with encoding="bytes" and saved again looks like
        entries = {k.encode(): ([n.encode() for n in v] if k.endswith("names") else v) for k, v in entries.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entries, f, protocol=2)


def _planes(images: np.ndarray) -> np.ndarray:
    """``uint8 (N, 32, 32, 3)`` → the official rows ``(N, 3072)``: red plane, green plane, blue plane."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar10(
    root: Path, per_batch: int = 4, num_test: int = 6, *, seed: int = 0, bytes_keys: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``cifar-10-batches-py/`` with 5 training batches of ``per_batch`` random images, a test batch and
    ``batches.meta``; returns ``{split: (images (N, 32, 32, 3), labels)}`` in file order."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _cifar_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch}, bytes_keys)
    written: dict[str, list] = {"train": [], "test": []}
    files = [(f"data_batch_{i}", "train", per_batch) for i in range(1, 6)] + [("test_batch", "test", num_test)]
    for filename, split, count in files:
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, count).tolist()
        batch = {"batch_label": filename, "labels": labels, "data": _planes(images), "filenames": ["x.png"] * count}
        _cifar_pickle(folder / filename, batch, bytes_keys)
        written[split].append((images, np.array(labels)))
    return {s: (np.concatenate([i for i, _ in b]), np.concatenate([lab for _, lab in b])) for s, b in written.items()}


def write_cifar100(
    root: Path, num_train: int = 10, num_test: int = 5, *, seed: int = 1, bytes_keys: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``cifar-100-python/{train,test,meta}``; fine labels 0..99 (returned) and coarse labels that differ."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    _cifar_pickle(folder / "meta", meta, bytes_keys)
    written = {}
    for split, count in (("train", num_train), ("test", num_test)):
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(20, 100, count)
        batch = {
            "filenames": ["x.png"] * count,
            "batch_label": split,
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),  # 4..19: never equal to the fine label 20..99
            "data": _planes(images),
        }
        _cifar_pickle(folder / split, batch, bytes_keys)
        written[split] = (images, fine)
    return written


# --- Flowers-102 -------------------------------------------------------------------------------------------


def write_flowers(
    root: Path, labels: Sequence[int], trnid: Sequence[int], valid: Sequence[int], tstid: Sequence[int]
) -> Path:
    """``flowers-102/`` with one uniform jpg per entry of ``labels`` (1-based classes; image ``i`` has
    ``colour(i)`` and a size that varies), ``imagelabels.mat`` and ``setid.mat`` as the official files."""
    folder = root / "flowers-102"
    for i in range(1, len(labels) + 1):
        write_jpg(folder / "jpg" / f"image_{i:05d}.jpg", colour(i), size=(30 + 4 * (i % 3), 26 + 3 * (i % 4)))
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    ids = {k: np.array([v], dtype=np.uint16) for k, v in (("trnid", trnid), ("valid", valid), ("tstid", tstid))}
    scipy.io.savemat(folder / "setid.mat", ids)
    return folder


# --- Stanford Cars -----------------------------------------------------------------------------------------


def _annotations(entries: Sequence[tuple[str, int]]) -> np.ndarray:
    """A MATLAB struct array like the devkit's: bbox_x1, bbox_y1, bbox_x2, bbox_y2, class (1-based), fname."""
    fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    records = np.zeros((1, len(entries)), dtype=fields)
    for j, (fname, cls) in enumerate(entries):
        records[0, j] = (np.uint8(1), np.uint8(2), np.uint16(30), np.uint16(20), np.uint8(cls), fname)
    return records


def write_cars(
    root: Path,
    train: Sequence[tuple[str, int]],
    test: Sequence[tuple[str, int]],
    num_classes: int = 196,
) -> Path:
    """``stanford_cars/`` in torchvision's layout: jpgs (image ``j`` of a split has ``colour(j)``), the devkit's
    ``cars_train_annos.mat`` and ``cars_meta.mat``, and ``cars_test_annos_withlabels.mat``."""
    folder = root / "stanford_cars"
    for split, entries in (("cars_train", train), ("cars_test", test)):
        for j, (fname, _) in enumerate(entries):
            write_jpg(folder / split / fname, colour(j), size=(48, 28))
    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "devkit" / "cars_train_annos.mat", {"annotations": _annotations(train)})
    scipy.io.savemat(folder / "cars_test_annos_withlabels.mat", {"annotations": _annotations(test)})
    names = np.empty((1, num_classes), dtype=object)
    names[0, :] = [f"Make Model {i} 2012" for i in range(num_classes)]
    scipy.io.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": names})
    return folder


# --- Cats & Dogs -------------------------------------------------------------------------------------------


def write_pet_images(root: Path, num_cats: int, num_dogs: int) -> Path:
    """``catsanddogs/PetImages/{Cat,Dog}/<i>.jpg``: uniform RGB jpgs (``colour(i)``), plus what the real archive
    holds besides: ``Thumbs.db`` in both folders and the two unreadable files the published code deleted
    (``Cat/666.jpg`` empty, ``Dog/11702.jpg`` garbage). Returns the PetImages folder."""
    images = root / "catsanddogs" / "PetImages"
    for name, count in (("Cat", num_cats), ("Dog", num_dogs)):
        for i in range(count):
            write_jpg(images / name / f"{i}.jpg", colour(i))
        (images / name / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 not an image")
    (images / "Cat" / "666.jpg").write_bytes(b"")
    (images / "Dog" / "11702.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return images


def write_rgba_as_jpg_name(path: Path, rgba: tuple[int, int, int, int]) -> Path:
    """An RGBA PNG stored under a .jpg name, as some PetImages files are (PIL reads by content)."""
    Image.new("RGBA", (36, 28), rgba).save(path, format="PNG")
    return path


def write_truncated_jpg(path: Path) -> Path:
    """A jpg whose header is intact but whose data stops halfway: PIL opens it, decoding fails."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path
