"""What every datamodule does with data it cannot use, and the normalisations they share. Imports no decoder.

A long run must not die on one bad file, and must not lose files silently either. The rules, for images, videos
and whatever datamodule comes next:

* **A missing dataset** (root folder, annotation file) is an error before any work starts: ``require_path``
  names the path, what was expected there, how to get it, and ``README`` (the preparation steps).
* **Annotated files absent from disk** are dropped when a split is built and listed in ``dataset.missing``;
  ``warn_skipped`` logs one warning with their number and a few names. (Files found unreadable at that point, e.g.
  by a header check, go to ``dataset.unreadable`` the same way.)
* **Files that fail to decode while loading** are skipped by ``SkippingDataset``: its ``load`` raises a
  ``DecodeError`` naming the file, and ``__getitem__`` logs it, counts it in a ``SharedCounter`` that the
  DataLoader workers share, and returns another sample. Every other exception propagates (bugs are not data).
* **Normalisation** statistics live in one table, ``NORMALISATIONS``; ``normalisation_stats(name)`` reads it.

A new dataset subclasses ``SkippingDataset`` (``load``, ``describe``, ``__len__``, ``random``) and raises a
``DecodeError`` subclass from its decoder; its datamodule reports ``skip_counts(dataset)`` per split.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.context
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "NORMALISATIONS",
    "README",
    "DecodeError",
    "SharedCounter",
    "SkippingDataset",
    "normalisation_stats",
    "require_path",
    "skip_counts",
    "warn_skipped",
]

log = logging.getLogger(__name__)

#: Where the preparation steps of every dataset are written down (named by the missing-data errors).
README = Path(__file__).with_name("README.md")

#: (mean, std) per RGB channel of images or frames in [0, 1], by the name the configs and the model registry use.
NORMALISATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # the kuangliu CIFAR statistics used by the published SPA code (its std is the often-copied 0.2023 variant)
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    # X3D / SlowFast (Feichtenhofer et al.): the Co3D default
    "feichtenhofer": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # the third style of the co3d repository (LukasHedegaard/co3d, datasets/dataloader.py)
    "kopuklu": ((0.4338692858, 0.4045515923, 0.37760875), (0.1519876776, 0.14855877375, 0.1569763971)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    # torchvision's video models (R(2+1)D-18's Kinetics-400 weights, torchvision.transforms._presets)
    "torchvision_kinetics": ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
}


def normalisation_stats(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(mean, std)`` of the normalisation ``name``; an unknown name is an error listing the known ones."""
    if name not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {sorted(NORMALISATIONS)}, got {name!r}")
    return NORMALISATIONS[name]


class DecodeError(RuntimeError):
    """A file could not be read or decoded. ``SkippingDataset`` skips and counts these; other errors propagate.
    Decoders raise a subclass (``ImageDecodeError``, ``VideoDecodeError``) whose message names the file."""


def require_path(path: Path, what: str, how: str = "", *, directory: bool = False) -> None:
    """Raise ``FileNotFoundError`` unless ``path`` exists (and is a folder, with ``directory``). The message names
    ``path``, ``what`` was expected there, ``how`` to get it (a sentence, may be empty) and ``README``."""
    path = Path(path)
    if path.is_dir() if directory else path.exists():
        return
    problem = "is not a folder" if path.exists() else "does not exist"
    how = f" {how.strip()}" if how.strip() else ""
    raise FileNotFoundError(
        f"{path} {problem}: expected {what}.{how} Prepare it as described in {README} "
        "(or point data.root / DATA_DIR at the folder that holds it)."
    )


def warn_skipped(
    names: Sequence[str], total: int, what: str, *, items: str = "files", reason: str = "are missing"
) -> None:
    """One warning, ``<what>: <n> of <total> <items> <reason> and skipped (<a few names>)``; nothing when
    ``names`` is empty. ``what`` names the dataset folder and split."""
    if names:
        examples = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        log.warning(f"{what}: {len(names)} of {total} {items} {reason} and skipped ({examples})")


class SharedCounter:
    """An integer that DataLoader worker processes increment and the main process reads.

    Backed by a ``multiprocessing.Value``, which reaches workers started by fork (inherited memory) or spawn /
    forkserver (pickled at process creation, the one time a ``Value`` may be). It is made in the spawn context
    because a lock made in the fork context refuses to be pickled for spawned workers. Copying it otherwise
    (``pickle``, ``deepcopy``) gives a detached counter holding the current value, instead of raising.
    """

    def __init__(self, value: int = 0) -> None:
        self._value = _shared_int(value)

    @property
    def value(self) -> int:
        return int(self._value.value)

    def increment(self) -> int:
        with self._value.get_lock():
            self._value.value += 1
            return int(self._value.value)

    def __getstate__(self) -> dict:
        if multiprocessing.context.get_spawning_popen() is None:
            return {"value": self.value}
        return {"shared": self._value}

    def __setstate__(self, state: dict) -> None:
        self._value = state["shared"] if "shared" in state else _shared_int(state["value"])


def _shared_int(value: int) -> Any:
    return mp.get_context("spawn").Value("q", value)


class SkippingDataset(Dataset):
    """A dataset whose unreadable samples are skipped, logged and counted instead of crashing a long run.

    Subclasses implement ``load(index)`` (raising a ``DecodeError`` for an unreadable file), ``describe(index)``
    (the file behind it, for messages) and ``__len__``, and set ``random``. ``__getitem__`` catches the
    ``DecodeError``, logs it with the path, increments ``num_failed`` (shared with the DataLoader workers) and
    returns another sample: a random one when ``random`` (training), else the next one, so that evaluation stays
    deterministic. After ``max_retries`` consecutive failures it raises, naming the file it started from.

    ``missing`` (annotated files absent from disk) and ``unreadable`` (files found unreadable when the split was
    built) are filled by the subclass and only counted: they are not among the samples.
    """

    #: (set by subclasses) whether samples are drawn at random, which also picks random substitutes
    random: bool
    #: what one sample is, for messages ("image", "video", ...)
    item: ClassVar[str] = "sample"
    max_retries: int = 10

    def __init__(self, *, missing: Sequence[str] = (), unreadable: Sequence[str] = ()) -> None:
        self.missing: list[str] = list(missing)
        self.unreadable: list[str] = list(unreadable)
        self._failed = SharedCounter()
        self._known_bad: set[int] = set()  # per worker process; only saves decoding a bad file twice

    @property
    def num_missing(self) -> int:
        """Entries of the annotations whose file is absent (dropped when the dataset was built)."""
        return len(self.missing)

    @property
    def num_failed(self) -> int:
        """Decoding failures so far, summed over the DataLoader workers. Each worker process remembers its bad
        files and skips them without a second warning, so a bad file counts at most once per worker process."""
        return self._failed.value

    @property
    def num_skipped(self) -> int:
        return self.num_missing + len(self.unreadable) + self.num_failed

    @abstractmethod
    def load(self, index: int) -> tuple[Tensor, Tensor | int]:
        """The sample at ``index``; raises a ``DecodeError`` when its file is unreadable."""

    @abstractmethod
    def describe(self, index: int) -> str:
        """The file (or folder) behind ``index``, for messages."""

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor | int]:
        candidate, last_error = index, None
        for attempt in range(self.max_retries + 1):
            if candidate not in self._known_bad:
                try:
                    return self.load(candidate)
                except DecodeError as error:
                    self._known_bad.add(candidate)
                    count = self._failed.increment()
                    log.warning(f"Skipping unreadable {self.item} {candidate} ({error}); {count} skipped so far")
                    last_error = error
            candidate = self._substitute(index, attempt)
        raise RuntimeError(
            f"{self.max_retries + 1} {self.item}s in a row could not be read, starting at {self.describe(index)}; "
            f"check the files ({README})"
        ) from last_error

    def _substitute(self, index: int, attempt: int) -> int:
        if self.random:
            return int(torch.randint(len(self), ()).item())
        return (index + attempt + 1) % len(self)


def skip_counts(dataset: Dataset) -> dict[str, int]:
    """``{"missing": n, "unreadable": k, "failed": m}`` of ``dataset`` (zeros for one that cannot skip, e.g. images
    held in memory): what a datamodule's ``skipped()`` reports per split."""
    return {
        "missing": int(getattr(dataset, "num_missing", 0)),
        "unreadable": len(getattr(dataset, "unreadable", ())),
        "failed": int(getattr(dataset, "num_failed", 0)),
    }
