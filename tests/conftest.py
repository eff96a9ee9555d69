"""Shared fixtures: every test runs in its own temp directory with wandb disabled unless a test says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

#: Overrides that shrink the synthetic data so that a run takes seconds.
TINY = [
    "data.num_train=32",
    "data.num_val=16",
    "data.num_test=16",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in a temp dir (nothing lands in the repo) with wandb off and no real credentials visible."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    # `make test ARGS=...` exports the command line's variables to nested makes: the Makefile dry runs must not see them
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "ARGS"):
        monkeypatch.delenv(name, raising=False)
    # CPU tests: keep thread pools small on shared 2-core machines
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    # evaluation compiles the steady-state step by default (configs/eval/*.yaml); inductor would add minutes here,
    # the tests that compile say so themselves
    monkeypatch.setenv("EVAL_COMPILE", os.environ.get("EVAL_COMPILE", "false"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for tests of tiny tensors: on a shared 2-core machine OpenMP contention made each op up
    to 30x slower. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose ``<name>.yaml`` with overrides as ``hydra.main`` would, writing into ``tmp_path/<subdir>``."""

    def _compose(name: str, overrides: list[str] = (), subdir: str = "run") -> DictConfig:
        GlobalHydra.instance().clear()
        out = tmp_path / subdir
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(
                config_name=name,
                overrides=[*overrides, f"paths.output_dir={out}"],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # hydra.main hands the task config without it
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def run_module(module: str, *args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` and fail with its output if it exits non-zero.

    The timeout only catches a hung process: it is generous because a loaded 2-core machine runs these several
    times slower than an idle one.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{module} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc
