"""The clip-vs-continual benchmark runs and reports a ratio measured in one run (no timing is asserted)."""

import json
import re

import pytest
import torch

from experiments.bench import main
from modules.profiling.speedup import HISTORY_COLUMNS, append_history


def test_bench_reports_rates_and_ratios(compose_cfg, tmp_path, capsys):
    pair = "[{clip: conv_stack, continual: co_conv_stack, input_shape: [3, 8, 16, 16]}]"
    # the eager backend checks the compiled path's plumbing without inductor's C++ compilation
    history = tmp_path / "history.csv"
    overrides = [f"pairs={pair}", "devices=[cpu]", "rounds=3", "round_seconds=0.05", "warmup=1", "batch_sizes=[1,2]"]
    overrides += ["compile_backend=eager", f"history_file={history}"]
    cfg = compose_cfg("bench.yaml", overrides)
    main(cfg)
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    row, batched = saved["rows"]
    assert (row["batch_size"], batched["batch_size"]) == (1, 2)
    assert row["clips_per_s"] > 0 and row["frames_per_s"] > 0
    for ratio in ("speedup", "speedup_compiled", "speedup_best", "speedup_default"):
        # a median over the rounds of the ratio taken within each round, with its range
        assert row[f"{ratio}_min"] <= row[ratio] <= row[f"{ratio}_max"]
    assert row["default_path"] == "compiled" and row["speedup_default"] == row["speedup_compiled"]
    assert row["frames_per_s_onnx"] > 0 and row["speedup_onnx_min"] <= row["speedup_onnx"] <= row["speedup_onnx_max"]
    assert batched["frames_per_s_per_stream"] == batched["frames_per_s_compiled"] / 2  # two streams per step call
    assert abs(row["flop_ratio"] - 8.0) < 0.1  # 8-frame clip vs one frame of the same convs
    assert row["continual_model"] == "co_conv_stack"
    for rate in ("clips_per_s", "frames_per_s", "clips_per_s_compiled", "frames_per_s_compiled"):
        # every rate is a median of per-call rates, reported with their spread and how many calls it rests on
        assert row[f"{rate}_iqr"] >= 0 and row[f"{rate}_calls"] >= 2 and isinstance(row[f"{rate}_busy"], bool)
        assert f"{rate}_std" not in row
    printed = capsys.readouterr().out
    assert "bench finished; run directory: run\n" in printed
    assert re.search(r"^  results\s+run/bench\.json$", printed, re.MULTILINE)
    speedups = f"eager {row['speedup']:.3g}x, default {row['speedup_default']:.3g}x, best {row['speedup_best']:.3g}x"
    speedups += f" (FLOPs {row['flop_ratio']:.3g}x)"
    assert re.search(rf"^  conv_stack/co_conv_stack cpu B=1\s+{re.escape(speedups)}$", printed, re.MULTILINE)
    lines = history.read_text().splitlines()
    assert lines[0].split(",") == HISTORY_COLUMNS and len(lines) == 3
    main(cfg)  # a second run appends, never overwrites
    assert len(history.read_text().splitlines()) == 5


def test_a_history_file_of_another_layout_is_refused(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a bench history"):
        append_history([{"clip_model": "x"}], path, {})
    assert path.read_text() == "a,b\n1,2\n"


def test_a_prediction_takes_the_output_of_whichever_step_emits():
    from modules.profiling.speedup import _stepper

    calls = iter([None, torch.ones(1), None, None, None, None, None, None])
    predict = _stepper(lambda x: next(calls), torch.zeros(1), torch.device("cpu"), steps=4)
    assert predict().item() == 1  # the second of four steps emitted: a compiled step's phase
    with pytest.raises(RuntimeError, match="no output in 4 steps"):
        predict()


def test_profile_true_writes_where_the_time_of_a_clip_call_and_a_step_goes(compose_cfg, tmp_path, capsys):
    pair = "[{clip: conv_stack, continual: co_conv_stack, input_shape: [3, 8, 16, 16]}]"
    overrides = [f"pairs={pair}", "devices=[cpu]", "rounds=1", "round_seconds=0.05", "warmup=1", "batch_sizes=[1]"]
    overrides += ["compile_backend=eager", "history_file=null", "onnx=false", "profile=true"]
    main(compose_cfg("bench.yaml", overrides))
    text = (tmp_path / "run" / "profile.md").read_text()
    clip_part, step_part = text.split("### co_conv_stack: one compiled step")
    assert "### conv_stack: one compiled clip call (conv_stack / co_conv_stack, batch 1" in clip_part
    for part in (clip_part, step_part):
        # the convolutions' time with their MACs, the rest by kind, and the wall time they add up to
        assert re.search(r"^\| op conv\s+\| macs\s+\|", part, re.MULTILINE)  # MAC ops by op in a compiled call
        assert "| overhead" in part and "| total              | wall unprofiled" in part
    assert re.search(r"^  profile\s+run/profile\.md$", capsys.readouterr().out, re.MULTILINE)
