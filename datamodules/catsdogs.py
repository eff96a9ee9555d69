"""Cats & Dogs: Microsoft's Kaggle PetImages with the split of the published SPA code
(paper/structured-pruning-adapters.md).

On-disk layout (the extracted ``kagglecatsanddogs_5340.zip``)::

    <root>/catsanddogs/PetImages/Cat/0.jpg ... 12499.jpg
    <root>/catsanddogs/PetImages/Dog/0.jpg ... 12499.jpg

Classes: ``Cat`` = 0, ``Dog`` = 1. ``Thumbs.db``, ``Dog/11702.jpg`` and ``Cat/666.jpg`` are left out (the
published code deleted them: PIL cannot read the two images), as are hidden files. The rest (24,998 files) is
shuffled and split exactly as the published code did with datasetops: ``.shuffle(seed=42)`` (Python's
``random.seed(42)``, then ``random.shuffle``), then ``.split([0.7, 0.3])``, which shuffles once more with the
same generator, puts the first ``round(0.7 · N)`` in training and the rest in test. Both parts are truncated to
the sizes of Yeom et al.'s KMLC-Challenge-1 subset, 8,005 training and 2,023 test images.

One difference: the published code listed the files in directory order (unsorted ``Path.glob``), which depends on
the file system, so its split cannot be recreated on another machine. Here the files are sorted (class, then
name) first, so the split is the same everywhere. Unreadable images within the kept parts are skipped: each
part is filled with its first 8,005 / 2,023 images whose header PIL can read (one warning lists the others, and
they count in ``num_skipped``); an image that fails to decode later is replaced while loading and counted too.
Grey images are repeated to 3 channels and RGBA ones lose alpha (``images.read_rgb``). ImageNet normalisation.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from datamodules.images import ImageDataModule, ImageFileDataset
from datamodules.robust import require_path, warn_skipped

__all__ = [
    "CATSDOGS_URL",
    "CLASSES",
    "DROPPED",
    "CatsDogsDataModule",
    "catsdogs_split",
    "list_pet_images",
    "readable_prefix",
]

CATSDOGS_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)
FOLDER = "catsanddogs/PetImages"
CLASSES = ("Cat", "Dog")
#: left out as the published code deleted them: Windows thumbnail caches and the two images PIL cannot read
DROPPED = ("Thumbs.db", "Dog/11702.jpg", "Cat/666.jpg")


def list_pet_images(images_dir: str | Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(path, label)`` of every file under ``<images_dir>/{Cat,Dog}`` sorted by class and name, without hidden
    files and ``DROPPED``; also the ``class/name`` of the files left out that way (for reporting)."""
    images_dir = Path(images_dir)
    samples, dropped = [], []
    for label, name in enumerate(CLASSES):
        folder = images_dir / name
        require_path(folder, f"the {name} images {folder}/*.jpg", f"Download {CATSDOGS_URL} and extract it.")
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            # datasetops listed with glob("[!._]*"): no hidden or underscore files
            if not entry.is_file() or entry.name.startswith((".", "_")):
                continue
            if entry.name in DROPPED or f"{name}/{entry.name}" in DROPPED:
                dropped.append(f"{name}/{entry.name}")
                continue
            samples.append((Path(entry.path), label))
    return samples, dropped


def catsdogs_split(
    samples: Sequence[object], *, seed: int = 42, train_fraction: float = 0.7
) -> tuple[list[object], list[object]]:
    """The published split: datasetops' ``.shuffle(seed)`` then ``.split([f, 1 - f])`` on ``samples``.

    ``shuffle`` seeds Python's generator and permutes; ``split`` (no seed of its own) permutes the shuffled
    list once more with the same generator and cuts it after ``round(f · N)``.
    """
    rng = random.Random(seed)  # the same Mersenne Twister stream as random.seed(seed) on the global one
    first = list(range(len(samples)))
    rng.shuffle(first)
    shuffled = [samples[i] for i in first]
    second = list(range(len(shuffled)))
    rng.shuffle(second)
    cut = round(train_fraction * len(shuffled))
    return [shuffled[i] for i in second[:cut]], [shuffled[i] for i in second[cut:]]


def _header_error(path: Path) -> str | None:
    """Why PIL cannot open ``path`` (format and size from the header; the pixels are not decoded), or None."""
    try:
        with Image.open(path) as image:
            if image.width < 1 or image.height < 1:
                return "empty image"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return str(error) or type(error).__name__
    return None


def readable_prefix(
    samples: Sequence[tuple[Path, int]], limit: int | None, *, check: bool = True
) -> tuple[list[tuple[Path, int]], list[str]]:
    """The first ``limit`` samples (all with ``None``) whose image header PIL reads, and the unreadable ones met
    on the way. ``check=False`` takes the first ``limit`` without opening them."""
    if not check:
        return list(samples[:limit]), []
    kept, unreadable = [], []
    for path, label in samples:
        if limit is not None and len(kept) == limit:
            break
        if _header_error(path) is None:
            kept.append((path, label))
        else:
            unreadable.append(f"{path.parent.name}/{path.name}")
    return kept, unreadable


class CatsDogsDataModule(ImageDataModule):
    """Cats & Dogs: 2 classes, 8,005 training / 2,023 test images of ``<root>/catsanddogs/PetImages``.

    The split is the published one on the sorted file list (module docstring): ``split_seed`` 42,
    ``train_fraction`` 0.7, then truncated to ``max_train`` / ``max_test`` (None: keep the whole part).
    ``check_images`` opens each kept image's header once when the split is built (about 10,000 small reads) and
    replaces unreadable ones by the next readable images. ImageNet normalisation; HEAD transforms under both
    variants (the arXiv-era code used the same ones at 224). Defaults: 224 pixels, batch size 12
    (paper/structured-pruning-adapters.md, ResNet-50 at HEAD; Table 1 used 4).
    """

    dataset_name = "Cats & Dogs"
    normalisation = "imagenet"

    def __init__(
        self,
        *,
        root: str | Path = "data",
        num_classes: int = 2,
        batch_size: int = 12,
        num_workers: int | None = None,
        image_size: int = 224,
        transforms: str = "head",
        drop_last_eval: bool = False,
        pin_memory: bool | None = None,
        seed: int | None = None,
        split_seed: int = 42,
        train_fraction: float = 0.7,
        max_train: int | None = 8005,
        max_test: int | None = 2023,
        check_images: bool = True,
    ) -> None:
        super().__init__(
            root=root,
            num_classes=num_classes,
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            transforms=transforms,
            drop_last_eval=drop_last_eval,
            pin_memory=pin_memory,
            seed=seed,
        )
        self._check_num_classes(len(CLASSES), f"{FOLDER}/{{{','.join(CLASSES)}}}")
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        self.save_hyperparameters(logger=False)
        self.images_dir = self.root / FOLDER
        self.classes = list(CLASSES)
        self.dropped: list[str] = []
        self._parts: dict[str, list[tuple[Path, int]]] | None = None

    def _split(self) -> dict[str, list[tuple[Path, int]]]:
        if self._parts is None:
            require_path(self.images_dir, "PetImages/Cat/*.jpg and PetImages/Dog/*.jpg", f"Download {CATSDOGS_URL}.")
            samples, self.dropped = list_pet_images(self.images_dir)
            train, test = catsdogs_split(
                samples, seed=self.hparams.split_seed, train_fraction=self.hparams.train_fraction
            )
            self._parts = {"train": train, "test": test}
        return self._parts

    def _build(self, split: str) -> ImageFileDataset:
        h, candidates = self.hparams, self._split()[split]
        samples, unreadable = readable_prefix(
            candidates, h.max_train if split == "train" else h.max_test, check=h.check_images
        )
        total, what = len(samples) + len(unreadable), f"{self.images_dir} {split}"
        warn_skipped(unreadable, total, what, items="images", reason="cannot be read")
        if not samples:
            raise FileNotFoundError(f"No readable {split} images under {self.images_dir}")
        train = split == "train"
        return ImageFileDataset(
            [p for p, _ in samples],
            [label for _, label in samples],
            self.transform(train=train),
            train=train,
            unreadable=unreadable,
        )
