"""Stanford Cars (Krause et al. 2013) in torchvision's layout (paper/structured-pruning-adapters.md).

On-disk layout (what ``torchvision.datasets.StanfordCars`` reads, and the published code used)::

    <root>/stanford_cars/cars_train/00001.jpg ...                  # 8,144 images
    <root>/stanford_cars/cars_test/00001.jpg ...                   # 8,041 images
    <root>/stanford_cars/devkit/cars_train_annos.mat               # annotations: fname, class (1..196), bbox_*
    <root>/stanford_cars/cars_test_annos_withlabels.mat            # the same for the test images
    <root>/stanford_cars/devkit/cars_meta.mat                      # class_names: 196 names

Labels are the annotation classes minus one; bounding boxes are not used (whole images, as published).
CIFAR normalisation, as the published code (a quirk: ImageNet statistics would suit these photos better).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from datamodules.images import ImageDataModule, ImageFileDataset, listed_files_dataset
from datamodules.robust import require_path

__all__ = ["CARS_SOURCES", "StanfordCarsDataModule", "read_cars_annotations", "read_cars_classes"]

CARS_SOURCES = (
    "the Kaggle copy (the original Stanford URL is gone) "
    "https://www.kaggle.com/datasets/eduardo4jesus/stanford-cars-dataset "
    "has cars_train/, cars_test/ and the devkit, and the test labels are "
    "https://github.com/nguyentruonglau/stanford-cars/raw/main/labeldata/cars_test_annos_withlabels.mat"
)
FOLDER = "stanford_cars"
ANNOTATIONS = {"train": "devkit/cars_train_annos.mat", "test": "cars_test_annos_withlabels.mat"}
IMAGES = {"train": "cars_train", "test": "cars_test"}


def _loadmat(path: Path, key: str) -> np.ndarray:
    require_path(path, "a MATLAB file of Stanford Cars", f"Get it from {CARS_SOURCES}.")
    try:
        # squeeze_me: a (1, N) struct array becomes N records and 1 x 1 fields become scalars
        mat = scipy.io.loadmat(path, squeeze_me=True)
    except (ValueError, OSError, TypeError) as error:
        raise ValueError(f"{path} is not a readable .mat file ({error})") from error
    if key not in mat:
        raise ValueError(f"{path} lacks {key!r} (has {sorted(k for k in mat if not k.startswith('__'))})")
    return np.atleast_1d(mat[key])


def read_cars_annotations(dataset_dir: str | Path, split: str) -> tuple[list[Path], np.ndarray]:
    """Image paths and 0-based labels of ``split`` (``train`` or ``test``) in annotation order."""
    if split not in ANNOTATIONS:
        raise ValueError(f"split must be one of {sorted(ANNOTATIONS)}, got {split!r}")
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / ANNOTATIONS[split]
    annotations = _loadmat(path, "annotations")
    fields = annotations.dtype.names or ()
    if "fname" not in fields or "class" not in fields:
        raise ValueError(
            f"{path}: annotations lack the fields 'fname' and 'class' (have {fields}); the test file must be "
            "cars_test_annos_withlabels.mat, not the devkit's unlabelled cars_test_annos.mat"
        )
    paths = [dataset_dir / IMAGES[split] / str(a["fname"]) for a in annotations]
    return paths, np.array([int(a["class"]) for a in annotations], dtype=np.int64) - 1


def read_cars_classes(dataset_dir: str | Path) -> list[str]:
    """The class names (``devkit/cars_meta.mat``) in label order."""
    return [str(name) for name in _loadmat(Path(dataset_dir) / "devkit" / "cars_meta.mat", "class_names")]


class StanfordCarsDataModule(ImageDataModule):
    """Stanford Cars: 196 classes, 8,144 training / 8,041 test images from ``<root>/stanford_cars``.

    CIFAR normalisation (as published); HEAD transforms (RandomResizedCrop(S) + flip, test
    Resize(int(256/224·S)) + CenterCrop(S)) under both variants (Cars was added after the arXiv version).
    Defaults: 224 pixels, batch size 8 (the later published ResNet-50 runs; paper/structured-pruning-adapters.md).
    Annotated images that are absent are dropped with one warning and counted in ``skipped()``.
    """

    dataset_name = "Stanford Cars"
    normalisation = "cifar"

    def __init__(
        self,
        *,
        root: str | Path = "data",
        num_classes: int = 196,
        batch_size: int = 8,
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
        require_path(self.dataset_dir / "devkit", "the Stanford Cars devkit folder", f"Get it from {CARS_SOURCES}.")
        if self.classes is None:
            classes = read_cars_classes(self.dataset_dir)
            self._check_num_classes(len(classes), self.dataset_dir / "devkit" / "cars_meta.mat")
            self.classes = classes
        require_path(self.dataset_dir / IMAGES[split], f"the {split} images", f"Get them from {CARS_SOURCES}.")
        paths, labels = read_cars_annotations(self.dataset_dir, split)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{self.dataset_dir / ANNOTATIONS[split]} has classes outside 1..{self.num_classes}")
        train = split == "train"
        return listed_files_dataset(
            paths, labels, self.transform(train=train), train=train, what=f"{self.dataset_dir} {split}"
        )
