"""Multi-stream evaluation (the S = 2 columns of Tables III-V: joint + bone): sum the test logits of 2-4 eval runs
and score them, as continual-skeletons' ``scripts/multi_stream_eval.py`` does.

    python -m experiments.streams <eval run dir> <eval run dir> [...] [--out fused.json]   (make eval-streams)

``experiments.eval`` saves each test set's per-sample logits in its run directory: ``test_logits.npy`` (N, K),
``test_labels.npy`` (N,) and, where the dataset names its samples, ``test_samples.txt`` (one per line), all in
loader order. Runs whose sample names, labels or class counts differ are refused.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["fuse", "load_run", "topk", "write_test_predictions"]

log = logging.getLogger(__name__)
LOGITS, LABELS, SAMPLES = "test_logits.npy", "test_labels.npy", "test_samples.txt"


def write_test_predictions(model: Any, datamodule: Any, output_dir: str | Path) -> Path | None:
    """Save ``model.test_predictions`` (``ClassificationSystem``) and the test samples' names into ``output_dir``."""
    predictions = getattr(model, "test_predictions", None)
    trainer = getattr(model, "_trainer", None)
    if not predictions or (trainer is not None and trainer.world_size > 1):
        if predictions:  # each rank holds its shard only; fusion needs the whole test set in loader order
            log.warning("test logits are not saved from a multi-device test: evaluate on one device for fusion")
        return None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / LOGITS, torch.cat([p[0] for p in predictions]).float().numpy())
    np.save(out / LABELS, torch.cat([p[1] for p in predictions]).numpy())
    names = getattr(getattr(datamodule, "datasets", {}).get("test"), "sample_names", None)
    if names is not None and len(names) == sum(len(p[1]) for p in predictions):
        (out / SAMPLES).write_text("".join(f"{name}\n" for name in names))
    return out / LOGITS


def load_run(run: str | Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """``(logits, labels, sample names or None)`` saved by an eval run."""
    run = Path(run)
    if not (run / LOGITS).is_file() or not (run / LABELS).is_file():
        raise FileNotFoundError(
            f"{run} holds no {LOGITS} / {LABELS}: give the run directory of `python -m experiments.eval` "
            "(make eval-cost-gcn), which saves them after testing"
        )
    samples = (run / SAMPLES).read_text().splitlines() if (run / SAMPLES).is_file() else None
    return np.load(run / LOGITS), np.load(run / LABELS), samples


def topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the ``k`` highest logits."""
    best = np.argsort(-logits, axis=1)[:, :k]
    return float((best == labels[:, None]).any(axis=1).mean())


def fuse(runs: Sequence[str | Path]) -> dict[str, Any]:
    """Sum the logits of 2-4 runs over the same test samples; top-1 / top-5 of each run and of the sum."""
    if not 2 <= len(runs) <= 4:
        raise ValueError(f"give 2 to 4 eval run directories (the paper fuses 2: joint + bone), got {len(runs)}")
    loaded = [load_run(run) for run in runs]
    logits0, labels0, samples0 = loaded[0]
    for run, (logits, labels, samples) in zip(runs[1:], loaded[1:]):
        if logits.shape != logits0.shape:
            raise ValueError(f"{run}: logits {logits.shape} vs {logits0.shape} in {runs[0]}: not the same test set")
        if samples is not None and samples0 is not None and samples != samples0:
            first = next(i for i, (a, b) in enumerate(zip(samples, samples0)) if a != b)
            raise ValueError(f"{run}: sample {first} is {samples[first]!r}, {runs[0]} has {samples0[first]!r} there")
        if not np.array_equal(labels, labels0):
            raise ValueError(f"{run}: labels differ from {runs[0]} at {int(np.flatnonzero(labels != labels0)[0])}")
    fused = sum(logits for logits, _, _ in loaded)
    k5 = min(5, fused.shape[1])
    result: dict[str, Any] = {"runs": [str(r) for r in runs], "samples": len(labels0)}
    result["streams"] = [{"top1": topk(lg, labels0, 1), f"top{k5}": topk(lg, labels0, k5)} for lg, _, _ in loaded]
    result |= {"top1": topk(fused, labels0, 1), f"top{k5}": topk(fused, labels0, k5)}
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="eval run directories (with test_logits.npy)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = fuse(args.runs)
    for run, scores in zip(args.runs, result["streams"]):
        print(f"{run}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    print(f"fused ({len(args.runs)} streams, {result['samples']} samples): top-1 {result['top1']:.4f}, "
          + ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k.startswith("top") and k != "top1"))  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
