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
    assert re.search(r"^  table\s+run/bench\.md$", printed, re.MULTILINE)
    table = (tmp_path / "run" / "bench.md").read_text().splitlines()
    assert table[0].endswith(f"commit {saved['meta']['commit']}, torch {torch.__version__}")
    best = f"**{row['speedup_best']:.2f} [{row['speedup_best_min']:.2f}-{row['speedup_best_max']:.2f}]**"
    assert table[4].startswith("| conv_stack / co_conv_stack | 1 | fp32 | ") and best in table[4]
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


PAIR = "[{clip: conv_stack, continual: co_conv_stack, input_shape: [3, 8, 16, 16]}]"
QUICK = [f"pairs={PAIR}", "devices=[cpu]", "rounds=1", "round_seconds=0.02", "warmup=1", "batch_sizes=[1]"]
QUICK += ["compile=false", "onnx=false", "history_file=null"]


def test_each_precision_is_a_row_and_what_cannot_run_is_listed_as_skipped(compose_cfg, tmp_path, capsys):
    main(compose_cfg("bench.yaml", [*QUICK, "precisions=[fp32,bf16,tf32]"]))
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert [r["precision"] for r in saved["rows"]] == ["fp32", "bf16"] and saved["complete"]
    assert saved["skipped"] == [{"device": "cpu", "precision": "tf32", "skipped": "tf32 is a CUDA setting"}]
    assert re.search(r"^  conv_stack/co_conv_stack cpu B=1 bf16\s+eager", capsys.readouterr().out, re.MULTILINE)


def test_a_pair_without_kernels_for_a_precision_is_skipped_with_the_reason(compose_cfg, tmp_path):
    pair = "[{clip: x3d_tiny, continual: cox3d_tiny, input_shape: [3, 8, 32, 32]}]"
    main(compose_cfg("bench.yaml", [*QUICK, f"pairs={pair}", "precisions=[bf16]"]))
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert saved["rows"] == [] and len(saved["skipped"]) == 1
    skip = saved["skipped"][0]
    assert (skip["clip_model"], skip["precision"], skip["batch_size"]) == ("x3d_tiny", "bf16", 1)
    assert "bf16 on cpu" in skip["skipped"] and "BFloat16" in skip["skipped"]  # CPU's avg_pool3d has no bf16 kernel


def test_only_batch_sizes_measures_a_part_of_the_plan(compose_cfg, tmp_path):
    main(compose_cfg("bench.yaml", [*QUICK, "batch_sizes=[1,2,3]", "only_batch_sizes=[2]"]))
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert [r["batch_size"] for r in saved["rows"]] == [2]


def test_a_run_stopped_early_keeps_the_rows_it_measured(compose_cfg, tmp_path, monkeypatch):
    import experiments.bench as bench

    real, calls = bench.bench_pair, []

    def stops_at_the_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "bench_pair", stops_at_the_second)
    history = tmp_path / "history.csv"
    with pytest.raises(KeyboardInterrupt):
        main(compose_cfg("bench.yaml", [*QUICK, "batch_sizes=[1,2]", f"history_file={history}"]))
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert not saved["complete"] and [r["batch_size"] for r in saved["rows"]] == [1]
    assert len(history.read_text().splitlines()) == 2  # the header and the measured row


def test_an_older_history_is_rewritten_in_the_current_columns_with_its_rows_kept(tmp_path):
    path = tmp_path / "history.csv"
    old_columns = [c for c in HISTORY_COLUMNS if c not in ("cuda", "precision", "clips_per_s_graph")]
    path.write_text(",".join(old_columns) + "\n" + ",".join(f"v{i}" for i in range(len(old_columns))) + "\n")
    append_history([{"clip_model": "x", "precision": "bf16"}], path, {"date": "d"})
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == HISTORY_COLUMNS and len(lines) == 3
    old_row = dict(zip(HISTORY_COLUMNS, lines[1].split(",")))
    assert all(old_row[c] == f"v{i}" for i, c in enumerate(old_columns))
    assert old_row["precision"] == old_row["cuda"] == old_row["clips_per_s_graph"] == ""
    new_row = dict(zip(HISTORY_COLUMNS, lines[2].split(",")))
    assert (new_row["clip_model"], new_row["precision"], new_row["date"]) == ("x", "bf16", "d")


def test_the_gpu_bench_config_measures_the_issue_pairs_on_cuda(compose_cfg):
    cfg = compose_cfg("bench_gpu.yaml")
    pairs = [(p.clip, p.continual, list(p.get("batch_sizes") or cfg.batch_sizes)) for p in cfg.pairs]
    assert pairs[:3] == [("x3d_s", "cox3d_s", [1, 64]), ("x3d_m", "cox3d_m", [1, 64]), ("x3d_l", "cox3d_l", [64])]
    assert pairs[3] == ("x3d_s", "cox3d_s", [1]) and cfg.pairs[3].depthwise_step == "unrolled"
    assert list(cfg.devices) == ["cuda"] and list(cfg.compile_devices) == ["cuda"] and cfg.require_cuda
    assert list(cfg.precisions) == ["tf32", "bf16"] and cfg.cuda_graph and cfg.profile and not cfg.onnx
    assert cfg.cudnn_benchmark and not compose_cfg("bench.yaml").cudnn_benchmark
    assert str(cfg.history_file).endswith("paper/results/bench_gpu_history.csv")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no CUDA device is present")
def test_the_gpu_bench_refuses_to_run_without_a_gpu(compose_cfg, tmp_path):
    with pytest.raises(RuntimeError, match=r"no CUDA device here.*make bench-cox3d"):
        main(compose_cfg("bench_gpu.yaml"))
    assert not (tmp_path / "run" / "bench.json").exists()


def test_the_table_shows_both_nets_best_cuda_graph_and_their_ratio():
    from modules.profiling.speedup import format_table

    row = {"clip_model": "a", "continual_model": "b", "device": "cuda", "batch_size": 1, "precision": "bf16"}
    row |= {"clips_per_s": 100.0, "frames_per_s": 400.0, "speedup": 4.0, "speedup_min": 3.9, "speedup_max": 4.1}
    row |= {"clips_per_s_graph": 150.0, "clips_per_s_compiled_graph": 180.0, "frames_per_s_graph": 900.0}
    row |= {"frames_per_s_compiled_graph": 1500.0, "speedup_graph": 6.0, "speedup_graph_min": 5, "speedup_graph_max": 7}
    row |= {"speedup_compiled_graph": 8.3, "speedup_compiled_graph_min": 8.0, "speedup_compiled_graph_max": 8.6}
    row |= {"speedup_default": 4.0, "speedup_best": 8.33, "flop_ratio": 12.9}
    header, line = format_table([row]).splitlines()
    assert "graph c/s" in header and "graph ratio" in header
    assert re.search(r"cuda\s+1 bf16\s+100\.00\s+400\.0", line)
    assert re.search(r"180\.0\s+1500\.0\s+8\.30 \[8\.00-8\.60\]\s+4\.00\s+8\.33\s+12\.9$", line)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_on_cuda_both_nets_run_eager_compiled_and_as_cuda_graphs(compose_cfg, tmp_path, precision):
    overrides = [f"pairs={PAIR}", "devices=[cuda]", "compile_devices=[cuda]", "rounds=2", "round_seconds=0.05"]
    overrides += ["warmup=1", "batch_sizes=[2]", "onnx=false", "history_file=null", "profile=true"]
    main(compose_cfg("bench.yaml", [*overrides, f"precisions=[{precision}]"]))
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    (row,) = saved["rows"]
    assert saved["meta"]["cuda"] and row["skipped_variants"] == {} and row["precision"] == precision
    variants = ("clips_per_s", "clips_per_s_compiled", "clips_per_s_graph", "clips_per_s_compiled_graph")
    variants += ("frames_per_s", "frames_per_s_compiled", "frames_per_s_graph", "frames_per_s_compiled_graph")
    assert all(row[v] > 0 for v in variants)
    for ratio in ("speedup_graph", "speedup_compiled_graph", "speedup_best"):
        assert row[f"{ratio}_min"] <= row[ratio] <= row[f"{ratio}_max"]
    assert set(row["cuda_profile"]) == set(variants) and row["cuda_profile"]["frames_per_s"]["kernels"] >= 3
    assert "GPU busy ms" in (tmp_path / "run" / "profile.md").read_text()


def test_a_pair_can_step_its_depthwise_convs_unrolled_and_says_so(compose_cfg, tmp_path, capsys):
    pair = "[{clip: x3d_tiny, continual: cox3d_tiny, input_shape: [3, 8, 32, 32], depthwise_step: unrolled}]"
    main(compose_cfg("bench.yaml", [*QUICK, f"pairs={pair}"]))
    (row,) = json.loads((tmp_path / "run" / "bench.json").read_text())["rows"]
    assert row["continual_model"] == "cox3d_tiny[depthwise_step=unrolled]" and row["frames_per_s"] > 0
    assert row["flop_ratio"] > 1  # counted before the setting: the arithmetic is the net's, however it is expressed
    assert "x3d_tiny/cox3d_tiny[depthwise_step=unrolled] cpu" in capsys.readouterr().out
    plain = "[{clip: conv_stack, continual: co_conv_stack, input_shape: [3, 8, 16, 16], depthwise_step: unrolled}]"
    with pytest.raises(ValueError, match="depthwise_step set, but the twin has no depthwise conv"):
        main(compose_cfg("bench.yaml", [*QUICK, f"pairs={plain}"]))


def test_profile_batch_sizes_choose_what_is_profiled_and_nothing_profiled_writes_nothing(compose_cfg, tmp_path, capsys):
    main(compose_cfg("bench.yaml", [*QUICK, "profile=true", "profile_batch_sizes=[2]"]))
    assert not (tmp_path / "run" / "profile.md").exists()
    assert "profile" not in capsys.readouterr().out.split("run directory")[-1]


def test_the_markdown_table_shows_each_variant_and_dashes_what_was_not_measured():
    from modules.profiling.speedup import format_markdown

    row = {"clip_model": "x3d_s", "continual_model": "cox3d_s", "device": "cuda", "device_name": "NVIDIA H200"}
    row |= {"batch_size": 1, "precision": "tf32", "clips_per_s": 174.0, "clips_per_s_graph": 250.0}
    row |= {"frames_per_s": 93.0, "frames_per_s_graph": 748.0, "frames_per_s_compiled_graph": 2000.0}
    row |= {"speedup_best": 8.0, "speedup_best_min": 7.5, "speedup_best_max": 8.5, "flop_ratio": 12.9}
    row |= {"speedup_default": 0.53, "speedup_default_min": 0.5, "speedup_default_max": 0.6}
    text = format_markdown([row], {"date": "2026-12-06", "commit": "abc", "torch": "2.11", "cuda": "13.0"})
    lines = text.splitlines()
    assert lines[0] == "NVIDIA H200; 2026-12-06, commit abc, torch 2.11, CUDA 13.0"
    assert lines[4] == (
        "| x3d_s / cox3d_s | 1 | tf32 | 174.0 / - / 250.0 / - | 93.0 / - / 748.0 / 2000.0 | **8.00 [7.50-8.50]** "
        "| 0.53 [0.50-0.60] | 12.9 |"
    )
