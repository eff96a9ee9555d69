"""The online stream tool: decoding a video or a frame folder at the model's rate, the per-frame loop and its
statistics, accuracy against known segments, the entry point's files, and the `make stream` wiring."""

from __future__ import annotations

import json
import re
import subprocess
from itertools import pairwise

import hydra
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import modules.continual as co
from datamodules.moving_digits import MovingDigitsParams, encode_mp4
from datamodules.moving_digits_stream import CLASSES, ensure_stream, read_segments, render_stream, segments_path
from datamodules.stream_source import StreamSource
from datamodules.video import VideoDecodeError, VideoTransform
from experiments import stream as stream_module
from experiments.config_checks import ConfigError
from modules.nets import build
from modules.profiling.online import latency_stats, run_stream, segment_accuracy
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """12 frames of 36 x 64 noise: every frame differs, and the short side (36) is scaled to the crop (32). (decord
    0.6 fails to decode frames narrower than 64 px but 32 px: 48 px wide mp4s could not serve here.)"""
    return np.random.default_rng(0).integers(0, 256, (12, 36, 64, 3), dtype=np.uint8)


def _expected(frames: np.ndarray) -> torch.Tensor:
    """The steps an evaluation clip of these frames gives: ``(T, C, S, S)``."""
    return VideoTransform(32, train=False)(torch.from_numpy(frames)).permute(1, 0, 2, 3)


def _steps(source: StreamSource) -> torch.Tensor:
    return torch.stack(list(source))


def test_a_video_is_resampled_and_transformed_like_an_evaluation_clip(frames, tmp_path):
    path = tmp_path / "v.mp4"
    encode_mp4(path, frames, fps=30)  # lossless: decoding gives the frames back exactly
    source = StreamSource(path, target_fps=15, crop_size=32, chunk=4)
    assert (len(source), source.source_frames, source.source_fps, source.duration_s) == (6, 12, 30.0, 0.4)
    torch.testing.assert_close(_steps(source), _expected(frames[::2]))


def test_a_frame_folder_plays_at_its_fps_option(frames, tmp_path):
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    torch.testing.assert_close(
        _steps(StreamSource(tmp_path, target_fps=15, crop_size=32, fps=30)), _expected(frames[::2])
    )
    repeated = StreamSource(tmp_path, target_fps=60, crop_size=32, fps=30, chunk=5)  # 30 -> 60 fps: each twice
    torch.testing.assert_close(_steps(repeated), _expected(frames.repeat(2, axis=0)))
    assert len(StreamSource(tmp_path, target_fps=15, crop_size=32)) == 12  # no fps: the model's own rate


def test_stream_source_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"video .*missing\.mp4 does not exist"):
        StreamSource(tmp_path / "missing.mp4", target_fps=30, crop_size=32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no frame images \(\.jpg, \.jpeg, \.png\)"):
        StreamSource(tmp_path / "empty", target_fps=30, crop_size=32)
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoDecodeError, match=r"cannot open video .*text\.mp4"):
        StreamSource(tmp_path / "text.mp4", target_fps=30, crop_size=32)


@pytest.fixture(scope="module")
def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("cox3d_tiny", inference=True, temporal_window=8)


def test_the_loop_predicts_what_forward_steps_gives_and_marks_the_warm_up(tiny_net):
    clip = torch.randn(3, 20, 32, 32)
    stepper = co.fast_step(tiny_net, clip[None, :, 0], compile=False)
    delay = stepper.delay
    result = run_stream(stepper, clip.unbind(1), fps=30, labels=CLASSES, topk=3, progress=False)
    tiny_net.clean_state()
    with torch.no_grad():
        expected = torch.softmax(tiny_net.forward_steps(clip[None])[0].T, dim=1).numpy()  # (20 - delay, K)
    rows = result.rows
    assert delay == 16 and len(rows) == 20 and result.scores.shape == (20, 10)
    assert all(r["warm_up"] and r["top1_label"] is None for r in rows[:delay])
    assert [r["frame"] for r in rows if r["first_prediction"]] == [delay]
    assert np.isnan(result.scores[:delay]).all()
    np.testing.assert_allclose(result.scores[delay:], expected, atol=1e-5)
    assert [r["top1_label"] for r in rows[delay:]] == [CLASSES[k] for k in expected.argmax(1)]
    assert [r["top2_score"] for r in rows[delay:]] == pytest.approx(np.sort(expected, 1)[:, -2].tolist(), abs=1e-5)
    stats = result.stats
    assert (stats["frames"], stats["predictions"], stats["first_prediction_frame"]) == (20, 4, delay)
    assert stats["rtf_net"] == pytest.approx(stats["duration_s"] / stats["net_s"]) and stats["duration_s"] == 20 / 30
    assert stats["rtf"] == pytest.approx(20 / 30 / stats["wall_s"]) and stats["wall_s"] >= stats["net_s"]
    assert stats["step_ms"]["max"] == pytest.approx(max(r["step_ms"] for r in rows))


def test_latency_stats_by_hand():
    stats = latency_stats([float(i) for i in range(1, 101)])
    assert stats == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01, "mean": 50.5, "max": 100.0})


def test_segment_accuracy_by_hand():
    """1 fps, delay 2, actions a on [0, 4) s and b on [4, 8) s; frame 7 (a strided net's skipped step) has none."""
    predicted = [None, None, "a", "b", "a", "b", "b", None]
    rows = [{"frame": i, "time_s": float(i), "warm_up": i < 2, "top1_label": p} for i, p in enumerate(predicted)]
    segments = [{"label": "a", "start_s": 0.0, "end_s": 4.0}, {"label": "b", "start_s": 4.0, "end_s": 8.0}]
    stats, annotated = segment_accuracy(rows, segments, delay=2, fps=1.0)
    assert [r["phase"] for r in annotated] == ["warm_up"] * 2 + ["steady"] * 2 + ["transition"] * 2 + ["steady"] * 2
    assert [r["true_label"] for r in annotated] == list("aaaabbbb")
    assert stats["accuracy"] == pytest.approx(2 / 3)  # frames 2, 3, 6
    assert stats["accuracy_transition"] == 0.5  # frames 4 (wrong) and 5
    assert stats["accuracy_after_warm_up"] == pytest.approx(3 / 5)
    assert stats["frames_scored"] == {"transition": 2, "steady": 3}


def test_a_generated_stream_has_its_segments_and_is_made_once(tmp_path):
    path = tmp_path / "s.mp4"
    params = MovingDigitsParams(size=16, digit_size=8)
    record = render_stream(path, num_segments=3, seconds=(0.2, 0.3), params=params, seed=1)
    segments = record["segments"]
    assert [s["start_frame"] for s in segments[1:]] == [s["end_frame"] for s in segments[:-1]]
    assert all(a["label"] != b["label"] for a, b in pairwise(segments))
    assert all(6 <= s["end_frame"] - s["start_frame"] <= 9 for s in segments)
    assert read_segments(path) == record and record["num_frames"] == segments[-1]["end_frame"]
    assert len(StreamSource(path, target_fps=30, crop_size=16)) == record["num_frames"]
    kwargs = {"num_segments": 3, "seconds": (0.2, 0.3), "params": params, "seed": 1}
    assert not ensure_stream(path, **kwargs) and ensure_stream(path, **{**kwargs, "seed": 2})
    segments_path(path).write_text("{}")
    with pytest.raises(ValueError, match=r"s\.mp4\.segments\.json is not a segments file"):
        read_segments(path)
    (tmp_path / "mine.mp4").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"mine\.mp4 exists without mine\.mp4\.segments\.json"):
        ensure_stream(tmp_path / "mine.mp4")


def test_stream_entry_point_writes_predictions_stats_and_figure(compose_cfg, tmp_path, capsys):
    video = tmp_path / "s.mp4"
    record = render_stream(video, num_segments=2, seconds=(0.5, 0.5))  # 2 x 15 frames at 30 fps
    overrides = [f"video={video}", "experiment=cox3d_tiny_moving_digits", "compile=false", "progress=false"]
    result = stream_module.stream(compose_cfg("stream.yaml", [*overrides, "topk=2"]))
    out = tmp_path / "run"
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == result["frames"] == record["num_frames"] == 30
    assert list(table.columns[:8]) == ["frame", "time_s", "warm_up", "first_prediction", "top1_label", "top1_score",
                                       "top2_label", "top2_score"]  # fmt: skip
    assert table["first_prediction"].sum() == 1 and table["first_prediction"].idxmax() == 16
    assert set(table["top1_label"].dropna()) <= set(CLASSES) and table["top1_label"].notna().sum() == 14
    assert table["phase"].tolist() == ["warm_up"] * 16 + ["transition"] * 14  # 16 frames after the boundary at 15
    saved = json.loads((out / "stream.json").read_text())
    assert saved["model"] == "cox3d_tiny" and saved["compiled"] is False and saved["fps"] == 30.0
    assert saved["accuracy"]["frames_scored"] == {"transition": 14, "steady": 0} and saved["machine"]["torch"]
    assert (out / "predictions.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert re.search(r"latency per frame \(step, ms\): p50 \S+  p95 \S+  p99 \S+", printed)
    assert re.search(r"real-time factor: \S+x \(net alone\), \S+x \(decoding \+ net\); 30 frames = 1 s", printed)


def test_a_lightning_checkpoint_loads_into_the_continual_twin(compose_cfg, tmp_path):
    torch.manual_seed(1)
    offline = build("x3d_tiny")
    ckpt = tmp_path / "epoch_000.ckpt"
    state = {f"net.{k}": v for k, v in offline.state_dict().items()}
    torch.save({"pytorch-lightning_version": "2.5.0", "state_dict": state, "epoch": 0}, ckpt)
    cfg = compose_cfg("stream.yaml", ["experiment=cox3d_tiny_moving_digits"])
    net = stream_module.build_net(cfg, ckpt)
    assert not net.training and torch.equal(net.head.projection.weight, offline.head.projection.weight)
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*nothing\.ckpt does not exist"):
        stream_module.build_net(cfg, tmp_path / "nothing.ckpt")


def test_the_newest_demo_runs_best_checkpoint_is_used(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no `make demo` run with a checkpoint .*run `make demo` first"):
        stream_module.newest_demo_checkpoint(tmp_path)
    for run, epochs in (("2026-01-02/09-00-00_000000", [3]), ("2026-01-02/10-00-00_000000", [1, 4])):
        folder = tmp_path / "outputs" / "demo" / run / "train" / "checkpoints"
        folder.mkdir(parents=True)
        for epoch in epochs:
            (folder / f"epoch_{epoch:03d}.ckpt").write_bytes(b"")
    (tmp_path / "outputs" / "demo" / "2026-01-03" / "08-00-00_000000" / "train").mkdir(parents=True)  # running
    newest = stream_module.newest_demo_checkpoint(tmp_path)
    assert newest == tmp_path / "outputs/demo/2026-01-02/10-00-00_000000/train/checkpoints/epoch_004.ckpt"


def test_stream_configs_compose_with_the_models_input_facts(compose_cfg):
    default = compose_cfg("stream.yaml", ["video=v.mp4"])
    assert (default.model.net.name, default.data.crop_size, default.data.sampling_stride) == ("cox3d_s", 160, 6)
    assert (default.compile, default.topk, default.device, default.ckpt_path) == (True, 5, "cpu", None)
    digits = compose_cfg("stream.yaml", ["video=v.mp4", "experiment=cox3d_tiny_moving_digits"])
    assert (digits.model.net.name, digits.data.crop_size, digits.data.sampling_stride) == ("cox3d_tiny", 32, 1)
    assert stream_module.class_names(digits, None, 10) == list(CLASSES)
    assert stream_module.class_names(default, None, 400) is None
    net = hydra.utils.instantiate(digits.model.net)
    assert net.delay == 16
    with pytest.raises(ConfigError, match=r"no video given: video=<file\.mp4\|folder of frames>"):
        stream_module.stream(compose_cfg("stream.yaml", [], subdir="no_video"))


@pytest.mark.parametrize(
    "args,video,generate",
    [([], "data/moving_digits_stream.mp4", True), (["VIDEO=clip.mp4"], "clip.mp4", False)],
)
def test_make_stream_runs_the_tool_on_the_newest_demo_checkpoint(args, video, generate):
    dry = subprocess.run(["make", "-n", "stream", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    line = next(line for line in dry.stdout.splitlines() if "-m experiments.stream" in line)
    assert "experiment=cox3d_tiny_moving_digits demo_checkpoint=true" in line and f"video={video} " in line
    assert ("generate=true" in line) == generate
