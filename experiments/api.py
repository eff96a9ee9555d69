"""Run an entry point from Python, with the same configs and overrides as its command line.

    fit = experiments.run("train", "experiment=x3d_tiny_moving_digits")
    test = experiments.run("eval", "experiment=cox3d_tiny_moving_digits", f"ckpt_path={fit.best_checkpoint}")

Each call composes ``configs/<name>.yaml`` with Hydra's compose API, gives the run its own directory (the one the
command line would use, ``outputs/<task>/<date>/<time>``, unless ``output_dir`` is given) and calls the entry
point's function. Unlike ``hydra.main`` it does not configure logging or change the working directory.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from experiments.config_help import CONFIG_DIR

__all__ = ["Run", "compose_config", "run"]

#: entry point -> (module, function taking the composed config)
ENTRY_POINTS = {
    "train": ("experiments.train", "train"),
    "eval": ("experiments.eval", "evaluate"),
    "profile": ("experiments.profile", "profile"),
}


@dataclass
class Run:
    """What a run wrote: its directory and the metrics (or profile result) the entry point returned."""

    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def best_checkpoint(self) -> Path:
        """The monitored best checkpoint (``checkpoints/epoch_*.ckpt``); an error when the run saved none."""
        found = sorted((self.output_dir / "checkpoints").glob("epoch_*.ckpt"))
        if not found:
            raise FileNotFoundError(f"{self.output_dir}/checkpoints holds no epoch_*.ckpt; did the run train?")
        return found[-1]

    @property
    def last_checkpoint(self) -> Path:
        path = self.output_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; did the run train with callbacks=default?")
        return path


def compose_config(name: str, overrides: list[str] | tuple[str, ...] = (), output_dir: str | Path | None = None):
    """``configs/<name>.yaml`` composed with ``overrides`` as ``hydra.main`` would, its run directory created."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=name):
            cfg: DictConfig = compose(config_name=name, overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    out = Path(output_dir) if output_dir is not None else Path(cfg.hydra.run.dir)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out.resolve())
        cfg.hydra.runtime.cwd = os.getcwd()
    HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.output_dir} resolves through it
    with open_dict(cfg):
        del cfg["hydra"]  # hydra.main hands the task config without it
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already holds a run; pass another output_dir (runs never share a directory)")
    out.mkdir(parents=True, exist_ok=True)
    return cfg


def run(name: str, *overrides: str, output_dir: str | Path | None = None) -> Run:
    """Run the entry point ``name`` (train, eval, profile) with command-line style ``overrides``."""
    if name not in ENTRY_POINTS:
        raise ValueError(f"unknown entry point {name!r}; choose one of {sorted(ENTRY_POINTS)}")
    module, function = ENTRY_POINTS[name]
    cfg = compose_config(name, overrides, output_dir)
    result = getattr(importlib.import_module(module), function)(cfg)
    return Run(Path(cfg.paths.output_dir), dict(result))
