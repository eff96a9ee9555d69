"""Online action detection on pre-extracted features: THUMOS14 and TVSeries as OadTR / CoOadTR read them.

Files and formats: ``datamodules.oad_formats`` (the original's ``data/`` folder). The datasets follow CoOadTR's
``TRNTHUMOSDataLayer`` / ``TRNTVSeriesDataLayer`` (LukasHedegaard/CoOadTR ``dataset.py``):

* **Windows** of ``sequence_len`` (n = 64) steps, stride 1. Window ``[end - n, end)`` exists for
  ``n <= end < T - Q`` (Q = ``queries`` = 8): the original's bound, which keeps all Q decoder targets
  ``[end, end + Q)`` inside the video and also leaves out the one window ``end = T - Q`` that would still fit.
  The target is the label of the window's last step (``end - 1``), the decoder target the labels of the Q steps
  after it. THUMOS14 drops the windows whose target is Ambiguous (class 21), in every split, and counts them
  (``dataset.num_ambiguous``, logged).
* **Training** windows start at a random offset in ``[0, n)`` per video, drawn once per run from ``seed`` by
  ``OffsetSampler`` (as the original, which draws it when the data layer is built), so every epoch has the same
  number of batches; the order is drawn from ``(seed, epoch)``: a run resumed at epoch e sees the windows and
  order it would have seen. The train dataset holds every window of offset 0; the sampler keeps, per video, those
  starting at or after its offset, and shuffles them each epoch.
* **Val / test**: the test videos (the original evaluates on them after every epoch; there is no other split),
  as windows from offset 0 (``eval_mode="window"``) or, with ``eval_mode="stream"``, one whole video per batch
  (batch size 1), every step in order: ``(features (1, E, T), targets (1, K, T))``; ``stream_videos(split)``
  names them in batch order.

Batches in window mode: ``(features float32 (B, E, n), target float32 (B, K), decoder_target float32 (B, K, Q))``,
channels first. Features and labels are held in memory as float32 (the pickles are read once per split).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.oad_formats import (
    AMBIGUOUS,
    DATASETS,
    Videos,
    feature_file,
    load_split,
    read_data_info,
    tvseries_classes,
)
from datamodules.robust import skip_counts, warn_skipped

__all__ = [
    "EVAL_MODES",
    "OffsetSampler",
    "OnlineDetectionDataModule",
    "StreamDataset",
    "WindowDataset",
]

log = logging.getLogger(__name__)

EVAL_MODES = ("window", "stream")


class WindowDataset(Dataset):
    """Windows of every video of a split (module docstring): ``(features (E, n), target (K,), decoder (K, Q))``.

    ``windows`` is an int64 ``(N, 2)`` array of ``(video index, end)``; ``num_ambiguous`` the windows dropped for
    their Ambiguous target (``ignore`` = that class, None: keep all); ``too_short`` the videos without a window.
    """

    def __init__(self, videos: Videos, *, sequence_len: int, queries: int, ignore: int | None) -> None:
        self.videos, self.sequence_len, self.queries = videos, sequence_len, queries
        self.missing = videos.missing
        windows, self.num_ambiguous, self.too_short = [], 0, []
        for i, labels in enumerate(videos.labels):
            ends = np.arange(sequence_len, len(labels) - queries)
            if not len(ends):
                self.too_short.append(videos.names[i])
                continue
            if ignore is not None:
                keep = labels[ends - 1].argmax(axis=1) != ignore
                self.num_ambiguous += int((~keep).sum())
                ends = ends[keep]
            windows.append(np.stack([np.full_like(ends, i), ends], axis=1))
        self.windows = np.concatenate(windows) if windows else np.zeros((0, 2), dtype=np.int64)

    @property
    def num_missing(self) -> int:
        return len(self.missing)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        video, end = (int(v) for v in self.windows[index])
        start = end - self.sequence_len
        features = self.videos.features[video][start:end].T.copy()  # (E, n), channels first
        labels = self.videos.labels[video]
        decoder = labels[end : end + self.queries].T.copy()  # (K, Q)
        return torch.from_numpy(features), torch.from_numpy(labels[end - 1].copy()), torch.from_numpy(decoder)

    def starts(self) -> np.ndarray:
        """The first step of every window."""
        return self.windows[:, 1] - self.sequence_len


class StreamDataset(Dataset):
    """Whole videos, every step in order: ``(features (E, T), targets (K, T))`` (Ambiguous steps included)."""

    def __init__(self, videos: Videos) -> None:
        self.videos, self.missing = videos, videos.missing

    @property
    def num_missing(self) -> int:
        return len(self.missing)

    def __len__(self) -> int:
        return len(self.videos.names)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        features, labels = self.videos.features[index], self.videos.labels[index]
        return torch.from_numpy(features.T.copy()), torch.from_numpy(labels.T.copy())


class OffsetSampler(Sampler[int]):
    """The training windows of one epoch, shuffled: per video, those starting at or after an offset in
    ``[0, sequence_len)``. The offsets are drawn once per run from ``seed`` (as the original's data layer draws
    them once), so every epoch holds the same windows and the same number of batches (Lightning counts the
    batches of an epoch once and validates, and saves ``last.ckpt``, at that count); the order is drawn from
    ``(seed, epoch)``, so an epoch (also one resumed from a checkpoint) always yields the same indices. Lightning
    calls ``set_epoch`` before every epoch; without it, each iteration advances the epoch by one."""

    def __init__(self, dataset: WindowDataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch, self._explicit = dataset, seed, 0, False
        offsets = np.random.default_rng([seed]).integers(dataset.sequence_len, size=len(dataset.videos.names))
        self._keep = np.flatnonzero(dataset.starts() >= offsets[dataset.windows[:, 0]])
        self._offsets = offsets

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._explicit = epoch, True

    def offsets(self) -> np.ndarray:
        """The start offset of every video (the same in every epoch)."""
        return self._offsets.copy()

    def indices(self, epoch: int) -> np.ndarray:
        """The dataset indices of ``epoch``, in the order they are drawn."""
        return np.random.default_rng([self.seed, epoch]).permutation(self._keep)

    def __len__(self) -> int:
        return len(self._keep)

    def __iter__(self) -> Iterator[int]:
        indices = self.indices(self.epoch)
        if not self._explicit:
            self.epoch += 1
        self._explicit = False
        return iter(indices.tolist())


class OnlineDetectionDataModule(pl.LightningDataModule):
    """Train / val / test loaders of THUMOS14 or TVSeries features (module docstring; formats in
    ``datamodules.oad_formats``; ``datamodules/README.md`` says where the files come from).

    ``root`` holds the files; ``dataset`` is ``thumos14`` or ``tvseries``; ``feature`` ``anet | kin | anet_audio |
    kin_audio`` (THUMOS14) or ``anet | kin`` (TVSeries, or the name of a ``.pickle`` there); ``dim_feature`` must
    equal the loaded width (None: not checked). ``num_classes`` (None: the dataset's) is checked against the
    dataset. ``sequence_len`` n and ``queries`` Q shape the windows; ``eval_mode`` ``window | stream`` the val/test
    batches. ``limit`` keeps the first videos of every split; ``seed`` (None: drawn from torch's generator, so
    ``seed_everything`` fixes it) sets the training offsets and order; ``names_from_zero`` declares TVSeries
    annotations made with the original numbering (``datamodules.tvseries_parser``). Val = test (the test videos).
    """

    def __init__(
        self,
        *,
        root: str | Path = "data/thumos14",
        dataset: str = "thumos14",
        feature: str = "anet",
        dim_feature: int | None = None,
        num_classes: int | None = None,
        sequence_len: int = 64,
        queries: int = 8,
        eval_mode: str = "window",
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        limit: int | None = None,
        seed: int | None = None,
        names_from_zero: bool = False,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r} (set eval.protocol)")
        if num_classes is not None and num_classes != DATASETS[dataset].num_classes:
            raise ValueError(f"{dataset} has {DATASETS[dataset].num_classes} classes, got num_classes={num_classes}")
        if names_from_zero and dataset != "tvseries":
            raise ValueError("names_from_zero concerns TVSeries annotations only; set it false for thumos14")
        feature_file(Path(root), dataset, feature, "val")  # checks the feature name
        self.save_hyperparameters(logger=False)
        self.root, self.dataset, self.feature = Path(root), dataset, feature
        self.sequence_len, self.queries, self.eval_mode = sequence_len, queries, eval_mode
        self.batch_size, self.num_workers, self.limit = batch_size, num_workers, limit
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.seed = int(torch.randint(2**31 - 1, ()).item()) if seed is None else seed
        self.classes: list[str] = []
        self.datasets: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].num_classes

    @property
    def ignore_index(self) -> int | None:
        """The class whose windows are dropped and whose steps metrics ignore (THUMOS14 Ambiguous, 21)."""
        return DATASETS[self.dataset].ignore_index

    def setup(self, stage: str | None = None) -> None:
        classes, train, test = read_data_info(self.root, self.dataset)
        # TVSeries columns follow the parser's numbering, not data_info_new.json's class_index (another order)
        self.classes = (
            tvseries_classes(names_from_zero=self.hparams.names_from_zero) if self.dataset == "tvseries" else classes
        )
        if self.limit is not None:
            train, test = train[: self.limit], test[: self.limit]
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        test_videos = None
        for split in needed.get(stage, ("train", "val", "test")):
            if split in self.datasets:
                continue
            if split == "train":
                self.datasets[split] = self._windows(self._load(train, "val"), split)
                continue
            # val and test are the same videos: read them once
            other = self.datasets.get("test" if split == "val" else "val")
            test_videos = test_videos or (other.videos if other is not None else self._load(test, "test"))
            stream = self.eval_mode == "stream"
            self.datasets[split] = StreamDataset(test_videos) if stream else self._windows(test_videos, split)

    def _load(self, videos: list[str], part: str) -> Videos:
        h = self.hparams
        loaded = load_split(self.root, self.dataset, self.feature, videos, part, names_from_zero=h.names_from_zero)
        width = loaded.features[0].shape[1] if loaded.features else None
        if h.dim_feature is not None and width is not None and width != h.dim_feature:
            raise ValueError(
                f"the {self.dataset} {self.feature!r} features in {self.root} are {width} wide but dim_feature="
                f"{h.dim_feature}: set data.dim_feature={width} (or pick the feature whose width is {h.dim_feature})"
            )
        return loaded

    def _windows(self, videos: Videos, split: str) -> WindowDataset:
        windows = WindowDataset(videos, sequence_len=self.sequence_len, queries=self.queries, ignore=self.ignore_index)
        if self.ignore_index is not None:
            log.info(
                f"{self.dataset} {split}: dropped {windows.num_ambiguous} windows whose target is Ambiguous "
                f"(class {AMBIGUOUS}); {len(windows)} windows remain"
                + (" (train: counted over offset 0, the windows of every epoch)" if split == "train" else "")
            )
        warn_skipped(
            windows.too_short, len(videos.names), f"{self.dataset} {split}", items="videos",
            reason=f"are shorter than sequence_len + queries + 1 = {self.sequence_len + self.queries + 1} steps",
        )  # fmt: skip
        return windows

    def ambiguous_counts(self) -> dict[str, int]:
        """Per built window split: the windows dropped for an Ambiguous target."""
        return {s: d.num_ambiguous for s, d in self.datasets.items() if isinstance(d, WindowDataset)}

    def skipped(self) -> dict[str, dict[str, int]]:
        """Per split: ``{"missing": n, "unreadable": 0, "failed": 0}`` (``datamodules.robust``)."""
        return {split: skip_counts(dataset) for split, dataset in self.datasets.items()}

    def stream_videos(self, split: str = "test") -> list[str]:
        """The video names of ``split`` in batch order (stream mode: one video per batch)."""
        if split not in self.datasets:
            raise RuntimeError(f"setup() has not built the {split!r} split yet")
        return list(self.datasets[split].videos.names)

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        sampler = OffsetSampler(dataset, self.seed)
        if len(sampler) < self.batch_size:  # drop_last would leave the epoch empty: a fit that trains nothing
            raise ValueError(
                f"{len(sampler)} training windows (after the start offsets) make no full batch of "
                f"batch_size={self.batch_size}: lower data.batch_size or use more / longer videos"
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,  # as the original
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        stream = isinstance(self.datasets[split], StreamDataset)
        return DataLoader(
            self.datasets[split],
            batch_size=1 if stream else self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
