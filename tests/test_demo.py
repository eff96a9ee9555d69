"""`make demo` end to end on a shrunken Moving Digits (slow: trains, steps, profiles)."""

import pandas as pd
import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from experiments.demo import demo
from tests.conftest import CONFIGS


@pytest.mark.slow
def test_demo_chain_writes_results_and_figure(compose_cfg, tmp_path):
    shrink = [
        "logger=csv", "trainer.max_epochs=1", "data.num_train=40",
        "data.num_val=10", "data.num_test=10", "data.num_workers=0", "data.progress=false",
    ]  # fmt: skip
    quoted = ",".join(f'"{s}"' for s in shrink)
    stages = ['profile_overrides=["repeats=2","warmup=1"]', 'train_overrides=["callbacks.progress_bar.refresh_rate=0"]']
    cfg = compose_cfg("demo.yaml", [f"overrides=[{quoted}]", *stages])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):  # as hydra.main does for the demo
        table = demo(cfg)
    assert list(table["protocol"]) == ["clip", "frame"]
    assert table["gflops"].iloc[0] > 5 * table["gflops"].iloc[1]  # one frame of the twin vs a whole clip
    saved = pd.read_csv(tmp_path / "run" / "results.csv")
    assert saved["top1"].between(0, 1).all()
    assert (tmp_path / "run" / "acc_vs_flops.png").stat().st_size > 5_000
