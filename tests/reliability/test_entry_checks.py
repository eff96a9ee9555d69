"""Issue 13 (8, 9): the entry points check their config and checkpoint before building anything, and write
strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import runs
from experiments.config_checks import ConfigError
from experiments.eval import evaluate
from experiments.train import train


@pytest.mark.parametrize("entry", [train, evaluate])
def test_a_wrong_value_stops_the_run_naming_its_key(compose_cfg, entry) -> None:
    name = "train.yaml" if entry is train else "eval.yaml"
    cfg = compose_cfg(name, ["experiment=conv_stack_synthetic", "trainer.max_epochs=abc", "logger=csv"])
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs='abc' \(str\)"):
        entry(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_a_plain_state_dict_as_ckpt_path_says_to_use_weights(compose_cfg, tmp_path: Path) -> None:
    import torch

    path = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    cfg = compose_cfg("eval.yaml", ["experiment=conv_stack_synthetic", f"ckpt_path={path}", "logger=csv"])
    with pytest.raises(Exception, match=r"model\.net\.weights="):
        evaluate(cfg)


def test_metrics_json_writes_null_for_a_non_finite_metric(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match="not finite"):
        path = runs.write_metrics(
            {"test/loss": float("nan"), "test/top1": 0.5}, tmp_path, extra={"score": float("inf")}
        )
    assert json.loads(path.read_text()) == {"test/loss": None, "test/top1": 0.5, "score": None}


def test_eval_writes_the_data_counts_of_its_splits_into_metrics_json(compose_cfg) -> None:
    """The entry point's metrics.json carries ``data/<split>/<kind>`` (here the generated detection features,
    nothing skipped: zeros, not absent keys)."""
    tiny = ["data.num_train=2", "data.num_test=1", "data.min_steps=100", "data.max_steps=110",
            "model.net.embed_dim=16", "model.net.ff_dim=16", "model.net.num_heads=2", "logger=csv"]  # fmt: skip
    cfg = compose_cfg("eval.yaml", ["experiment=transformers/cooadtr_b1_synthetic_thumos", *tiny])
    evaluate(cfg)
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    counts = {k: v for k, v in written.items() if k.startswith("data/test/")}
    assert counts and all(v == 0 for v in counts.values()), written
    assert "test/mAP" in written
