"""The clip-vs-continual benchmark runs and reports a ratio measured in one run (no timing is asserted)."""

import json
import re

import pytest
import torch

from experiments.bench import main


def test_bench_reports_rates_and_ratios(compose_cfg, tmp_path, capsys):
    pair = "[{clip: conv_stack, continual: co_conv_stack, input_shape: [3, 8, 16, 16]}]"
    # the eager backend checks the compiled path's plumbing without inductor's C++ compilation
    overrides = [f"pairs={pair}", "devices=[cpu]", "rounds=2", "round_seconds=0.05", "warmup=1"]
    overrides.append("compile_backend=eager")
    cfg = compose_cfg("bench.yaml", overrides)
    main(cfg)
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    (row,) = saved["rows"]
    assert row["clips_per_s"] > 0 and row["frames_per_s"] > 0
    assert row["speedup"] == row["frames_per_s"] / row["clips_per_s"]
    assert row["speedup_compiled"] == row["frames_per_s_compiled"] / row["clips_per_s_compiled"]
    best = max(row["frames_per_s"], row["frames_per_s_compiled"]) / max(row["clips_per_s"], row["clips_per_s_compiled"])
    assert row["speedup_best"] == best
    assert abs(row["flop_ratio"] - 8.0) < 0.1  # 8-frame clip vs one frame of the same convs
    assert row["continual_model"] == "co_conv_stack"
    for rate in ("clips_per_s", "frames_per_s", "clips_per_s_compiled", "frames_per_s_compiled"):
        # every rate is a median of per-call rates, reported with their spread and how many calls it rests on
        assert row[f"{rate}_iqr"] >= 0 and row[f"{rate}_calls"] >= 2 and isinstance(row[f"{rate}_busy"], bool)
        assert f"{rate}_std" not in row
    printed = capsys.readouterr().out
    assert "bench finished; run directory: run\n" in printed
    assert re.search(r"^  results\s+run/bench\.json$", printed, re.MULTILINE)
    speedups = f"eager {row['speedup']:.3g}x, compiled {row['speedup_compiled']:.3g}x, best {row['speedup_best']:.3g}x"
    assert re.search(rf"^  conv_stack/co_conv_stack cpu\s+{re.escape(speedups)}$", printed, re.MULTILINE)


def test_a_prediction_takes_the_output_of_whichever_step_emits():
    from modules.profiling.speedup import _stepper

    calls = iter([None, torch.ones(1), None, None, None, None, None, None])
    predict = _stepper(lambda x: next(calls), torch.zeros(1), torch.device("cpu"), steps=4)
    assert predict().item() == 1  # the second of four steps emitted: a compiled step's phase
    with pytest.raises(RuntimeError, match="no output in 4 steps"):
        predict()
