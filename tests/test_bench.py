"""The clip-vs-continual benchmark runs and reports a ratio measured in one run (no timing is asserted)."""

import json

from experiments.bench import bench


def test_bench_reports_rates_and_ratios(compose_cfg, tmp_path):
    pair = "[{clip: conv_stack, continual: co_conv_stack, frames: 8, crop: 16}]"
    # the eager backend checks the compiled path's plumbing without inductor's C++ compilation
    overrides = [f"pairs={pair}", "devices=[cpu]", "rounds=2", "round_seconds=0.05", "warmup=1"]
    overrides.append("compile_backend=eager")
    cfg = compose_cfg("bench.yaml", overrides)
    rows = bench(cfg)
    assert len(rows) == 1
    row = rows[0]
    assert row["clips_per_s"] > 0 and row["frames_per_s"] > 0
    assert row["speedup"] == row["frames_per_s"] / row["clips_per_s"]
    assert row["speedup_compiled"] == row["frames_per_s_compiled"] / row["clips_per_s_compiled"]
    best = max(row["frames_per_s"], row["frames_per_s_compiled"]) / max(row["clips_per_s"], row["clips_per_s_compiled"])
    assert row["speedup_best"] == best
    assert abs(row["flop_ratio"] - 8.0) < 0.1  # 8-frame clip vs one frame of the same convs
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert saved["rows"][0]["continual_model"] == "co_conv_stack"
