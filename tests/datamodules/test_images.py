"""SPA image datamodules on tiny datasets written in the real formats: sizes, labels, splits, transforms (both
variants, against the published torchvision pipelines), normalisation, loaders, skipped files, missing roots."""

from __future__ import annotations

import ast
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from datamodules.cars import StanfordCarsDataModule
from datamodules.catsdogs import CatsDogsDataModule, catsdogs_split, list_pet_images
from datamodules.cifar import CIFAR10DataModule, CIFAR100DataModule, read_cifar
from datamodules.digits_transfer import DigitsTransferDataModule, load_digit_images, stratified_split
from datamodules.flowers import Flowers102DataModule
from datamodules.images import NORMALISATIONS, ImageFileDataset, image_transform
from tests.datamodules.helpers import (
    colour,
    write_cars,
    write_cifar10,
    write_cifar100,
    write_flowers,
    write_jpg,
    write_pet_images,
    write_rgba_as_jpg_name,
    write_truncated_jpg,
)

REPO = Path(__file__).resolve().parents[2]
CIFAR_MEAN, CIFAR_STD = (torch.tensor(v).view(3, 1, 1) for v in NORMALISATIONS["cifar"])
IMAGENET_MEAN, IMAGENET_STD = (torch.tensor(v).view(3, 1, 1) for v in NORMALISATIONS["imagenet"])


def _pixels(x: torch.Tensor, normalisation: str = "imagenet") -> torch.Tensor:
    """Normalised images back to 0..255 levels."""
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in NORMALISATIONS[normalisation])
    return (x * std + mean) * 255


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader)


# --- transforms ------------------------------------------------------------------------------------------


@pytest.fixture
def photo() -> Image.Image:
    """A non-square random RGB image (so resizing and cropping both matter)."""
    return Image.fromarray(np.random.default_rng(3).integers(0, 256, (45, 60, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("recipe", "published"),
    [
        # HEAD, every dataset but CIFAR-10: Resize(int(256/224*S)) + CenterCrop(S)
        ("crop", [T.Resize(int(256 / 224 * 24)), T.CenterCrop(24)]),
        # HEAD CIFAR-10 quirk: a second Resize(S) instead of the crop
        ("crop_resize_eval", [T.Resize(int(256 / 224 * 24)), T.Resize(24)]),
    ],
)
def test_eval_transforms_equal_the_published_torchvision_pipelines(photo, recipe, published):
    ours = image_transform(train=False, image_size=24, normalisation="cifar", recipe=recipe)(photo)
    theirs = T.Compose([*published, T.ToTensor(), T.Normalize(*NORMALISATIONS["cifar"])])(photo)
    assert type(ours) is torch.Tensor and ours.dtype == torch.float32
    # the same PIL resampling; only ToTensor's x / 255 and ToDtype's x * (1 / 255) round differently (1e-7, while
    # one grey level is 0.02 here)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_head_cifar10_test_images_are_resized_not_cropped(photo):
    """At the CIFAR-10 quirk a non-square image keeps its aspect ratio; the centre crop makes it square."""
    assert image_transform(train=False, image_size=24, normalisation="cifar", recipe="crop_resize_eval")(
        photo
    ).shape == (3, 24, 32)
    assert image_transform(train=False, image_size=24, normalisation="cifar", recipe="crop")(photo).shape == (3, 24, 24)


def test_arxiv_cifar_test_transform_only_normalises():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = image_transform(train=False, image_size=32, normalisation="cifar", recipe="pad_crop", native_size=32)(
        Image.fromarray(image)
    )
    expected = (torch.from_numpy(image).permute(2, 0, 1) / 255 - CIFAR_MEAN) / CIFAR_STD
    torch.testing.assert_close(out, expected)


def test_arxiv_cifar_train_transform_is_a_padded_random_crop_with_flips():
    image = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).permute(2, 0, 1)
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    candidates = {}
    for top in range(9):
        for left in range(9):
            crop = padded[:, top : top + 32, left : left + 32]
            candidates[(top, left, False)], candidates[(top, left, True)] = crop, crop.flip(-1)
    transform = image_transform(train=True, image_size=32, normalisation="cifar", recipe="pad_crop", native_size=32)
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        out = _pixels(transform(Image.fromarray(image.permute(1, 2, 0).numpy())), "cifar").round()
        matches = [k for k, c in candidates.items() if torch.equal(out, c.float())]
        assert matches, "a training image is not a 4-pixel-padded crop (or its mirror) of the original"
        seen.add(matches[0])
    assert len(seen) > 10 and {flip for *_, flip in seen} == {False, True}


def test_head_train_transform_is_random_and_square(photo):
    transform = image_transform(train=True, image_size=20, normalisation="imagenet", recipe="crop")
    torch.manual_seed(0)
    outputs = [transform(photo) for _ in range(4)]
    assert all(o.shape == (3, 20, 20) and o.dtype == torch.float32 for o in outputs)
    assert not torch.equal(outputs[0], outputs[1])


def test_unknown_transform_settings_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="recipe"):
        image_transform(train=True, image_size=8, normalisation="cifar", recipe="bogus")
    with pytest.raises(ValueError, match="normalisation"):
        image_transform(train=True, image_size=8, normalisation="mnist")
    with pytest.raises(ValueError, match="transforms must be one of"):
        CIFAR10DataModule(root=tmp_path, transforms="iclr")


# --- CIFAR -----------------------------------------------------------------------------------------------


def test_cifar10_reads_the_official_pickles(tmp_path):
    written = write_cifar10(tmp_path, per_batch=4, num_test=6)
    dm = CIFAR10DataModule(root=tmp_path, batch_size=4, num_workers=0, transforms="arxiv")
    dm.setup()
    assert dm.num_classes == 10 and dm.classes[:2] == ["airplane", "automobile"]
    assert len(dm.dataset("train")) == 20 and len(dm.dataset("test")) == 6
    # arXiv-era test images are only normalised: the exact written pixels (plane layout) and labels come back
    images, labels = torch.cat([x for x, _ in dm.test_dataloader()]), torch.cat([y for _, y in dm.test_dataloader()])
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    torch.testing.assert_close(
        _pixels(images, "cifar"), torch.from_numpy(written["test"][0]).permute(0, 3, 1, 2).float()
    )
    assert labels.tolist() == written["test"][1].tolist()
    train_labels = sorted(int(y) for _, y in dm.dataset("train"))
    assert train_labels == sorted(written["train"][1].tolist())


def test_cifar10_head_transforms_and_loaders(tmp_path):
    write_cifar10(tmp_path, per_batch=4, num_test=6)
    dm = CIFAR10DataModule(root=tmp_path, batch_size=4, num_workers=0)
    dm.setup("fit")
    train = _batches(dm.train_dataloader())
    assert len(train) == 5 and all(x.shape == (4, 3, 32, 32) and y.shape == (4,) for x, y in train)
    # evaluation keeps the ragged last batch unless the published drop_last is asked for
    assert [len(y) for _, y in dm.val_dataloader()] == [4, 2]
    assert [len(y) for _, y in dm.test_dataloader()] == [4, 2]
    dropping = CIFAR10DataModule(root=tmp_path, batch_size=4, num_workers=0, drop_last_eval=True)
    assert [len(y) for _, y in dropping.test_dataloader()] == [4]
    # the val loader is the test split
    assert dm.val_dataloader().dataset is dm.test_dataloader().dataset is dm.dataset("test")


def test_cifar10_head_test_transform_resizes_twice(tmp_path):
    written = write_cifar10(tmp_path, per_batch=1, num_test=2)
    dm = CIFAR10DataModule(root=tmp_path, num_workers=0, batch_size=1)
    image = Image.fromarray(written["test"][0][0])
    published = T.Compose([T.Resize(36), T.Resize(32), T.ToTensor(), T.Normalize(*NORMALISATIONS["cifar"])])
    torch.testing.assert_close(dm.dataset("test")[0][0], published(image), atol=1e-6, rtol=0)
    assert not torch.allclose(_pixels(dm.dataset("test")[0][0], "cifar"), T.PILToTensor()(image).float(), atol=1)


def test_rank_loader_is_the_training_split_with_training_augmentations(tmp_path):
    write_cifar10(tmp_path, per_batch=4, num_test=6)
    dm = CIFAR10DataModule(root=tmp_path, batch_size=4, num_workers=0, transforms="arxiv")
    rank = dm.rank_dataloader()
    assert rank.dataset is dm.dataset("train") and rank.drop_last
    torch.manual_seed(0)
    draws = [rank.dataset[0][0] for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:]), "ranking images are not augmented"
    assert torch.equal(dm.dataset("test")[0][0], dm.dataset("test")[0][0])
    assert sum(len(y) for _, y in rank) == 20


def test_training_with_fewer_images_than_a_batch_is_an_error(tmp_path):
    write_cifar10(tmp_path, per_batch=1, num_test=2)
    with pytest.raises(ValueError, match="fewer than batch_size=8"):
        CIFAR10DataModule(root=tmp_path, batch_size=8, num_workers=0).train_dataloader()


def test_cifar100_uses_the_fine_labels(tmp_path):
    written = write_cifar100(tmp_path, num_train=10, num_test=5)
    dm = CIFAR100DataModule(root=tmp_path, batch_size=5, num_workers=0)
    assert dm.num_classes == 100 and dm.hparams.batch_size == 5
    assert [int(y) for _, y in dm.dataset("test")] == written["test"][1].tolist()
    assert len(dm.dataset("train")) == 10 and dm.classes[20] == "fine20"
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 3, 32, 32) and y.dtype == torch.int64


def test_cifar_pickles_with_bytes_keys_read_the_same(tmp_path):
    str_keys = write_cifar100(tmp_path / "a", bytes_keys=False)
    bytes_keys = write_cifar100(tmp_path / "b", bytes_keys=True)
    for root, written in ((tmp_path / "a", str_keys), (tmp_path / "b", bytes_keys)):
        images, labels = read_cifar(root, "cifar100", "train")
        assert np.array_equal(images, written["train"][0]) and labels.tolist() == written["train"][1].tolist()


def test_missing_cifar_folder_names_the_path_and_the_download(tmp_path):
    dm = CIFAR10DataModule(root=tmp_path / "nowhere", num_workers=0)
    with pytest.raises(FileNotFoundError) as error:
        dm.setup()
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message and "README.md" in message


def test_incomplete_cifar_folder_names_the_missing_batch(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        CIFAR10DataModule(root=tmp_path, num_workers=0).setup()


def test_cifar_with_other_classes_than_expected_is_an_error(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"describes 10 classes.*num_classes=100"):
        CIFAR10DataModule(root=tmp_path, num_classes=100, num_workers=0).setup()


# --- Flowers-102 -----------------------------------------------------------------------------------------


@pytest.fixture
def flowers(tmp_path: Path) -> Path:
    # 10 images; image i has class labels[i - 1] (1-based, up to 102)
    write_flowers(tmp_path, labels=[5, 1, 102, 7, 7, 3, 2, 9, 9, 1], trnid=[2, 4], valid=[9], tstid=[1, 3, 5, 6, 10])
    return tmp_path


def test_flowers_train_is_trnid_plus_valid_and_labels_start_at_zero(flowers):
    dm = Flowers102DataModule(root=flowers, batch_size=2, num_workers=0, image_size=24)
    dm.setup()
    train, test = dm.dataset("train"), dm.dataset("test")
    assert [Path(p).name for p in train.paths] == ["image_00002.jpg", "image_00004.jpg", "image_00009.jpg"]
    assert train.labels.tolist() == [0, 6, 8]
    assert [Path(p).name for p in test.paths] == [f"image_{i:05d}.jpg" for i in (1, 3, 5, 6, 10)]
    assert test.labels.tolist() == [4, 101, 6, 2, 0] and dm.num_classes == 102
    # test images of several sizes come out S x S, with the uniform colour of their file, ImageNet-normalised
    for (x, _), i in zip(test, (1, 3, 5, 6, 10)):
        assert x.shape == (3, 24, 24) and x.dtype == torch.float32
        torch.testing.assert_close(_pixels(x).mean(dim=(1, 2)), torch.tensor(colour(i)).float(), atol=3, rtol=0)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 24, 24) and y.dtype == torch.int64


def test_flowers_missing_images_are_dropped_counted_and_warned(flowers, caplog):
    (flowers / "flowers-102" / "jpg" / "image_00005.jpg").unlink()
    dm = Flowers102DataModule(root=flowers, num_workers=0, image_size=16)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert len(dm.dataset("test")) == 4 and dm.dataset("test").missing == ["image_00005.jpg"]
    assert (
        dm.skipped()["test"] == {"missing": 1, "unreadable": 0, "unknown_label": 0, "duplicate": 0, "failed": 0}
        and dm.num_skipped == 1
    )
    assert sum("1 of 5 images are missing" in r.message and "image_00005.jpg" in r.message for r in caplog.records) == 1


def test_flowers_missing_files_name_the_path_and_the_download(tmp_path, flowers):
    with pytest.raises(FileNotFoundError, match=r"flowers-102/jpg.*102flowers\.tgz"):
        Flowers102DataModule(root=tmp_path / "empty", num_workers=0).setup()
    (flowers / "flowers-102" / "setid.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"setid\.mat.*robots\.ox\.ac\.uk"):
        Flowers102DataModule(root=flowers, num_workers=0).setup()


# --- Stanford Cars ---------------------------------------------------------------------------------------


@pytest.fixture
def cars(tmp_path: Path) -> Path:
    write_cars(
        tmp_path,
        train=[("00001.jpg", 1), ("00002.jpg", 196), ("00003.jpg", 42), ("00004.jpg", 1)],
        test=[("00001.jpg", 17)],  # one annotation: a 1 x 1 struct that loadmat squeezes to a scalar
    )
    return tmp_path


def test_cars_reads_torchvision_layout(cars):
    dm = StanfordCarsDataModule(root=cars, batch_size=2, num_workers=0, image_size=16)
    dm.setup()
    assert dm.num_classes == 196 and len(dm.classes) == 196 and dm.classes[0] == "Make Model 0 2012"
    train, test = dm.dataset("train"), dm.dataset("test")
    assert train.labels.tolist() == [0, 195, 41, 0] and test.labels.tolist() == [16]
    assert Path(test.paths[0]).parent.name == "cars_test"
    x, _ = test[0]
    # CIFAR statistics, as the published code (uniform colour 0 of the writer)
    torch.testing.assert_close(_pixels(x, "cifar").mean(dim=(1, 2)), torch.tensor(colour(0)).float(), atol=3, rtol=0)
    assert [tuple(x.shape) for x, _ in dm.train_dataloader()] == [(2, 3, 16, 16)] * 2


def test_cars_errors_name_what_is_missing(cars, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"stanford_cars/devkit.*kaggle"):
        StanfordCarsDataModule(root=tmp_path / "none", num_workers=0).setup()
    write_cars(tmp_path / "small", train=[("a.jpg", 1)], test=[("b.jpg", 1)], num_classes=10)
    with pytest.raises(ValueError, match="describes 10 classes"):
        StanfordCarsDataModule(root=tmp_path / "small", num_workers=0).setup()
    (cars / "stanford_cars" / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"cars_test_annos_withlabels\.mat"):
        StanfordCarsDataModule(root=cars, num_workers=0).setup("test")


# --- Cats & Dogs -----------------------------------------------------------------------------------------


def test_catsdogs_split_is_the_datasetops_one():
    """datasetops: ``.shuffle(seed=42)`` seeds Python's global generator and permutes; ``.split([0.7, 0.3])``
    permutes again with the same generator and cuts after round(0.7 N) (LukasHedegaard/datasetops, dataset.py)."""
    samples = [f"file{i}" for i in range(24998)]
    random.seed(42)
    ids = list(range(len(samples)))
    random.shuffle(ids)
    shuffled = [samples[i] for i in ids]
    ids = list(range(len(shuffled)))
    random.shuffle(ids)
    cut = round(0.7 * len(shuffled))
    expected = [shuffled[i] for i in ids[:cut]], [shuffled[i] for i in ids[cut:]]
    train, test = catsdogs_split(samples, seed=42, train_fraction=0.7)
    assert (len(train), len(test)) == (17499, 7499)
    assert (train, test) == expected
    assert catsdogs_split(samples, seed=1)[0] != train


def test_catsdogs_listing_drops_the_published_files(tmp_path):
    images = write_pet_images(tmp_path, num_cats=3, num_dogs=2)
    (images / "Cat" / ".DS_Store").write_bytes(b"mac")
    samples, dropped = list_pet_images(images)
    assert [(p.parent.name, p.name, label) for p, label in samples] == [
        ("Cat", "0.jpg", 0),
        ("Cat", "1.jpg", 0),
        ("Cat", "2.jpg", 0),
        ("Dog", "0.jpg", 1),
        ("Dog", "1.jpg", 1),
    ]
    assert sorted(dropped) == ["Cat/666.jpg", "Cat/Thumbs.db", "Dog/11702.jpg", "Dog/Thumbs.db"]


def test_catsdogs_split_sizes_truncation_and_colour_modes(tmp_path):
    images = write_pet_images(tmp_path, num_cats=12, num_dogs=12)
    write_jpg(images / "Cat" / "0.jpg", (90, 90, 90), mode="L")  # a grey image
    write_rgba_as_jpg_name(images / "Dog" / "0.jpg", (200, 60, 20, 5))  # RGBA, nearly transparent
    full = CatsDogsDataModule(root=tmp_path, max_train=None, max_test=None, num_workers=0, image_size=16, batch_size=4)
    full.setup()
    # 24 images: round(0.7 * 24) = 17 / 7, and the classes of the listing
    assert (len(full.dataset("train")), len(full.dataset("test"))) == (17, 7) and full.num_skipped == 0
    assert sorted(full.dropped) == ["Cat/666.jpg", "Cat/Thumbs.db", "Dog/11702.jpg", "Dog/Thumbs.db"]
    everything = list(full.dataset("train").paths) + list(full.dataset("test").paths)
    assert len(set(everything)) == 24 and full.classes == ["Cat", "Dog"]
    # truncation keeps the first images of each part, in split order
    small = CatsDogsDataModule(root=tmp_path, max_train=5, max_test=3, num_workers=0, image_size=16, batch_size=4)
    assert list(small.dataset("train").paths) == list(full.dataset("train").paths[:5])
    assert list(small.dataset("test").paths) == list(full.dataset("test").paths[:3])
    # grey → 3 equal channels; RGBA → its RGB, alpha ignored; labels from the folder
    for path, expected, label in (
        (images / "Cat" / "0.jpg", (90, 90, 90), 0),
        (images / "Dog" / "0.jpg", (200, 60, 20), 1),
    ):
        dataset = full.dataset("train") if str(path) in full.dataset("train").paths else full.dataset("test")
        index = list(dataset.paths).index(str(path))
        dataset.transform = full.transform(train=False)
        x, y = dataset[index]
        assert x.shape == (3, 16, 16) and y == label
        torch.testing.assert_close(_pixels(x).mean(dim=(1, 2)), torch.tensor(expected).float(), atol=3, rtol=0)


def test_catsdogs_unreadable_images_are_replaced_counted_and_warned_once(tmp_path, caplog):
    images = write_pet_images(tmp_path, num_cats=10, num_dogs=10)
    train, _ = catsdogs_split(list_pet_images(images)[0])
    bad = [train[1][0], train[3][0]]  # two of the first five training images
    for path in bad:
        path.write_bytes(b"\x00 corrupt")
    dm = CatsDogsDataModule(root=tmp_path, max_train=5, max_test=3, num_workers=0, image_size=16, batch_size=2)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    dataset = dm.dataset("train")
    assert len(dataset) == 5 and list(dataset.paths) == [str(p) for p, _ in train if p not in bad][:5]
    assert dataset.unreadable == [f"Cat/{p.name}" if p.parent.name == "Cat" else f"Dog/{p.name}" for p in bad]
    assert dm.num_skipped == 2 and dm.skipped()["train"] == {
        "missing": 0,
        "unreadable": 2,
        "unknown_label": 0,
        "duplicate": 0,
        "failed": 0,
    }
    warnings = [r.message for r in caplog.records if "cannot be read" in r.message]
    assert len(warnings) == 1 and "2 of 7 images" in warnings[0]


def test_images_that_fail_to_decode_while_loading_are_left_out_of_evaluation_and_counted(tmp_path):
    paths = [write_jpg(tmp_path / f"{i}.jpg", colour(i)) for i in range(3)]
    write_truncated_jpg(paths[1])  # the header is intact: only decoding finds it broken
    transform = image_transform(train=False, image_size=8, normalisation="imagenet")
    dataset = ImageFileDataset(paths, [0, 1, 2], transform, train=False)
    assert dataset[1] is None  # evaluation: left out by the loader's collate, never replaced
    assert dataset.num_failed == 1 and dataset.num_skipped == 1
    x, label = dataset[2]
    assert label == 2
    torch.testing.assert_close(_pixels(x).mean(dim=(1, 2)), torch.tensor(colour(2)).float(), atol=3, rtol=0)


def test_a_run_of_unreadable_images_stops_with_the_first_file(tmp_path):
    paths = [tmp_path / f"{i}.jpg" for i in range(3)]
    for path in paths:
        path.write_bytes(b"not a jpg")
    transform = image_transform(train=False, image_size=8, normalisation="cifar")
    dataset = ImageFileDataset(paths, [0, 1, 2], transform, train=True)  # training substitutes at random
    dataset.max_retries = 4
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match=r"5 images in a row could not be read, starting at .*1\.jpg"):
        dataset[1]
    assert dataset.num_failed == 3  # known bad files are not decoded twice: each counts once


def _imports(module: str) -> set[str]:
    """Modules imported by ``module`` and, transitively, by the ``datamodules`` modules it imports (by reading
    the source: importing would not tell, other tests may have imported anything already)."""
    found, todo = set(), [module]
    while todo:
        path = REPO / (todo.pop().replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in set(names) - found:
                found.add(name)
                if name.startswith("datamodules."):
                    todo.append(name)
    return found


@pytest.mark.parametrize("module", ["cifar", "flowers", "cars", "catsdogs", "digits_transfer"])
def test_image_datamodules_need_no_video_decoder(module):
    """decord has x86_64 wheels only (pyproject.toml): the image datamodules must not need it."""
    imported = _imports(f"datamodules.{module}")
    assert "datamodules.images" in imported and not {"decord", "datamodules.video"} & imported


def test_missing_catsdogs_folder_names_the_path_and_the_download(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        CatsDogsDataModule(root=tmp_path, num_workers=0).setup()
    assert "catsanddogs/PetImages" in str(error.value) and "kagglecatsanddogs_5340.zip" in str(error.value)


# --- digits transfer -------------------------------------------------------------------------------------


def test_digit_images_are_scikit_learns():
    from sklearn.datasets import load_digits

    pixels, labels = load_digit_images()
    digits = load_digits()
    assert pixels.shape == (1797, 8, 8) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, digits.images / 16, atol=1e-7)
    assert labels.tolist() == digits.target.tolist()


def test_digits_tasks_have_disjoint_classes_and_reindexed_labels():
    pretrain = DigitsTransferDataModule(task="pretrain", batch_size=16)
    adapt = DigitsTransferDataModule(task="adapt", batch_size=16)
    assert pretrain.num_classes == adapt.num_classes == 5
    assert pretrain.task_digits == [0, 1, 2, 3, 4] and adapt.task_digits == [5, 6, 7, 8, 9]
    _, digits = load_digit_images()
    for dm, chosen in ((pretrain, [0, 1, 2, 3, 4]), (adapt, [5, 6, 7, 8, 9])):
        dm.setup()
        train, test = dm.dataset("train"), dm.dataset("test")
        assert len(train) + len(test) == int(np.isin(digits, chosen).sum())
        assert sorted(set(train.labels.tolist())) == sorted(set(test.labels.tolist())) == [0, 1, 2, 3, 4]
        x, y = next(iter(dm.train_dataloader()))
        assert x.shape == (16, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey repeated to 3 channels
    three = DigitsTransferDataModule(task="adapt", pretrain_classes=(0, 1, 2), image_size=12)
    assert three.num_classes == 7 and three.task_digits == [3, 4, 5, 6, 7, 8, 9]
    assert three.dataset("test")[0][0].shape == (3, 12, 12)


def test_digits_split_is_stratified_and_set_by_the_seed():
    labels = load_digit_images()[1]
    train, test = stratified_split(labels, test_fraction=0.3, seed=0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)
    for digit in range(10):
        assert (labels[test] == digit).sum() == round(0.3 * (labels == digit).sum())
    again = stratified_split(labels, test_fraction=0.3, seed=0)
    other = stratified_split(labels, test_fraction=0.3, seed=1)
    assert np.array_equal(again[1], test) and not np.array_equal(other[1], test)
    a, b = DigitsTransferDataModule(seed=3), DigitsTransferDataModule(seed=3)
    assert torch.equal(a.dataset("test").images, b.dataset("test").images)
    # one seed also fixes the shuffling
    assert [y.tolist() for _, y in a.train_dataloader()] == [y.tolist() for _, y in b.train_dataloader()]
    assert not torch.equal(DigitsTransferDataModule(seed=4).dataset("test").images, a.dataset("test").images)


def test_digits_are_normalised_with_the_task_training_statistics_and_shifted_in_training():
    dm = DigitsTransferDataModule(task="adapt")
    train = dm.dataset("train")
    plain = torch.stack([dm.transform(train=False)(image) for image in train.images])
    assert abs(plain.mean().item()) < 1e-4 and abs(plain.std().item() - 1) < 1e-3
    assert dm.mean == pytest.approx(float(train.images.mean()))
    # a training sample is the plain image shifted by up to 16 // 8 = 2 pixels with background padding
    background = (0 - dm.mean) / dm.std
    padded = torch.nn.functional.pad(plain[0], (2, 2, 2, 2), value=background)
    crops = [padded[:, t : t + 16, s : s + 16] for t in range(5) for s in range(5)]
    torch.manual_seed(0)
    shifts = set()
    for _ in range(30):
        x, _ = train[0]
        matches = [i for i, c in enumerate(crops) if torch.allclose(x, c, atol=1e-5)]
        assert matches
        shifts.add(matches[0])
    assert len(shifts) > 5
    x, _ = dm.dataset("test")[0]
    assert torch.equal(x, dm.transform(train=False)(dm.dataset("test").images[0]))


def test_digits_reject_bad_tasks():
    with pytest.raises(ValueError, match="task must be one of"):
        DigitsTransferDataModule(task="finetune")
    with pytest.raises(ValueError, match="at least 2"):
        DigitsTransferDataModule(task="adapt", pretrain_classes=range(9))
    with pytest.raises(ValueError, match="distinct digits"):
        DigitsTransferDataModule(pretrain_classes=(1, 1, 2))
    with pytest.raises(ValueError, match="num_classes=10"):
        DigitsTransferDataModule(num_classes=10)
