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
