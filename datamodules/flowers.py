"""Oxford Flowers-102 (Nilsback & Zisserman 2008) with the split of the published SPA code
(paper/structured-pruning-adapters.md).

On-disk layout (torchvision's ``Flowers102`` layout)::

    <root>/flowers-102/jpg/image_00001.jpg ... image_08189.jpg
    <root>/flowers-102/imagelabels.mat      # labels: (1, 8189), classes 1..102, entry i for image i + 1
    <root>/flowers-102/setid.mat            # trnid, valid, tstid: (1, n) 1-based image numbers

Training is ``trnid + valid`` (2,040 images: Yeom et al. report over 2,000 training images, and the published
code took the validation ids for training too); the test split is ``tstid`` (6,149). Labels are the
``imagelabels.mat`` classes minus one. ImageNet normalisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from datamodules.images import ImageDataModule, ImageFileDataset, listed_files_dataset
from datamodules.robust import require_path

__all__ = ["FLOWERS_URLS", "Flowers102DataModule", "read_flowers_split"]

FLOWERS_URLS = {
    "images": "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
    "labels": "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",
    "splits": "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/setid.mat",
}
FOLDER = "flowers-102"
SPLIT_IDS = {"train": ("trnid", "valid"), "test": ("tstid",)}


def _loadmat(path: Path, keys: tuple[str, ...], url: str) -> dict[str, np.ndarray]:
    require_path(path, "a MATLAB file of Flowers-102", f"Download {url} into {path.parent}.")
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError) as error:
        raise ValueError(f"{path} is not a readable .mat file ({error}); download it again from {url}") from error
    lacking = [k for k in keys if k not in mat]
    if lacking:
        raise ValueError(f"{path} lacks {lacking} (has {sorted(k for k in mat if not k.startswith('__'))})")
    return {k: np.asarray(mat[k]).ravel().astype(np.int64) for k in keys}


def read_flowers_split(dataset_dir: str | Path, split: str) -> tuple[list[Path], np.ndarray]:
    """Image paths and 0-based labels of ``split`` (``train`` = trnid + valid, ``test`` = tstid), in .mat order."""
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    dataset_dir = Path(dataset_dir)
    labels = _loadmat(dataset_dir / "imagelabels.mat", ("labels",), FLOWERS_URLS["labels"])["labels"]
    sets = _loadmat(dataset_dir / "setid.mat", SPLIT_IDS[split], FLOWERS_URLS["splits"])
    ids = np.concatenate([sets[k] for k in SPLIT_IDS[split]])
    if ids.min() < 1 or ids.max() > len(labels):
        raise ValueError(f"{dataset_dir}/setid.mat names images outside 1..{len(labels)} (imagelabels.mat)")
    paths = [dataset_dir / "jpg" / f"image_{i:05d}.jpg" for i in ids]
    return paths, labels[ids - 1] - 1


class Flowers102DataModule(ImageDataModule):
    """Oxford Flowers-102: 102 classes, 2,040 training (trnid + valid) / 6,149 test (tstid) images.

    Images from ``<root>/flowers-102``; ImageNet normalisation; HEAD transforms (RandomResizedCrop(S) + flip,
    test Resize(int(256/224·S)) + CenterCrop(S)) under both variants: the arXiv-era code used the same ones at 224.
    Defaults: 224 pixels, batch size 6 (the later published ResNet-50 runs; Table 1 used 4). Listed images that
    are absent are dropped with one warning and counted in ``skipped()``.
    """

    dataset_name = "Flowers-102"
    normalisation = "imagenet"

    def __init__(
        self,
        *,
        root: str | Path = "data",
        num_classes: int = 102,
        batch_size: int = 6,
        num_workers: int | None = None,
        image_size: int = 224,
        transforms: str = "head",
        drop_last_eval: bool = False,
        pin_memory: bool | None = None,
        seed: int | None = None,
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
        self.save_hyperparameters(logger=False)
        self.dataset_dir = self.root / FOLDER

    def _build(self, split: str) -> ImageFileDataset:
        require_path(
            self.dataset_dir / "jpg",
            "the Flowers-102 images flowers-102/jpg/image_%05d.jpg",
            f"Download {FLOWERS_URLS['images']} and extract it into {self.dataset_dir} (it unpacks to jpg/).",
        )
        paths, labels = read_flowers_split(self.dataset_dir, split)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"{self.dataset_dir}/imagelabels.mat has classes outside 1..{self.num_classes} "
                f"({labels.min() + 1}..{labels.max() + 1})"
            )
        train = split == "train"
        return listed_files_dataset(
            paths, labels, self.transform(train=train), train=train, what=f"{self.dataset_dir} {split}"
        )
