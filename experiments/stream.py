"""Classify a video online: ``python -m experiments.stream video=<file.mp4|frames/> [experiment=...] [ckpt_path=...]``.

Steps the configured continual net (``modules.continual.fast_step``: compiled after the warm-up) on each frame of
``video`` played at the model's frame rate (``datamodules.stream_source``) and writes into the run directory
``predictions.csv`` (top-k per frame, step time), ``stream.json`` (latency percentiles, real-time factors, machine)
and ``predictions.png``. A ``<video>.segments.json`` beside the video (a generated stream's) adds the accuracy per
frame against the true actions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

import modules.continual as co
from datamodules.moving_digits_stream import CLASSES, ensure_stream, read_segments, segments_path
from datamodules.stream_source import StreamSource
from experiments import config_checks, utils
from experiments.demo import _best_checkpoint
from modules.nets import for_inference
from modules.nets.weights import load_torch_file
from modules.profiling.online import machine, plot_predictions, run_stream, segment_accuracy, summary

log = logging.getLogger(__name__)

#: the frame rate that ``InputSpec.sampling_stride`` (data.sampling_stride) counts frames of
CLIP_FPS = 30.0


def newest_demo_checkpoint(log_dir: str | Path) -> Path:
    """The best checkpoint of the newest ``make demo`` run (``outputs/demo/<date>/<time>/train/checkpoints``)."""
    runs = sorted(Path(log_dir, "outputs", "demo").glob("*/*/train/checkpoints/epoch_*.ckpt"))
    if not runs:
        where = Path(log_dir, "outputs", "demo")
        raise FileNotFoundError(f"no `make demo` run with a checkpoint under {where}: run `make demo` first (~5 min "
                                "on CPU), or give ckpt_path=<run>/checkpoints/<best>.ckpt")  # fmt: skip
    return _best_checkpoint(runs[-1].parents[1])


def build_net(cfg: DictConfig, ckpt_path: Path | None) -> torch.nn.Module:
    """The configured net with the checkpoint's weights, ready to step (eval, BatchNorm folded after loading)."""
    net = hydra.utils.instantiate(cfg.model.net)
    if ckpt_path is not None:
        config_checks.check_ckpt_path(ckpt_path)
        state = load_torch_file(ckpt_path, weights_only=False)["state_dict"]  # our own runs' files
        net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return for_inference(net)


def class_names(cfg: DictConfig, segments: dict[str, Any] | None, num_classes: int) -> list[str] | None:
    """``labels`` (a file), else a generated stream's classes, else Moving Digits' when it is the configured data."""
    if cfg.labels is not None:
        names = [line.strip() for line in Path(cfg.labels).read_text().splitlines() if line.strip()]
    elif segments is not None and "classes" in segments:
        names = segments["classes"]
    elif str(cfg.data.get("_target_", "")).endswith("MovingDigitsDataModule"):
        names = list(CLASSES)
    else:
        return None  # the class indices
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a net of {num_classes} classes: give labels=<file> with one "
                         "name per line in class-index order")  # fmt: skip
    return names


def stream(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg`` (configs/stream.yaml); returns what ``stream.json`` holds."""
    with utils.claim_run_dir(cfg.paths.output_dir) as out:
        config_checks.check(cfg)
        if OmegaConf.is_missing(cfg, "video"):
            raise config_checks.ConfigError("no video given: video=<file.mp4|folder of frames>")
        if cfg.get("num_threads"):
            torch.set_num_threads(cfg.num_threads)
        video = Path(cfg.video)
        if cfg.generate:
            ensure_stream(video)
        fps = float(cfg.model_fps or CLIP_FPS / cfg.data.sampling_stride)
        source = StreamSource(video, target_fps=fps, crop_size=cfg.data.crop_size,
                              normalisation=cfg.data.normalisation, fps=cfg.fps)  # fmt: skip
        ckpt = cfg.ckpt_path or (newest_demo_checkpoint(cfg.paths.log_dir) if cfg.demo_checkpoint else None)
        net = build_net(cfg, Path(ckpt) if ckpt else None).to(cfg.device)
        truth = read_segments(video) if segments_path(video).exists() else None
        labels = class_names(cfg, truth, cfg.data.num_classes)
        example = torch.zeros(1, cfg.data.channels, cfg.data.crop_size, cfg.data.crop_size, device=cfg.device)
        stepper = co.fast_step(net, example, compile=cfg.compile, timeout_s=cfg.compile_timeout_s)
        result = run_stream(stepper, source, fps=fps, labels=labels, topk=cfg.topk, device=cfg.device,
                            total=len(source), progress=cfg.progress)  # fmt: skip
        rows, accuracy = result.rows, None
        if truth is not None:
            accuracy, rows = segment_accuracy(rows, truth["segments"], delay=stepper.delay, fps=fps)
        pd.DataFrame(rows).to_csv(out / "predictions.csv", index=False)
        name = cfg.model.net.name
        record = {"model": name, "video": str(video), "checkpoint": str(ckpt) if ckpt else None,
                  "compiled": stepper.compiled, "compile_note": getattr(stepper, "reason", None),
                  "delay": stepper.delay, "stride": stepper.stride, "topk": cfg.topk, "source_fps": source.source_fps,
                  "source_frames": source.source_frames, **result.stats, "accuracy": accuracy,
                  "machine": machine(cfg.device)}  # fmt: skip
        (out / "stream.json").write_text(json.dumps(record, indent=2) + "\n")
        how = f"{'compiled' if stepper.compiled else 'eager'}, {cfg.device}"
        plot_predictions(result, out / "predictions.png", labels=labels, segments=truth and truth["segments"],
                         title=f"{name} on {video.name} ({how})")  # fmt: skip
        utils.save_config(cfg, out)
        print(summary(record))
        return record


@hydra.main(version_base="1.3", config_path="../configs", config_name="stream.yaml")
def main(cfg: DictConfig) -> None:
    record = stream(cfg)
    files = {name: Path(cfg.paths.output_dir, name) for name in ("predictions.csv", "stream.json", "predictions.png")}
    utils.report_run("stream", cfg.paths.output_dir, files, {"RTF (net alone)": record["rtf_net"]})


if __name__ == "__main__":
    main()
