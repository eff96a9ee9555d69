"""What the image classification datamodules of the SPA study share (paper/structured-pruning-adapters.md).

* **Transforms**, in the two variants of the published experiments code (``transforms="head"`` or ``"arxiv"``):
  HEAD trains with ``RandomResizedCrop(S)`` (scale 0.08-1) + horizontal flip and tests with
  ``Resize(int(256/224 * S))`` + ``CenterCrop(S)``, except CIFAR-10, whose test transform has a second
  ``Resize(S)`` where the others crop (a quirk kept as published). The arXiv-era code (commit f93c0fe, behind
  Table 1) trained CIFAR-10 with ``RandomCrop(32, padding=4)`` + flip and tested on the raw 32 x 32 images; the
  224-pixel datasets used the HEAD transforms then too. Images are decoded with PIL and transformed exactly as the
  published torchvision pipelines do (PIL resizing), then normalised with the dataset's statistics
  (``NORMALISATIONS``): the CIFAR statistics for CIFAR-10/100 and Stanford Cars, ImageNet's for the others.
* **Splits**: ``train`` and ``test``. There is no validation split: the published code monitored the test set,
  so ``val_dataloader`` returns the test loader (say so when reporting "validation" numbers).
* **Loaders**: training is shuffled with ``drop_last=True``; evaluation keeps the last, ragged batch unless
  ``drop_last_eval=True``, which reproduces the published loaders (CIFAR-10 at batch size 64 then evaluates
  156 · 64 = 9,984 of its 10,000 test images). ``rank_dataloader`` is the training split with the training
  augmentations, for the pruning criterion pass (the published scoring pass ran on the training loader).
* **Unreadable files** are skipped, logged and counted by the layer every datamodule shares
  (``datamodules.robust``): an image that fails to decode while loading is replaced by another one (training: a
  random one; evaluation: the next one) and counted in ``num_skipped``; annotated images absent from disk are
  dropped when the split is built, with one warning. Nothing here imports a video decoder: decord has wheels for
  x86_64 only, and images need none.

Datamodules never import ``modules/``.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules.robust import (
    NORMALISATIONS,
    README,
    DecodeError,
    SkippingDataset,
    SkippingLoader,
    normalisation_stats,
    skip_counts,
    warn_skipped,
)

__all__ = [
    "EVAL_RESIZE_RATIO",
    "NORMALISATIONS",  # datamodules.robust's table, re-exported: the names image_transform accepts
    "RECIPES",
    "TRANSFORM_VARIANTS",
    "ArrayImageDataset",
    "ImageDataModule",
    "ImageDecodeError",
    "ImageFileDataset",
    "default_num_workers",
    "image_transform",
    "listed_files_dataset",
    "read_rgb",
]

TRANSFORM_VARIANTS = ("head", "arxiv")
#: How the transforms of a split are made (see ``image_transform``).
RECIPES = ("crop", "crop_resize_eval", "pad_crop")
#: Test images are resized to ``int(256 / 224 * S)`` before the centre crop (the ImageNet 256 → 224 habit).
EVAL_RESIZE_RATIO = 256 / 224


class ImageDecodeError(DecodeError):
    """An image file could not be read. ``ImageFileDataset`` skips and counts these; other errors propagate."""


def default_num_workers() -> int:
    """``min(4, CPUs available to this process)``, as the published loaders (paper/structured-pruning-adapters.md)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, cpus)


def read_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` with PIL as an RGB image; raises ``ImageDecodeError`` naming the file when it cannot.

    Grey images get their channel repeated three times and RGBA images lose the alpha channel, as the published
    Cats & Dogs loader did. Other modes (palette, CMYK) are converted by PIL; the published code fed those to
    ``ToTensor`` unconverted (palette indices as grey, CMYK cut to C, M, Y).
    """
    try:
        with Image.open(path) as image:
            image.load()
            # convert/copy inside the block: closing the file frees the decoded data of ``image``
            return image.copy() if image.mode == "RGB" else image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"cannot read {path}: {error}") from error


# --- transforms ------------------------------------------------------------------------------------------


def image_transform(
    *,
    train: bool,
    image_size: int,
    normalisation: str,
    recipe: str = "crop",
    native_size: int | None = None,
) -> Callable[[Image.Image], Tensor]:
    """A PIL RGB image → ``float32 (3, S, S)`` normalised tensor, as the published torchvision pipelines.

    ``recipe`` (paper/structured-pruning-adapters.md):

    * ``crop`` (HEAD, every dataset but CIFAR-10): train ``RandomResizedCrop(S)`` + ``RandomHorizontalFlip``;
      test ``Resize(int(256/224·S))`` + ``CenterCrop(S)``;
    * ``crop_resize_eval`` (HEAD CIFAR-10): the same, but the test transform is ``Resize(int(256/224·S))`` +
      ``Resize(S)``, the published quirk (at S = 32: resized to 36, then back to 32: a slight blur);
    * ``pad_crop`` (arXiv-era CIFAR-10, f93c0fe): train ``RandomCrop(S, padding=4)`` + flip; test nothing but the
      normalisation. At ``image_size != native_size`` the images are first resized to S and the padding is
      ``round(S / 8)``: an extension, the published code had S = 32 only.
    """
    mean, std = normalisation_stats(normalisation)
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    steps = _train_steps(image_size, recipe, native_size) if train else _eval_steps(image_size, recipe, native_size)
    # PILToTensor + ToDtype(scale) = ToTensor of the published code: uint8 → float in [0, 1]
    finish = [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.ToPureTensor()]
    return v2.Compose([*steps, *finish])


def _train_steps(image_size: int, recipe: str, native_size: int | None) -> list:
    if recipe == "pad_crop":
        resize = [v2.Resize(image_size)] if image_size != native_size else []
        return [*resize, v2.RandomCrop(image_size, padding=round(image_size / 8)), v2.RandomHorizontalFlip()]
    return [v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip()]


def _eval_steps(image_size: int, recipe: str, native_size: int | None) -> list:
    if recipe == "pad_crop":
        return [v2.Resize(image_size)] if image_size != native_size else []
    # int(), not round(): the published expression, 36 at S = 32 and 256 at S = 224
    resize = v2.Resize(int(EVAL_RESIZE_RATIO * image_size))
    if recipe == "crop_resize_eval":
        return [resize, v2.Resize(image_size)]
    return [resize, v2.CenterCrop(image_size)]


# --- datasets --------------------------------------------------------------------------------------------


class ArrayImageDataset(Dataset):
    """``(image, label)`` pairs from images held in memory as ``uint8 (N, H, W, 3)`` (CIFAR's pickles).

    Each image goes through PIL before ``transform``, as torchvision's CIFAR datasets do, so the resizing
    matches the published pipelines. Nothing can fail to decode, so ``num_skipped`` is 0.
    """

    num_missing = num_failed = num_skipped = 0  # read by ``skip_counts``: in-memory images cannot be skipped

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Image.Image], Tensor]) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


class ImageFileDataset(SkippingDataset):
    """``(image, label)`` pairs from image files, decoded by ``read_rgb``; unreadable files are skipped.

    ``SkippingDataset`` does the skipping: an image that fails to decode is logged with its path, counted in
    ``num_failed`` and replaced by a random image in training (``train``); in evaluation it is ``None``, which the
    loaders' collate (``SkippingLoader``) leaves out of the batch.
    ``missing`` (annotated files absent from disk) and ``unreadable`` (files found unreadable when the split was
    built, e.g. by the Cats & Dogs check) only count; they are not in ``paths``.
    """

    item = "image"

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | np.ndarray,
        transform: Callable[[Image.Image], Tensor],
        *,
        train: bool,
        missing: Sequence[str] = (),
        unreadable: Sequence[str] = (),
    ) -> None:
        super().__init__(missing=missing, unreadable=unreadable)
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        if not len(paths):
            raise ValueError("an image dataset needs at least one image")
        # numpy arrays instead of lists of str: forked DataLoader workers do not copy them page by page on access
        self.paths = np.array([str(p) for p in paths])
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.random = train

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def load(self, index: int) -> tuple[Tensor, int]:
        """The sample at ``index``; raises ``ImageDecodeError`` when its file is unreadable."""
        return self.transform(read_rgb(str(self.paths[index]))), int(self.labels[index])


def listed_files_dataset(
    paths: Sequence[Path],
    labels: np.ndarray,
    transform: Callable[[Image.Image], Tensor],
    *,
    train: bool,
    what: str,
) -> ImageFileDataset:
    """An ``ImageFileDataset`` of the annotated ``paths`` that exist; the absent ones are dropped with one warning
    (``what`` names the split in it) and counted as ``missing``. Raises when none exists."""
    present = np.array([p.is_file() for p in paths], dtype=bool)
    missing = [p.name for p, ok in zip(paths, present) if not ok]
    warn_skipped(missing, len(paths), what, items="images")
    if not present.any():
        raise FileNotFoundError(
            f"{what}: none of the {len(paths)} annotated images exist (e.g. {paths[0]}); see {README}"
        )
    kept = [p for p, ok in zip(paths, present) if ok]
    return ImageFileDataset(kept, np.asarray(labels)[present], transform, train=train, missing=missing)


# --- datamodule ------------------------------------------------------------------------------------------


class ImageDataModule(pl.LightningDataModule):
    """Base of the SPA image datamodules: transforms, lazily built ``train``/``test`` splits, the four loaders.

    Subclasses implement ``_build(split)`` and set ``normalisation`` (a key of ``NORMALISATIONS``),
    ``dataset_name`` and, where the variants differ, ``recipe()``. Batches are
    ``(float32 (B, 3, S, S), int64 (B,))``.

    ``num_workers`` defaults to ``min(4, CPUs)``; ``pin_memory`` to whether CUDA is available. ``seed`` seeds the
    shuffling of the training and ranking loaders (one generator, so successive epochs and phases differ but a
    run repeats); ``None`` leaves it to torch's global generator, as the published code did.
    """

    normalisation: ClassVar[str] = "imagenet"
    dataset_name: ClassVar[str] = "images"
    #: side of the stored images when they all have one (CIFAR: 32), for the arXiv-era CIFAR transforms
    native_size: ClassVar[int | None] = None

    def __init__(
        self,
        *,
        root: str | Path,
        num_classes: int,
        batch_size: int,
        num_workers: int | None,
        image_size: int,
        transforms: str,
        drop_last_eval: bool,
        pin_memory: bool | None,
        seed: int | None,
    ) -> None:
        super().__init__()
        if transforms not in TRANSFORM_VARIANTS:
            raise ValueError(f"transforms must be one of {TRANSFORM_VARIANTS}, got {transforms!r}")
        if batch_size < 1 or image_size < 1 or num_classes < 2:
            raise ValueError(
                f"batch_size and image_size must be positive and num_classes >= 2, got {batch_size}, {image_size}, "
                f"{num_classes}"
            )
        self.root = Path(root)
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.image_size = image_size
        self.transforms = transforms
        self.drop_last_eval = drop_last_eval
        # page-locked batches copy to a GPU faster; without one they only cost memory (and a warning)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.seed = seed
        self._num_classes = num_classes
        self._generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.classes: list[str] | None = None
        self.datasets: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        """The number of classes: what the model's head is built with."""
        return self._num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(3, S, S)``: one image as the loaders deliver it (for configs that build a probe input)."""
        return 3, self.image_size, self.image_size

    def recipe(self) -> str:
        """The ``image_transform`` recipe for ``self.transforms``; the HEAD crop recipe unless overridden."""
        return "crop"

    def transform(self, *, train: bool) -> Callable[[Image.Image], Tensor]:
        return image_transform(
            train=train,
            image_size=self.image_size,
            normalisation=self.normalisation,
            recipe=self.recipe(),
            native_size=self.native_size,
        )

    @abstractmethod
    def _build(self, split: str) -> Dataset:
        """The dataset of ``split`` (``train`` or ``test``) with ``self.transform(train=split == "train")``."""

    def setup(self, stage: str | None = None) -> None:
        # the test split is the validation split too (no separate one was published)
        needed = {"fit": ("train", "test"), "validate": ("test",), "test": ("test",), "predict": ("test",)}
        for split in needed.get(stage, ("train", "test")):
            self.dataset(split)

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (``train`` or ``test``; ``val`` means ``test``), built on first use."""
        split = "test" if split == "val" else split
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if split not in self.datasets:
            self.datasets[split] = self._build(split)
        return self.datasets[split]

    def skipped(self) -> dict[str, dict[str, int]]:
        """Per built split: annotated files missing from disk, files found unreadable when the split was built,
        and samples that failed to decode while loading so far."""
        return {split: skip_counts(d) for split, d in self.datasets.items()}

    @property
    def num_skipped(self) -> int:
        """Images skipped over all built splits (missing + unreadable + failed)."""
        return sum(sum(counts.values()) for counts in self.skipped().values())

    def train_dataloader(self) -> DataLoader:
        """Shuffled training images with the training augmentations, ``drop_last=True`` (as published)."""
        return self._train_loader(persistent=True)

    def rank_dataloader(self) -> DataLoader:
        """The training split with the TRAINING transforms, shuffled, ``drop_last=True``: the loader of the
        pruning criterion pass, which the published code ran over its training loader. One pass per call, so its
        workers do not outlive it."""
        return self._train_loader(persistent=False)

    def val_dataloader(self) -> DataLoader:
        """The TEST split: the published code monitored (and picked checkpoints) on the test set."""
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def _train_loader(self, *, persistent: bool) -> DataLoader:
        dataset = self.dataset("train")
        if len(dataset) < self.batch_size:
            # drop_last would leave no batch at all, and training would silently do nothing
            raise ValueError(
                f"{self.dataset_name}: the training split has {len(dataset)} images, fewer than batch_size="
                f"{self.batch_size}; lower data.batch_size"
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            generator=self._generator,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=persistent and self.num_workers > 0,
        )

    def _eval_loader(self) -> DataLoader:
        # an image that fails to decode is left out of the batch (and the metric), never replaced
        return SkippingLoader(
            self.dataset("test"),
            batch_size=self.batch_size,
            shuffle=False,
            drop_last=self.drop_last_eval,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _check_num_classes(self, found: int, source: Path | str) -> None:
        """Raise when the data on disk has another number of classes than the head will be built with."""
        if found != self._num_classes:
            raise ValueError(
                f"{source} describes {found} classes, but {self.dataset_name} has num_classes={self._num_classes}; "
                "the dataset on disk is not the expected one (or data.num_classes is wrong)"
            )
