"""Digits transfer: a tiny built-in stand-in for the SPA study's pretrain → adapt → prune pipeline.

The SPA experiments adapt an ImageNet-pretrained network to a new task while pruning it
(paper/structured-pruning-adapters.md).
Here both tasks come from scikit-learn's bundled digits (``sklearn.datasets.load_digits``: 1,797 grey 8 x 8
images, no download): ``task="pretrain"`` has the classes ``pretrain_classes`` (default 0-4) and
``task="adapt"`` the other ones (5-9), so a net pretrained on one task can be adapted to a disjoint one on CPU in
seconds. Labels are re-indexed ``0 .. k-1`` in increasing digit order.

Each class is split into train / test from ``seed`` (stratified; ``test_fraction`` 0.3 by default), the same way
whichever task asks, so the two tasks never share an image. Images are upsampled bilinearly to ``image_size``
(16 by default), repeated to 3 channels and normalised with the mean and standard deviation of the task's own
training images (one value for all channels: they are equal). Training images are shifted at random by up to
``image_size // 8`` pixels (zero padding, i.e. background, then a random crop): a light augmentation; digits
are not flipped. Everything is held in memory; building a split takes milliseconds.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.images import ImageDataModule

__all__ = [
    "DigitsTransferDataModule",
    "DigitsTransform",
    "TensorImageDataset",
    "load_digit_images",
    "stratified_split",
    "task_classes",
]

TASKS = ("pretrain", "adapt")
DIGITS = tuple(range(10))


@functools.cache
def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits: ``float32 (N, 8, 8)`` in [0, 1] and ``int64 (N,)`` labels.

    Read straight from the CSV that scikit-learn bundles (``sklearn/datasets/data/digits.csv.gz``: 64 pixel
    values in 0..16, then the label, per row), which spares importing ``sklearn.datasets`` (seconds on a busy
    machine); ``load_digits`` is the fallback if the file moves.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / "datasets" / "data" / "digits.csv.gz" if locations else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels, labels = digits.data, digits.target
    return (pixels.reshape(-1, 8, 8) / 16.0).astype(np.float32), labels.astype(np.int64)


def task_classes(task: str, pretrain_classes: Sequence[int]) -> list[int]:
    """The digits of ``task``: ``pretrain_classes`` (sorted) or the others."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    chosen = sorted(int(c) for c in pretrain_classes)
    if len(set(chosen)) != len(chosen) or not set(chosen) <= set(DIGITS):
        raise ValueError(f"pretrain_classes must be distinct digits 0-9, got {list(pretrain_classes)}")
    classes = chosen if task == "pretrain" else sorted(set(DIGITS) - set(chosen))
    if len(classes) < 2:
        raise ValueError(
            f"task {task!r} with pretrain_classes={chosen} has {len(classes)} classes; a classification task needs "
            "at least 2 (leave at least 2 digits on each side)"
        )
    return classes


def stratified_split(labels: np.ndarray, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices into ``labels``: per class, ``round(test_fraction · n)`` random test samples.

    Each class draws from its own generator ``(seed, class)``, so a class splits the same way whatever other
    classes are asked for (the pretrain and adapt tasks agree on every digit).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[np.random.default_rng([seed, int(label)]).permutation(len(members))]
        num_test = round(test_fraction * len(members))
        test.append(members[:num_test])
        train.append(members[num_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class DigitsTransform:
    """``float32 (3, S, S)`` in [0, 1] → normalised, after a random shift of up to ``shift`` pixels (0: none)."""

    def __init__(self, mean: float, std: float, shift: int = 0) -> None:
        self.mean, self.std, self.shift = mean, std, shift

    def __call__(self, image: Tensor) -> Tensor:
        if self.shift:
            size = image.shape[-1]
            # zero padding is the digits' background; the crop moves the digit by -shift .. +shift per axis
            padded = F.pad(image, (self.shift,) * 4)
            top, left = torch.randint(2 * self.shift + 1, (2,)).tolist()
            image = padded[:, top : top + size, left : left + size]
        return (image - self.mean) / self.std


class TensorImageDataset(Dataset):
    """``(transform(images[i]), labels[i])`` from tensors in memory."""

    num_missing = num_failed = num_skipped = 0

    def __init__(self, images: Tensor, labels: Tensor, transform: DigitsTransform) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


class DigitsTransferDataModule(ImageDataModule):
    """The pretrain or adapt task of the built-in digits (module docstring); the default data of the SPA configs
    on CPU. Batches are ``(float32 (B, 3, S, S), int64 (B,))``.

    ``num_classes`` (optional) must equal the task's class count when given. ``seed`` fixes the shuffling (None: torch's
    global generator) and, unless ``split_seed`` is given, the train/test split. ``transforms`` is accepted for
    uniform configs: both variants give the shift augmentation
    (the digits have no published counterpart). ``root`` is not read: nothing is stored on disk. ``num_workers``
    defaults to 0: the samples are in memory and worker processes would cost more than they give.
    """

    dataset_name = "digits transfer"

    def __init__(
        self,
        *,
        root: str | Path = "data",
        task: str = "pretrain",
        pretrain_classes: Sequence[int] = (0, 1, 2, 3, 4),
        num_classes: int | None = None,
        image_size: int = 16,
        test_fraction: float = 0.3,
        batch_size: int = 32,
        num_workers: int | None = 0,
        transforms: str = "head",
        drop_last_eval: bool = False,
        pin_memory: bool | None = None,
        seed: int | None = 0,
        split_seed: int | None = None,
    ) -> None:
        self.task_digits = task_classes(task, pretrain_classes)
        if num_classes is not None and num_classes != len(self.task_digits):
            raise ValueError(
                f"the {task} task has {len(self.task_digits)} classes ({self.task_digits}), "
                f"got num_classes={num_classes}"
            )
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        super().__init__(
            root=root,
            num_classes=len(self.task_digits),
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            transforms=transforms,
            drop_last_eval=drop_last_eval,
            pin_memory=pin_memory,
            seed=seed,
        )
        self.save_hyperparameters(logger=False)
        self.task = task
        self.split_seed = split_seed
        self.test_fraction = test_fraction
        self.classes = [str(d) for d in self.task_digits]
        #: normalisation statistics of the task's training images, set when the first split is built
        self.mean: float | None = None
        self.std: float | None = None
        self._splits: dict[str, tuple[Tensor, Tensor]] | None = None

    def _prepare(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Both splits as ``(images float32 (N, 3, S, S) in [0, 1], labels int64 (N,))``, and the statistics."""
        if self._splits is None:
            pixels, digits = load_digit_images()
            in_task = np.isin(digits, self.task_digits)
            pixels, digits = pixels[in_task], digits[in_task]
            labels = np.searchsorted(self.task_digits, digits)  # digits → 0 .. k-1 in increasing order
            images = torch.from_numpy(pixels)[:, None]
            images = F.interpolate(images, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
            images = images.clamp_(0, 1).expand(-1, 3, -1, -1).contiguous()
            split_seed = self.split_seed if self.split_seed is not None else (self.seed or 0)
            train, test = stratified_split(digits, test_fraction=self.test_fraction, seed=split_seed)
            self._splits = {
                "train": (images[train], torch.from_numpy(labels[train])),
                "test": (images[test], torch.from_numpy(labels[test])),
            }
            train_images = self._splits["train"][0]
            self.mean, self.std = float(train_images.mean()), float(train_images.std())
        return self._splits

    def transform(self, *, train: bool) -> DigitsTransform:
        self._prepare()
        return DigitsTransform(self.mean, self.std, shift=max(self.image_size // 8, 1) if train else 0)

    def _build(self, split: str) -> TensorImageDataset:
        images, labels = self._prepare()[split]
        return TensorImageDataset(images, labels, self.transform(train=split == "train"))
