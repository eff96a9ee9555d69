"""CIFAR-10 and CIFAR-100 from the official python pickles, read with pickle and numpy (the SPA study's datasets,
paper/structured-pruning-adapters.md).

On-disk layout (the extracted official archives, as torchvision also reads them)::

    <root>/cifar-10-batches-py/data_batch_{1..5}, test_batch, batches.meta
    <root>/cifar-100-python/train, test, meta

Each batch is a pickled dict: ``data`` (``uint8 (N, 3072)``, the red, green and blue planes of 32 x 32 images)
and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100, whose 20 coarse labels are not used). The meta files
name the classes (``label_names`` / ``fine_label_names``). 50,000 training and 10,000 test images.
Nothing is downloaded here: ``datamodules/README.md`` says where to get the archives.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.images import ArrayImageDataset, ImageDataModule
from datamodules.robust import require_path

__all__ = ["CIFAR", "CIFAR10DataModule", "CIFAR100DataModule", "CifarFormat", "read_cifar", "read_cifar_classes"]


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant keeps its files and which keys hold its labels and class names."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    url: str


CIFAR = {
    "cifar10": CifarFormat(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": CifarFormat(
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}


def _load_pickle(path: Path) -> dict[str, object]:
    """A CIFAR pickle as a dict with str keys.

    The official files were written by Python 2: ``latin1`` decodes their str keys to str (torchvision's
    choice); files re-pickled from ``encoding="bytes"`` loads have bytes keys, which are decoded here too.
    """
    try:
        with open(path, "rb") as f:
            entries = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path} is not a readable CIFAR pickle ({error}); download and extract it again") from error
    if not isinstance(entries, dict):
        raise ValueError(f"{path} holds a {type(entries).__name__}, not the dict of a CIFAR batch")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entries.items()}


def _require_folder(root: Path, name: str) -> Path:
    fmt = CIFAR[name]
    folder = Path(root) / fmt.folder
    require_path(
        folder,
        f"the extracted official python archive of {name} ({fmt.folder}/ with "
        f"{', '.join((*fmt.train_files, *fmt.test_files, fmt.meta_file))})",
        f"Download {fmt.url} and extract it into {Path(root)}.",
    )
    return folder


def read_cifar(root: str | Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images ``uint8 (N, 32, 32, 3)`` and labels ``int64 (N,)`` of ``split`` (``train`` or ``test``)."""
    if name not in CIFAR:
        raise ValueError(f"name must be one of {sorted(CIFAR)}, got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    fmt, folder = CIFAR[name], _require_folder(Path(root), name)
    images, labels = [], []
    for filename in fmt.train_files if split == "train" else fmt.test_files:
        path = folder / filename
        require_path(path, f"a batch of {name}", f"The archive ({fmt.url}) seems incompletely extracted.")
        batch = _load_pickle(path)
        if "data" not in batch or fmt.label_key not in batch:
            raise ValueError(f"{path} lacks the keys 'data' and {fmt.label_key!r} (has {sorted(batch)})")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch[fmt.label_key]):
            raise ValueError(f"{path}: expected data (N, 3072) and N labels, got {data.shape}")
        # rows are [R plane | G plane | B plane], each 32 x 32 row-major
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[fmt.label_key], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def read_cifar_classes(root: str | Path, name: str) -> list[str]:
    """The class names in label order, from the meta file."""
    fmt = CIFAR[name]
    path = _require_folder(Path(root), name) / fmt.meta_file
    require_path(path, f"the class names of {name}", f"The archive ({fmt.url}) seems incompletely extracted.")
    meta = _load_pickle(path)
    if fmt.names_key not in meta:
        raise ValueError(f"{path} lacks the key {fmt.names_key!r} (has {sorted(meta)})")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[fmt.names_key]]


class _CifarDataModule(ImageDataModule):
    normalisation = "cifar"
    native_size = 32
    cifar: str

    def recipe(self) -> str:
        # arXiv-era CIFAR-10 transforms; CIFAR-100 came later and is given the same ones under "arxiv"
        return "pad_crop" if self.transforms == "arxiv" else "crop"

    def _build(self, split: str) -> ArrayImageDataset:
        if self.classes is None:
            classes = read_cifar_classes(self.root, self.cifar)
            self._check_num_classes(len(classes), self.root / CIFAR[self.cifar].folder / CIFAR[self.cifar].meta_file)
            self.classes = classes
        images, labels = read_cifar(self.root, self.cifar, split)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"{self.cifar} {split}: labels outside [0, {self.num_classes}) in {self.root}")
        return ArrayImageDataset(images, labels, self.transform(train=split == "train"))


class CIFAR10DataModule(_CifarDataModule):
    """CIFAR-10 (10 classes, 50,000 / 10,000 images) from ``<root>/cifar-10-batches-py``, CIFAR normalisation.

    ``transforms="head"``: RandomResizedCrop(S) + flip; test Resize(int(256/224·S)) then Resize(S), the published
    quirk (no centre crop). ``transforms="arxiv"`` (Table 1): RandomCrop(32, padding=4) + flip;
    test images as they are. Defaults: 32 pixels, batch size 64 (paper/structured-pruning-adapters.md, ResNet-50).
    """

    dataset_name = "CIFAR-10"
    cifar = "cifar10"

    def __init__(
        self,
        *,
        root: str | Path = "data",
        num_classes: int = 10,
        batch_size: int = 64,
        num_workers: int | None = None,
        image_size: int = 32,
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

    def recipe(self) -> str:
        return "pad_crop" if self.transforms == "arxiv" else "crop_resize_eval"


class CIFAR100DataModule(_CifarDataModule):
    """CIFAR-100 (100 fine classes, 50,000 / 10,000 images) from ``<root>/cifar-100-python``, CIFAR normalisation.

    ``transforms="head"``: RandomResizedCrop(S) + flip; test Resize(int(256/224·S)) + CenterCrop(S).
    ``transforms="arxiv"``: the arXiv-era CIFAR-10 transforms (CIFAR-100 was added after that version).
    Defaults: 32 pixels, batch size 48 (paper/structured-pruning-adapters.md, ResNet-50).
    """

    dataset_name = "CIFAR-100"
    cifar = "cifar100"

    def __init__(
        self,
        *,
        root: str | Path = "data",
        num_classes: int = 100,
        batch_size: int = 48,
        num_workers: int | None = None,
        image_size: int = 32,
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
