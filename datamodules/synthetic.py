"""Tiny synthetic video classification: a bright blob moving in a class-dependent direction, plus noise.

The class is visible only in the motion (every frame alone is a blob at a random place), so a model must use
time to beat chance, which makes the set a real check of temporal convolutions and their continual twins.
Clips are generated once per split from a seeded generator: the same seed gives the same data on every rank
and run. Sizes default to a few thousand pixels per clip so ``fast_dev_run`` and short training take seconds.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = ["SyntheticClipDataModule", "SyntheticClips"]


class SyntheticClips(Dataset):
    """``num_samples`` clips ``(C, T, H, W)`` in float32 and integer labels; balanced over the classes.

    Class ``c`` moves the blob by ``speed`` pixels per frame along the angle ``2π c / num_classes`` (wrapping
    around the borders); its start position, colour and the pixel noise are random.
    """

    def __init__(
        self,
        *,
        num_samples: int,
        num_classes: int,
        channels: int,
        clip_length: int,
        height: int,
        width: int,
        noise: float,
        speed: float,
        seed: int,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(num_samples) % num_classes
        self.labels = self.labels[torch.randperm(num_samples, generator=g)]
        angle = 2 * math.pi * self.labels.float() / num_classes
        velocity = speed * torch.stack((torch.sin(angle), torch.cos(angle)), dim=1)  # (N, 2) rows, cols per frame
        start = torch.rand(num_samples, 2, generator=g) * torch.tensor([height, width])
        t = torch.arange(clip_length).float()
        centre = start[:, None] + t[None, :, None] * velocity[:, None]  # (N, T, 2)
        ys, xs = torch.arange(height).float(), torch.arange(width).float()
        # Distance on the torus, so a blob leaving one border re-enters at the other and never disappears.
        dy = _wrap(ys[None, None, :] - centre[..., 0:1], height)  # (N, T, H)
        dx = _wrap(xs[None, None, :] - centre[..., 1:2], width)  # (N, T, W)
        sigma = max(min(height, width) / 8, 1.0)
        blob = torch.exp(-(dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (2 * sigma**2))  # (N, T, H, W)
        colour = 0.5 + torch.rand(num_samples, channels, generator=g)
        clips = colour[:, :, None, None, None] * blob[:, None]
        clips += noise * torch.randn(clips.shape, generator=g)
        self.clips = clips

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.clips[index], self.labels[index]


def _wrap(d: Tensor, size: int) -> Tensor:
    return torch.remainder(d + size / 2, size) - size / 2


class SyntheticClipDataModule(pl.LightningDataModule):
    """Train/val/test splits of ``SyntheticClips`` with separate seeds.

    ``eval_clip_length`` (default ``clip_length``) is the clip length of val/test: a continual net evaluated
    under the frame protocol needs ``net.delay + 1`` frames to emit its first prediction.
    """

    def __init__(
        self,
        *,
        num_classes: int = 4,
        channels: int = 3,
        clip_length: int = 8,
        eval_clip_length: int | None = None,
        height: int = 16,
        width: int = 16,
        num_train: int = 128,
        num_val: int = 64,
        num_test: int = 64,
        noise: float = 0.3,
        speed: float = 1.5,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.save_hyperparameters(logger=False)
        self.eval_clip_length = eval_clip_length or clip_length
        self.splits: dict[str, SyntheticClips] = {}

    def max_clip_frames(self) -> None:
        """No limit: every split is generated at its clip length, so every frame of a clip is distinct."""
        return None

    def _make(self, num_samples: int, clip_length: int, seed_offset: int) -> SyntheticClips:
        h = self.hparams
        return SyntheticClips(
            num_samples=num_samples,
            num_classes=h.num_classes,
            channels=h.channels,
            clip_length=clip_length,
            height=h.height,
            width=h.width,
            noise=h.noise,
            speed=h.speed,
            seed=h.seed * 1000 + seed_offset,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        h = self.hparams
        self.splits = {
            "train": self._make(h.num_train, h.clip_length, 0),
            "val": self._make(h.num_val, self.eval_clip_length, 1),
            "test": self._make(h.num_test, self.eval_clip_length, 2),
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
