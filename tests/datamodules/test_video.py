"""Shared video machinery: fps resampling, clip sampling, decoding and transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.decoding import read_video
from datamodules.video import (
    VideoDecodeError,
    VideoTransform,
    clip_indices,
    distinct_clip_frames,
    resample_indices,
)
from tests.datamodules.helpers import frame_ids, level, write_mp4

# --- fps resampling ----------------------------------------------------------------------------------


def test_resample_same_fps_is_identity():
    np.testing.assert_array_equal(resample_indices(10, 30.0, 30.0), np.arange(10))


def test_resample_up_repeats_and_down_drops_frames():
    np.testing.assert_array_equal(resample_indices(4, 15.0, 30.0), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(resample_indices(10, 60.0, 30.0), [0, 2, 4, 6, 8])
    # 25 -> 30 fps: 12 frames last 0.48 s = 14 frames at 30 fps, each the latest frame shown at that time
    np.testing.assert_array_equal(resample_indices(12, 25.0, 30.0), [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 10])


def test_resample_unknown_fps_is_taken_as_target():
    np.testing.assert_array_equal(resample_indices(5, 0.0, 30.0), np.arange(5))
    np.testing.assert_array_equal(resample_indices(5, float("nan"), 30.0), np.arange(5))


# --- clip sampling -----------------------------------------------------------------------------------


def test_eval_clip_is_centred():
    # span (8 - 1) * 2 + 1 = 15 of 100 frames: start (100 - 15) // 2 = 42
    np.testing.assert_array_equal(clip_indices(100, 8, 2, random=False), 42 + 2 * np.arange(8))
    np.testing.assert_array_equal(clip_indices(16, 3, 1, random=False), [6, 7, 8])


def test_train_clip_start_is_uniform_within_bounds():
    torch.manual_seed(0)
    starts = {int(clip_indices(20, 4, 3, random=True)[0]) for _ in range(500)}
    assert starts == set(range(20 - 10 + 1))  # span 10: every start 0..10, none beyond


@pytest.mark.parametrize("random", [False, True])
def test_clip_longer_than_video_repeats_the_last_frame(random):
    np.testing.assert_array_equal(clip_indices(5, 8, 1, random=random), [0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(clip_indices(5, 4, 2, random=random), [0, 2, 4, 4])


@pytest.mark.parametrize(("num_frames", "stride"), [(64, 1), (64, 2), (300, 6), (300, 7), (5, 8)])
def test_distinct_clip_frames_is_the_longest_clip_that_needs_no_clamping(num_frames, stride):
    n = distinct_clip_frames(num_frames, stride)
    indices = clip_indices(num_frames, n, stride, random=False)
    assert (np.diff(indices) == stride).all() and indices[-1] < num_frames
    longer = clip_indices(num_frames, n + 2, stride, random=False)
    assert longer[-1] == longer[-2] == num_frames - 1  # clamped: the last frame repeats


def test_video_datamodules_know_how_many_distinct_frames_a_clip_can_take():
    from datamodules.charades import CharadesDataModule
    from datamodules.kinetics import KineticsDataModule
    from datamodules.moving_digits import MovingDigitsDataModule
    from datamodules.synthetic import SyntheticClipDataModule

    assert KineticsDataModule(sampling_stride=6).max_clip_frames() == 50  # 10 s at 30 fps
    assert MovingDigitsDataModule(num_frames=64, sampling_stride=2).max_clip_frames() == 32
    assert CharadesDataModule(sampling_stride=8).max_clip_frames() == 90  # 30 s at 24 fps, on average
    assert SyntheticClipDataModule().max_clip_frames() is None  # generated at any length


def test_clip_rejects_bad_lengths():
    with pytest.raises(ValueError, match="frames_per_clip"):
        clip_indices(5, 0, 1, random=False)


# --- decoding ----------------------------------------------------------------------------------------


def test_read_video_decodes_the_sampled_frames(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", 20)
    frames = read_video(path, 4, 3, target_fps=30, random=False)
    assert frames.dtype == torch.uint8 and frames.shape == (4, 24, 32, 3)
    # span 10 of 20 frames: start 5
    assert frame_ids(frames) == [5, 8, 11, 14]


def test_read_video_resamples_to_the_target_fps(tmp_path):
    path = write_mp4(tmp_path / "v15.mp4", 6, fps=15)
    assert frame_ids(read_video(path, 12, 1, target_fps=30, random=False)) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # at 5 fps the 6 frames (0.4 s) become frames 0 and 3
    assert frame_ids(read_video(path, 2, 1, target_fps=5, random=False)) == [0, 3]


def test_read_video_repeats_the_last_frame_of_a_short_video(tmp_path):
    path = write_mp4(tmp_path / "short.mp4", 5)
    assert frame_ids(read_video(path, 8, 2, target_fps=30, random=True)) == [0, 2, 4, 4, 4, 4, 4, 4]


def test_read_video_names_an_unreadable_file(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video")
    with pytest.raises(VideoDecodeError, match=r"broken\.mp4"):
        read_video(path, 4, 1, target_fps=30, random=False)
    with pytest.raises(VideoDecodeError, match=r"absent\.mp4"):
        read_video(tmp_path / "absent.mp4", 4, 1, target_fps=30, random=False)


# --- transforms ----------------------------------------------------------------------------------------


def _constant(value: int, t: int = 2, h: int = 20, w: int = 30) -> torch.Tensor:
    return torch.full((t, h, w, 3), value, dtype=torch.uint8)


def test_eval_transform_shape_and_feichtenhofer_normalisation():
    clip = VideoTransform(16, train=False)(_constant(level(0)))
    assert clip.shape == (3, 2, 16, 16) and clip.dtype == torch.float32
    torch.testing.assert_close(clip, torch.full_like(clip, (level(0) / 255 - 0.45) / 0.225))


def test_imagenet_normalisation_is_per_channel():
    clip = VideoTransform(8, train=False, normalisation="imagenet")(_constant(255))
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(clip[:, 0, 0, 0], expected)
    with pytest.raises(ValueError, match="normalisation"):
        VideoTransform(8, train=False, normalisation="nope")


def test_kopuklu_and_none_normalisations_of_the_co3d_repository():
    kopuklu = VideoTransform(8, train=False, normalisation="kopuklu")(_constant(255))
    mean, std = (
        torch.tensor([0.4338692858, 0.4045515923, 0.37760875]),
        torch.tensor([0.1519876776, 0.14855877375, 0.1569763971]),
    )
    torch.testing.assert_close(kopuklu[:, 0, 0, 0], (1 - mean) / std)
    plain = VideoTransform(8, train=False, normalisation="none")(_constant(51))
    torch.testing.assert_close(plain, torch.full_like(plain, 51 / 255))


def test_eval_transform_scales_the_short_side_and_crops_the_centre():
    # 30 x 60 frames whose columns are numbered 0..59: scaled to 10 x 20, the centre 10 x 10 crop keeps the
    # middle half of the columns, whose mean is the overall mean 29.5
    frames = torch.arange(60, dtype=torch.uint8).view(1, 1, 60, 1).expand(3, 30, 60, 3).contiguous()
    clip = VideoTransform(10, train=False)(frames) * 0.225 + 0.45  # back to [0, 1]
    assert clip.shape == (3, 3, 10, 10)
    torch.testing.assert_close(clip.mean() * 255, torch.tensor(29.5), atol=0.6, rtol=0)
    assert torch.all(clip[:, :, :, 1:] >= clip[:, :, :, :-1])  # still increasing left to right


def test_train_transform_jitters_scale_and_crop_but_keeps_the_shape():
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (4, 24, 40, 3), dtype=torch.uint8)
    transform = VideoTransform(16, train=True, scale_jitter=1.25)
    clips = [transform(frames) for _ in range(20)]
    assert all(c.shape == (3, 4, 16, 16) for c in clips)
    assert len({c.sum().item() for c in clips}) > 1  # random scales and crops differ
    # the same spatial crop for every frame: a constant clip stays constant in time
    clip = transform(_constant(100, t=4))
    torch.testing.assert_close(clip, clip[:, :1].expand_as(clip))


def test_rand_augment_applies_to_training_only():
    assert VideoTransform(8, train=True, rand_augment=True).rand_augment is not None
    assert VideoTransform(8, train=False, rand_augment=True).rand_augment is None
    torch.manual_seed(0)
    assert VideoTransform(8, train=True, rand_augment=True)(_constant(100, t=3)).shape == (3, 3, 8, 8)


def test_transform_rejects_channels_first_frames():
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        VideoTransform(8, train=False)(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
