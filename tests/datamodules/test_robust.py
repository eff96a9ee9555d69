"""The robustness layer every datamodule shares: skip-and-count, path checks, warnings, normalisations; and that
only the modules that decode video import a video decoder."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.images import ImageDecodeError, ImageFileDataset
from datamodules.robust import (
    NORMALISATIONS,
    README,
    DecodeError,
    SharedFlags,
    SkippingDataset,
    SkippingLoader,
    normalisation_stats,
    require_path,
    skip_counts,
    warn_skipped,
)
from datamodules.video import VideoDecodeError
from tests.conftest import REPO

# --- skipping and counting -------------------------------------------------------------------------


class _Flaky(SkippingDataset):
    """Index i returns i, except the ``bad`` ones, which raise like an unreadable video."""

    def __init__(self, n: int, bad: set[int], random: bool = False) -> None:
        super().__init__()
        self.n, self.bad, self.random = n, bad, random

    def __len__(self) -> int:
        return self.n

    def describe(self, index: int) -> str:
        return f"video{index}.mp4"

    def load(self, index: int):
        if index in self.bad:
            raise VideoDecodeError(f"cannot decode video{index}.mp4")
        return torch.tensor(index), index


def test_an_unreadable_sample_is_left_out_of_evaluation_logged_and_counted(caplog):
    dataset = _Flaky(5, bad={1, 2})
    with caplog.at_level(logging.WARNING):
        assert dataset[1] is None and dataset[2] is None  # evaluation: left out, never replaced
    assert dataset.num_failed == 2 and dataset.num_skipped == 2
    assert "video1.mp4" in caplog.text and "video2.mp4" in caplog.text
    assert dataset[1] is None and dataset.num_failed == 2  # known bad files are not decoded (or counted) again
    assert dataset.failed_samples() == ["video1.mp4", "video2.mp4"]
    assert [labels.tolist() for _x, labels in SkippingLoader(dataset, batch_size=2)] == [[0], [3], [4]]


def test_training_substitutes_a_random_sample():
    torch.manual_seed(0)
    dataset = _Flaky(50, bad={0}, random=True)
    assert dataset[0][1] != 0 and dataset.num_failed == 1


def test_too_many_failures_in_training_raise_naming_the_file():
    dataset = _Flaky(4, bad={0, 1, 2, 3}, random=True)
    with pytest.raises(RuntimeError, match=r"video0\.mp4"):
        dataset[0]


def test_other_errors_are_not_swallowed():
    class Buggy(_Flaky):
        def load(self, index):
            raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):
        Buggy(3, bad=set())[0]


def test_every_decoder_error_is_a_decode_error():
    assert issubclass(ImageDecodeError, DecodeError) and issubclass(VideoDecodeError, DecodeError)
    assert issubclass(ImageFileDataset, SkippingDataset)


# spawned workers re-import torch (~30 s on 2 busy cores): slow
@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_failures_in_dataloader_workers_are_counted_in_the_main_process(context):
    dataset = _Flaky(8, bad={2, 3, 5})
    loader = SkippingLoader(
        dataset, batch_size=2, num_workers=2, multiprocessing_context=context, persistent_workers=True
    )
    # one epoch reads every index once: the bad ones are left out, each counted once over the workers
    for _epoch in range(2):
        assert sorted(torch.cat([b[1] for b in loader]).tolist()) == [0, 1, 4, 6, 7]
    assert dataset.num_failed == 3
    if context == "spawn":
        return  # the flags reached the spawned workers; the rest needs no second start of them
    # training substitutes random samples (which may be bad too, in another worker): still one count per file
    torch.manual_seed(0)
    training = _Flaky(8, bad={2, 3, 5}, random=True)
    loader = DataLoader(training, batch_size=4, num_workers=2, multiprocessing_context=context, shuffle=True)
    assert sum(len(b[1]) for b in loader) == 8 and training.num_failed == 3


def test_shared_flags_copies_detach_with_their_flags():
    flags = SharedFlags(4)
    flags.set(1)
    copy = pickle.loads(pickle.dumps(flags))
    copy.set(3)
    assert (flags.indices(), copy.indices()) == ([1], [1, 3]) and 1 in flags and 3 not in flags


def test_skip_counts_of_a_skipping_and_of_a_plain_dataset():
    dataset = _Flaky(4, bad={1})
    dataset.missing, dataset.unreadable = ["a.mp4", "b.mp4"], ["c.mp4"]
    dataset[1]
    dataset.unknown_label, dataset.duplicate = ["d.mp4"], ["e.mp4", "e.mp4"]
    assert skip_counts(dataset) == {"missing": 2, "unreadable": 1, "unknown_label": 1, "duplicate": 2, "failed": 1}
    assert dataset.num_skipped == 7
    assert set(skip_counts(torch.utils.data.TensorDataset(torch.zeros(2))).values()) == {0}


# --- path checks and warnings ----------------------------------------------------------------------


def test_missing_dataset_dir_names_the_path_and_the_readme(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        require_path(tmp_path / "nowhere", "data/...", directory=True)
    assert str(tmp_path / "nowhere") in str(error.value) and str(README) in str(error.value)
    assert README.is_file()


def test_require_path_says_what_was_expected_and_how_to_get_it(tmp_path):
    (tmp_path / "file").write_text("")
    require_path(tmp_path / "file", "a file")  # exists: no error
    with pytest.raises(FileNotFoundError, match=r"file is not a folder: expected a dataset folder\. Download it\."):
        require_path(tmp_path / "file", "a dataset folder", "Download it.", directory=True)
    with pytest.raises(FileNotFoundError, match=r"does not exist: expected x\. Prepare it"):
        require_path(tmp_path / "absent", "x")


def test_one_warning_names_the_number_and_a_few_of_the_skipped_files(caplog):
    with caplog.at_level(logging.WARNING):
        warn_skipped([], 10, "somewhere train")
        warn_skipped([f"{i}.jpg" for i in range(5)], 10, "somewhere train", items="images", reason="cannot be read")
    assert [r.message for r in caplog.records] == [
        "somewhere train: 5 of 10 images cannot be read and skipped (0.jpg, 1.jpg, 2.jpg, ...)"
    ]


# --- normalisations --------------------------------------------------------------------------------


def test_normalisation_stats_and_an_unknown_name():
    assert normalisation_stats("feichtenhofer") == ((0.45,) * 3, (0.225,) * 3)
    assert set(NORMALISATIONS) >= {"cifar", "imagenet", "feichtenhofer", "kopuklu", "none", "torchvision_kinetics"}
    with pytest.raises(ValueError, match=r"normalisation must be one of \['cifar', .*got 'nope'"):
        normalisation_stats("nope")


# --- which modules import a video decoder ------------------------------------------------------------

DECODER_FREE = [
    "datamodules.robust",
    "datamodules.video",
    "datamodules.images",
    "datamodules.cifar",
    "datamodules.flowers",
    "datamodules.cars",
    "datamodules.catsdogs",
    "datamodules.digits_transfer",
    "datamodules.charades",  # JPEG frames, decoded with PIL
    "datamodules.synthetic",
]


def test_only_the_datamodules_that_decode_video_import_decord():
    """decord has x86_64 wheels only (pyproject.toml): importing a datamodule that decodes no video must not need
    it. A fresh interpreter, because this one may have imported anything already."""
    script = (
        "import importlib, sys\n"
        f"for name in {DECODER_FREE!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'decord' not in sys.modules, f'importing {name} imported decord'\n"
        "import datamodules.kinetics\n"
        "assert 'decord' in sys.modules, 'the Kinetics datamodule decodes mp4s with decord'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
