"""What every datamodule does with data it cannot use, and the normalisations they share. Imports no decoder.

A long run must not die on one bad file, and must not lose files silently either. The rules, for images, videos
and whatever datamodule comes next:

* **A missing dataset** (root folder, annotation file) is an error before any work starts: ``require_path``
  names the path, what was expected there, how to get it, and ``README`` (the preparation steps).
* **Annotated files absent from disk** are dropped when a split is built and listed in ``dataset.missing``;
  ``warn_skipped`` logs one warning with their number and a few names. (Files found unreadable at that point, e.g.
  by a header check, go to ``dataset.unreadable`` the same way; files whose label is not a class go to
  ``dataset.unknown_label``, files annotated twice to ``dataset.duplicate``.)
* **Files that fail to decode while loading** are skipped by ``SkippingDataset``: its ``load`` raises a
  ``DecodeError`` naming the file, and ``__getitem__`` logs it and flags the sample in ``SharedFlags`` (shared
  with the DataLoader workers: each bad file counts once, whatever the workers and epochs). Training returns
  another sample; evaluation returns ``None``, which the loaders (``SkippingLoader``, collating with
  ``drop_unreadable``) leave out, so test metrics are over the readable samples only. Every other exception
  propagates (bugs are not data).
* **Every run reports** ``skip_counts`` per split (the datamodule's ``skipped()``) at its end and in
  ``metrics.json`` (``experiments.data_report``); ``python -m datamodules.check`` finds the bad files up front.
* **Normalisation** statistics live in one table, ``NORMALISATIONS``; ``normalisation_stats(name)`` reads it.

A new dataset subclasses ``SkippingDataset`` (``load``, ``describe``, ``__len__``, ``random``) and raises a
``DecodeError`` subclass from its decoder; its datamodule loads it with ``SkippingLoader`` and reports
``skip_counts(dataset)`` per split.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import multiprocessing.context
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

__all__ = [
    "NORMALISATIONS",
    "README",
    "DecodeError",
    "SharedFlags",
    "SkippingDataset",
    "SkippingLoader",
    "drop_unreadable",
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


class SharedFlags:
    """One flag per sample that DataLoader worker processes set and the main process reads: which samples failed.

    A count of failures would count a bad file once per worker that meets it (and once more for each substitute
    that fails too); flags indexed by sample count each file once, whichever worker and epoch met it.

    A lock-free ``RawArray`` (setting a byte to 1 twice is harmless) reaches workers started by fork (inherited
    memory) or spawn / forkserver (pickled at process creation, the one time shared memory may be); it is made in
    the spawn context so that both work. A copy made otherwise (``pickle``, ``deepcopy``) is detached and keeps
    the current flags, instead of raising.
    """

    def __init__(self, size: int, flags: np.ndarray | None = None) -> None:
        self._array = mp.get_context("spawn").RawArray("b", size)
        if flags is not None:
            self.view[:] = flags

    @property
    def view(self) -> np.ndarray:
        return np.frombuffer(self._array, dtype=np.int8)

    def __len__(self) -> int:
        return len(self._array)

    def set(self, index: int) -> None:
        self._array[index] = 1

    def __contains__(self, index: int) -> bool:
        return bool(self._array[index])

    def indices(self) -> list[int]:
        return np.flatnonzero(self.view).tolist()

    def __getstate__(self) -> dict:
        if multiprocessing.context.get_spawning_popen() is None:
            return {"flags": self.view.copy()}
        return {"shared": self._array}

    def __setstate__(self, state: dict) -> None:
        if "shared" in state:
            self._array = state["shared"]
        else:
            self.__init__(len(state["flags"]), state["flags"])


class SkippingDataset(Dataset):
    """A dataset whose unreadable samples are skipped, logged and counted instead of crashing a long run.

    Subclasses implement ``load(index)`` (raising a ``DecodeError`` for an unreadable file), ``describe(index)``
    (the file behind it, for messages) and ``__len__``, and set ``random``. ``__getitem__`` catches the
    ``DecodeError``, logs it with the path and flags the sample as failed (flags shared with the DataLoader
    workers, so each bad file counts once however many workers and epochs meet it). Then:

    * evaluation (``random`` false) returns ``None``: the loaders' ``drop_unreadable`` collate leaves the sample
      out, so a metric is computed over the readable samples only (a substitute would be counted twice);
    * training returns a random other sample (the batch keeps its size); after ``max_retries`` consecutive
      failures it raises, naming the file it started from.

    ``missing`` (annotated files absent from disk), ``unreadable`` (files found unreadable when the split was
    built), ``unknown_label`` (files whose label is not a class) and ``duplicate`` (files annotated twice) are
    filled by the subclass and only counted: they are not among the samples.
    """

    #: (set by subclasses) whether samples are drawn at random, which also picks random substitutes
    random: bool
    #: what one sample is, for messages ("image", "video", ...)
    item: ClassVar[str] = "sample"
    max_retries: int = 10

    def __init__(
        self,
        *,
        missing: Sequence[str] = (),
        unreadable: Sequence[str] = (),
        unknown_label: Sequence[str] = (),
        duplicate: Sequence[str] = (),
    ) -> None:
        self.missing: list[str] = list(missing)
        self.unreadable: list[str] = list(unreadable)
        self.unknown_label: list[str] = list(unknown_label)
        self.duplicate: list[str] = list(duplicate)
        self._failed: SharedFlags | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Make the failure flags once the outermost ``__init__`` of a subclass has indexed its samples: they are
        sized by ``len(self)``, and must exist before DataLoader workers fork, or each worker would flag its own
        copy and the main process would see none of it."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def init_then_share(self: SkippingDataset, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            if type(self).__init__ is init_then_share:  # the outermost subclass: the samples are final
                self._flags()

        cls.__init__ = init_then_share

    def _flags(self) -> SharedFlags:
        if self._failed is None or len(self._failed) != len(self):
            self._failed = SharedFlags(len(self))
        return self._failed

    @property
    def num_missing(self) -> int:
        """Entries of the annotations whose file is absent (dropped when the dataset was built)."""
        return len(self.missing)

    @property
    def num_failed(self) -> int:
        """Samples that failed to decode so far, each counted once over every DataLoader worker and epoch."""
        return len(self._flags().indices())

    def failed_samples(self) -> list[str]:
        """The files (``describe``) of the samples that failed to decode so far, in index order."""
        return [self.describe(i) for i in self._flags().indices()]

    @property
    def num_skipped(self) -> int:
        return self.num_missing + len(self.unreadable) + len(self.unknown_label) + len(self.duplicate) + self.num_failed

    @abstractmethod
    def load(self, index: int) -> tuple[Tensor, Tensor | int]:
        """The sample at ``index``; raises a ``DecodeError`` when its file is unreadable."""

    @abstractmethod
    def describe(self, index: int) -> str:
        """The file (or folder) behind ``index``, for messages."""

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor | int] | None:
        flags = self._flags()
        candidate, last_error = index, None
        for _attempt in range(self.max_retries + 1):
            if candidate not in flags:
                try:
                    return self.load(candidate)
                except DecodeError as error:
                    flags.set(candidate)
                    log.warning(f"Skipping unreadable {self.item} {candidate} ({error})")
                    last_error = error
            if not self.random:
                return None  # evaluation: left out by ``drop_unreadable``, never replaced
            candidate = int(torch.randint(len(self), ()).item())
        raise RuntimeError(
            f"{self.max_retries + 1} {self.item}s in a row could not be read, starting at {self.describe(index)}; "
            f"check the files ({README})"
        ) from last_error

    @staticmethod
    def collate(batch: list[Any]) -> Any:
        """``drop_unreadable``: the collate of a loader of this dataset."""
        return drop_unreadable(batch)


def drop_unreadable(batch: list[Any]) -> Any:
    """``default_collate`` of the samples that are not ``None`` (the unreadable ones in evaluation); ``None`` when
    none is left, a batch ``SkippingLoader`` leaves out."""
    kept = [sample for sample in batch if sample is not None]
    return default_collate(kept) if kept else None


class SkippingLoader(DataLoader):
    """A ``DataLoader`` (collating with ``drop_unreadable`` unless told otherwise) that leaves out the batches
    in which every sample was unreadable, so that no step sees an empty batch. ``len`` still counts them: a loop
    ends early by at most that many batches."""

    def __init__(self, dataset: Dataset, *args: Any, **kwargs: Any) -> None:
        kwargs["collate_fn"] = kwargs.get("collate_fn") or drop_unreadable
        super().__init__(dataset, *args, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        return (batch for batch in super().__iter__() if batch is not None)


def skip_counts(dataset: Dataset) -> dict[str, int]:
    """What a datamodule's ``skipped()`` reports per split: ``missing`` (annotated, absent from disk),
    ``unreadable`` (found unreadable when the split was built), ``unknown_label`` (a label outside the class
    list), ``duplicate`` (annotated more than once) and ``failed`` (failed to decode while loading so far); zeros
    for a dataset that cannot skip (e.g. images held in memory)."""
    return {
        "missing": int(getattr(dataset, "num_missing", 0)),
        "unreadable": len(getattr(dataset, "unreadable", ())),
        "unknown_label": len(getattr(dataset, "unknown_label", ())),
        "duplicate": len(getattr(dataset, "duplicate", ())),
        "failed": int(getattr(dataset, "num_failed", 0)),
    }
