"""THUMOS14 / TVSeries feature datamodules on tiny files in CoOadTR's formats (tests/datamodules/oad_helpers.py)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from lightning_fabric.utilities.data import _set_sampler_epoch

from datamodules.online_detection import OffsetSampler, OnlineDetectionDataModule, StreamDataset, WindowDataset
from datamodules.tvseries_parser import ACTIONS, class_index, parse_gt
from tests.datamodules.oad_helpers import PART, WIDTHS, label, write_data_info, write_gt, write_thumos, write_tvseries

N, Q = 16, 4  # small windows keep the files tiny; the bound and targets do not depend on the sizes
THUMOS = {"val": {"v0": 60, "v1": 170, "v2": 20, "v3": 90}, "test": {"t0": 170, "t1": 50}}
TVSERIES = {"24_ep1": 80, "24_ep2": 60, "Mad_Men_ep3": 70}


@pytest.fixture
def thumos(tmp_path: Path) -> Path:
    write_data_info(tmp_path, (list(THUMOS["val"]), list(THUMOS["test"])), (["24_ep1", "24_ep2"], ["Mad_Men_ep3"]))
    write_thumos(tmp_path, THUMOS)
    return tmp_path


def _module(root: Path, **overrides) -> OnlineDetectionDataModule:
    args = dict(root=root, sequence_len=N, queries=Q, batch_size=4, seed=0) | overrides
    return OnlineDetectionDataModule(**args)


def _step(value: float) -> int:
    """The step index an entry of the self-identifying features encodes (video * 1000 + t + part fraction)."""
    return int(np.floor(value)) % 1000


def test_windows_hold_the_steps_before_their_end_and_target_the_last_step(thumos):
    dm = _module(thumos)
    dm.setup("validate")
    windows = dm.datasets["val"]
    assert isinstance(windows, WindowDataset) and dm.num_classes == 22 and dm.ignore_index == 21
    for index in range(0, len(windows), 7):
        _, end = windows.windows[index]
        features, target, decoder = windows[index]
        assert features.shape == (WIDTHS["rgb"] + WIDTHS["flow"], N) and features.dtype == torch.float32
        assert [_step(v) for v in features[0].tolist()] == list(range(end - N, end))
        assert int(target.argmax()) == label(end - 1, 22) and float(target.sum()) == 1.0
        assert decoder.shape == (22, Q) and decoder.argmax(0).tolist() == [label(t, 22) for t in range(end, end + Q)]


def test_windows_end_before_T_minus_Q_as_the_original(thumos):
    dm = _module(thumos)
    dm.setup("validate")
    windows = dm.datasets["val"]
    ends = windows.windows[windows.windows[:, 0] == 1, 1]  # t1: 50 steps, no Ambiguous step
    assert ends.min() == N and ends.max() == 50 - Q - 1 and len(ends) == 50 - Q - N


def test_ambiguous_targets_are_dropped_and_counted(thumos, caplog):
    with caplog.at_level(logging.INFO, logger="datamodules.online_detection"):
        dm = _module(thumos)
        dm.setup("fit")
    # Ambiguous (21) covers steps 147-153; in v1 (170 steps) and t0 (170 steps) the windows' last steps reach 165
    assert dm.ambiguous_counts() == {"train": 7, "val": 7}
    assert "dropped 7 windows whose target is Ambiguous" in caplog.text
    for name in ("train", "val"):
        windows = dm.datasets[name]
        targets = np.array([int(windows[i][1].argmax()) for i in range(len(windows))])
        assert (targets != 21).all()
    # no window at all in v2 (20 steps < N + Q + 1): named in a warning, not silently lost
    assert dm.datasets["train"].too_short == ["v2"] and "v2" in caplog.text


def test_train_windows_start_at_a_per_video_offset_drawn_once_per_run(thumos):
    dm = _module(thumos)
    dm.setup("fit")
    windows, sampler = dm.datasets["train"], OffsetSampler(dm.datasets["train"], seed=3)
    offsets, orders = sampler.offsets(), set()
    assert ((offsets >= 0) & (offsets < N)).all()
    for epoch in range(4):
        indices = sampler.indices(epoch)
        # every epoch: the same windows (so the same number of batches), in another order
        assert len(set(indices.tolist())) == len(indices) == len(sampler)
        for video in (0, 1, 3):
            starts = np.sort(windows.starts()[indices][windows.windows[indices, 0] == video])
            assert starts[0] == offsets[video] and (starts >= offsets[video]).all()
            all_starts = windows.starts()[windows.windows[:, 0] == video]
            assert set(starts.tolist()) == set(all_starts[all_starts >= offsets[video]].tolist())
        orders.add(tuple(indices.tolist()))
    assert len(orders) == 4  # reshuffled every epoch
    other = OffsetSampler(windows, seed=4).offsets()
    assert (other != offsets).any()  # the seed draws the offsets
    # the same seed and epoch give the same windows in the same order: a resumed run continues as it would have
    again = OffsetSampler(windows, seed=3)
    again.set_epoch(2)
    assert list(again) == sampler.indices(2).tolist()


def test_train_loader_follows_the_epoch_lightning_sets_and_drops_the_last_batch(thumos):
    dm = _module(thumos, batch_size=8)
    dm.setup("fit")
    loader = dm.train_dataloader()
    _set_sampler_epoch(loader, 5)  # what Lightning's fit loop does before every epoch
    expected = loader.sampler.indices(5)
    batches = list(loader)
    assert len(batches) == len(expected) // 8 == len(loader)
    features, target, decoder = batches[0]
    assert features.shape == (8, 9, N) and target.shape == (8, 22) and decoder.shape == (8, 22, Q)
    first = [dm.datasets["train"].windows[i] for i in expected[:8]]
    assert [_step(f[0, -1].item()) for f in features] == [end - 1 for _, end in first]


def test_stream_mode_gives_one_whole_video_per_batch_in_order(thumos):
    dm = _module(thumos, eval_mode="stream")
    dm.setup("test")
    assert isinstance(dm.datasets["test"], StreamDataset)
    assert dm.stream_videos("test") == ["t0", "t1"]
    batches = list(dm.test_dataloader())
    for (features, targets), length in zip(batches, THUMOS["test"].values(), strict=True):
        assert features.shape == (1, 9, length) and targets.shape == (1, 22, length)
        assert [_step(v) for v in features[0, 0].tolist()] == list(range(length))
        assert targets[0].argmax(0).tolist() == [label(t, 22) for t in range(length)]  # Ambiguous steps kept


@pytest.mark.parametrize(("feature", "parts"), [("anet", ("rgb", "flow")), ("kin_audio", ("rgb", "flow", "audio"))])
def test_a_step_concatenates_rgb_flow_and_audio_in_order(thumos, feature, parts):
    dm = _module(thumos, feature=feature)
    dm.setup("validate")
    features = dm.datasets["val"][0][0][:, 0]
    expected = [PART[p] for p in parts for _ in range(WIDTHS[p])]
    assert [v - np.floor(v) for v in features.tolist()] == expected


def test_the_feature_name_picks_the_file(thumos):
    (thumos / "thumos_kin_test.pickle").rename(thumos / "elsewhere.pickle")
    _module(thumos, feature="anet").setup("test")
    with pytest.raises(FileNotFoundError, match=r"thumos_kin_test\.pickle.*OadTR/TRN"):
        _module(thumos, feature="kin").setup("test")
    with pytest.raises(ValueError, match="feature must be one of"):
        _module(thumos, feature="i3d")


def test_a_width_other_than_dim_feature_is_an_error_naming_both(thumos):
    _module(thumos, feature="anet_audio", dim_feature=13).setup("test")
    with pytest.raises(ValueError, match=r"are 13 wide but dim_feature=7168: set data.dim_feature=13"):
        _module(thumos, feature="anet_audio", dim_feature=7168).setup("test")


def test_missing_annotations_name_the_path_and_where_they_come_from(thumos):
    (thumos / "thumos_test_anno.pickle").unlink()
    with pytest.raises(FileNotFoundError, match=r"thumos_test_anno.pickle does not exist.*anno_thumos.zip"):
        _module(thumos).setup("test")
    (thumos / "data_info_new.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_info_new\.json"):
        _module(thumos).setup("test")


def test_features_and_labels_are_truncated_to_one_length(tmp_path):
    write_data_info(tmp_path, (["a"], ["b"]), (["24_ep1"], ["24_ep2"]))
    write_thumos(tmp_path, {"val": {"a": 90}, "test": {"b": 80}}, features_longer_by=5)
    dm = _module(tmp_path, eval_mode="stream")
    dm.setup("test")
    features, targets = dm.datasets["test"][0]
    assert features.shape == (9, 80) and targets.shape == (22, 80)


def test_videos_absent_from_the_pickles_are_skipped_and_counted(thumos, caplog):
    write_data_info(thumos, (["v0", "gone"], ["t0"]), ([], []))
    dm = _module(thumos, limit=None)
    dm.setup("fit")
    assert dm.skipped()["train"]["missing"] == 1 and dm.datasets["train"].missing == ["gone"]
    assert "1 of 2 videos are absent from the pickles" in caplog.text


def test_limit_keeps_the_first_videos_of_every_split(thumos):
    dm = _module(thumos, limit=1, eval_mode="stream")
    dm.setup()
    assert dm.datasets["train"].videos.names == ["v0"] and dm.stream_videos("val") == dm.stream_videos("test") == ["t0"]


def test_arguments_are_checked(thumos):
    with pytest.raises(ValueError, match="eval_mode must be one of"):
        _module(thumos, eval_mode="frame")
    with pytest.raises(ValueError, match="thumos14 has 22 classes"):
        _module(thumos, num_classes=21)
    with pytest.raises(ValueError, match="names_from_zero concerns TVSeries"):
        _module(thumos, names_from_zero=True)


# --- TVSeries ---------------------------------------------------------------------------------------------------


@pytest.fixture
def tvseries(tmp_path: Path) -> Path:
    write_data_info(tmp_path, ([], []), (["24_ep1", "24_ep2"], ["Mad_Men_ep3"]))
    write_tvseries(tmp_path, TVSERIES, anno_shorter_by=3)
    return tmp_path


def test_tvseries_windows_keep_every_class_and_truncate_to_the_annotations(tvseries):
    dm = _module(tvseries, dataset="tvseries", feature="kin", dim_feature=9)
    dm.setup("fit")
    assert dm.num_classes == 31 and dm.ignore_index is None and dm.ambiguous_counts() == {"train": 0, "val": 0}
    # 80 feature steps, 77 annotated: windows end before 77 - Q
    ends = dm.datasets["train"].windows[:, 1]
    assert len(dm.datasets["train"]) == (77 - Q - N) + (57 - Q - N) and ends.max() == 77 - Q - 1
    assert dm.datasets["val"][0][1].shape == (31,)
    # class names follow the annotation columns (data_info_new.json lists TVSeries classes in another order)
    assert dm.classes[0] == "background" and dm.classes[1] == "Answer phone" and dm.classes[30] == "Write"


def test_tvseries_feature_names_its_pickle(tvseries):
    (tvseries / "tvseries_anet_features.pickle").rename(tvseries / "my_features.pickle")
    _module(tvseries, dataset="tvseries", feature="my_features.pickle").setup("test")
    with pytest.raises(
        FileNotFoundError, match=r"tvseries_anet_features\.pickle.*request the dataset from its authors"
    ):
        _module(tvseries, dataset="tvseries", feature="anet").setup("test")


GT = {
    "GT-train.txt": [
        "24_ep1\tAnswer phone\t2.0\t4.0\t1\t0",  # steps 10-19
        "24_ep1\tWrite\t3.0\t5.1\t1\t0",  # steps 15-25 (round(25.5) = 26, half to even)
    ],
    "GT-test.txt": ["24_ep2\tDrink\t0.5\t1.0\t0\t1"],  # steps 2 (round(2.5), half to even) - 4
}
STEPS = {"24_ep1": 40, "24_ep2": 20}


def test_tvseries_parser_numbers_the_actions_from_one(tmp_path):
    write_gt(tmp_path, GT)
    anno = parse_gt(tmp_path, episode_steps=STEPS)
    assert set(anno) == set(STEPS) and anno["24_ep1"].shape == (40, 31) and anno["24_ep1"].dtype == bool
    ep1 = anno["24_ep1"]
    assert np.flatnonzero(ep1[:, 1]).tolist() == list(range(10, 20))  # Answer phone
    assert np.flatnonzero(ep1[:, 30]).tolist() == list(range(15, 26))  # Write
    assert np.flatnonzero(ep1[:, 0]).tolist() == [*range(10), *range(26, 40)]  # background only where no action
    assert np.flatnonzero(anno["24_ep2"][:, class_index()["Drink"]]).tolist() == [2, 3, 4]
    assert class_index() == {name: i + 1 for i, name in enumerate(ACTIONS)}


def test_tvseries_parser_quirk_merges_the_first_action_into_background(tmp_path):
    write_gt(tmp_path, GT)
    correct = parse_gt(tmp_path, episode_steps=STEPS)["24_ep1"]
    quirk = parse_gt(tmp_path, names_from_zero=True, episode_steps=STEPS)["24_ep1"]
    # the original's numbering: Answer phone is column 0, so its steps look like background; Write moves to 29
    assert np.flatnonzero(quirk[:, 0]).tolist() == [*range(10), *range(10, 20), *range(26, 40)]
    assert not quirk[:, 1].any() and not quirk[:, 30].any()
    assert np.flatnonzero(quirk[:, 29]).tolist() == np.flatnonzero(correct[:, 30]).tolist()
    assert (correct != quirk).any()


def test_tvseries_parser_reads_files_without_a_header_and_rejects_unknown_names(tmp_path):
    write_gt(tmp_path / "plain", GT, header=False)
    write_gt(tmp_path / "headed", GT)
    assert all(
        (a == b).all()
        for a, b in zip(
            parse_gt(tmp_path / "plain", episode_steps=STEPS).values(),
            parse_gt(tmp_path / "headed", episode_steps=STEPS).values(),
            strict=True,
        )
    )
    write_gt(tmp_path / "bad", {"GT-val.txt": ["24_ep1\tJuggle\t1\t2"]})
    with pytest.raises(ValueError, match=r"GT-val.txt:2: unknown class 'Juggle'"):
        parse_gt(tmp_path / "bad", episode_steps=STEPS)


def test_tvseries_annotations_must_match_the_declared_numbering(tvseries, tmp_path, caplog):
    anno = {e: np.zeros((n, 31), bool) for e, n in TVSERIES.items()}
    for array in anno.values():
        array[:, 0] = True
    anno["24_ep1"][5:9, 30] = True  # class 30 is set: actions are numbered from 1
    with open(tvseries / "tvseries_anno.pickle", "wb") as f:
        pickle.dump(anno, f)
    _module(tvseries, dataset="tvseries").setup("test")
    with pytest.raises(ValueError, match="set names_from_zero=false"):
        _module(tvseries, dataset="tvseries", names_from_zero=True).setup("test")
    anno["24_ep1"][:, 30] = False
    with open(tvseries / "tvseries_anno.pickle", "wb") as f:
        pickle.dump(anno, f)
    _module(tvseries, dataset="tvseries").setup("test")
    assert "never sets class 30" in caplog.text


# --- configs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "dataset", "width"), [("thumos14", "thumos14", 7168), ("tvseries", "tvseries", 4096)]
)
def test_data_configs_compose_and_instantiate(compose_cfg, tmp_path, option, dataset, width):
    from experiments.inputs import register_resolvers

    register_resolvers()
    overrides = [f"data={option}", "data.eval_mode=stream", f"data.root={tmp_path}"]
    if option == "thumos14":
        overrides.append("data.feature=anet_audio")
    cfg = compose_cfg("train.yaml", overrides)
    assert cfg.data.dim_feature == width and cfg.data.sequence_len == 64 and cfg.data.batch_size == 128
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, OnlineDetectionDataModule) and dm.dataset == dataset and dm.eval_mode == "stream"
    assert dm.num_classes == cfg.data.num_classes


def test_a_training_set_smaller_than_one_batch_is_an_error(thumos):
    dm = _module(thumos, batch_size=100_000)
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"make no full batch of batch_size=100000: lower data\.batch_size"):
        dm.train_dataloader()
