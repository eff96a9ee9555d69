"""Checks of a composed config before anything is instantiated, so that a wrong value names its key.

Without them a typo surfaces deep inside a library: ``trainer.max_epochs=abc`` as a bare ``AssertionError`` in
Lightning, ``model.optimizer.lr=fast`` as a ``TypeError`` in the optimiser's constructor, an unknown SPA criterion
only after the whole fine-tune. ``check(cfg)`` looks at the keys every entry point shares (trainer, data, optimiser,
seed) and, for SPA runs, the criterion, adapter and schedule; it raises ``ConfigError`` listing every bad key with
its value and what it accepts. Keys a config does not have are not checked (each entry point composes different
groups). ``check_ckpt_path(path)`` checks a checkpoint given to ``ckpt_path=`` before ``trainer.fit/test``.

The entry points call ``check(cfg)`` first thing after composition and ``check_ckpt_path(cfg.ckpt_path)`` before
fitting or testing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from omegaconf import DictConfig, OmegaConf

from modules.nets.weights import CheckpointError, is_lightning_checkpoint, load_torch_file
from modules.pruning.criteria import Coupling, Criterion

__all__ = ["ConfigError", "check", "check_ckpt_path"]


class ConfigError(ValueError):
    """One or more config values of the wrong type or out of range; the message names each key and its value."""


#: Lightning's precision names (``pytorch_lightning.Trainer(precision=...)``)
PRECISIONS = ("64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed",
              "transformer-engine", "transformer-engine-float16")  # fmt: skip
MASK_MODES = ("enforced", "legacy")
ADAPTER_METHODS = ("finetune", "splora", "sppara")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _int_at_least(low: int) -> Callable[[Any], str | None]:
    def rule(value: Any) -> str | None:
        return None if _is_int(value) and value >= low else f"an integer >= {low}"

    return rule


def _epochs(value: Any) -> str | None:
    # Lightning: -1 trains without an epoch limit
    return None if _is_int(value) and value >= -1 else "an integer >= 0 (-1: no limit)"


def _devices(value: Any) -> str | None:
    if value == "auto" or (_is_int(value) and (value >= 1 or value == -1)):
        return None
    if isinstance(value, str) and value.replace(",", "").strip().isdigit():
        return None  # "0,1": those GPU indices
    if OmegaConf.is_list(value) or isinstance(value, list):
        return None if value and all(_is_int(v) and v >= 0 for v in value) else "a non-empty list of device indices"
    return "an integer >= 1, -1 (all), 'auto', or a list of device indices"


def _precision(value: Any) -> str | None:
    return None if str(value) in PRECISIONS else f"one of {', '.join(PRECISIONS)}"


def _positive_number(value: Any) -> str | None:
    return None if _is_number(value) and value > 0 else "a finite number > 0"


def _non_negative_number(value: Any) -> str | None:
    return None if _is_number(value) and value >= 0 else "a finite number >= 0"


def _fraction(value: Any) -> str | None:
    return None if _is_number(value) and 0 < value <= 1 else "a number in (0, 1]"


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    def rule(value: Any) -> str | None:
        return None if value in allowed else f"one of {', '.join(map(repr, allowed))}"

    return rule


def _optional(rule: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def optional(value: Any) -> str | None:
        if value is None:
            return None
        problem = rule(value)
        return None if problem is None else f"null or {problem}"

    return optional


def _deterministic(value: Any) -> str | None:
    return None if isinstance(value, bool) or value == "warn" else "true, false or 'warn'"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


#: key -> rule (None when the value is fine, else what the key accepts); checked where the config has the key
RULES: dict[str, Callable[[Any], str | None]] = {
    "seed": _optional(_int_at_least(0)),
    "trainer.max_epochs": _optional(_epochs),
    "trainer.min_epochs": _optional(_int_at_least(0)),
    "trainer.devices": _devices,
    "trainer.precision": _precision,
    "trainer.deterministic": _optional(_deterministic),
    "trainer.check_val_every_n_epoch": _optional(_int_at_least(1)),
    "trainer.log_every_n_steps": _int_at_least(1),
    "trainer.accumulate_grad_batches": _int_at_least(1),
    "data.batch_size": _int_at_least(1),
    "data.num_workers": _int_at_least(0),
    "model.optimizer.lr": _non_negative_number,  # 0: weights frozen (torch accepts it)
    "model.optimizer.weight_decay": _non_negative_number,
    "model.optimizer.momentum": _non_negative_number,
    "num_threads": _optional(_int_at_least(1)),
    # SPA: checked here, before the fine-tune (modules/prune_recover.py checks its own arguments again)
    "spa_data.datamodule.batch_size": _int_at_least(1),
    "spa_data.lr": _positive_number,
    "spa_data.weight_decay": _non_negative_number,
    "spa_data.recovery_weight_decay": _optional(_non_negative_number),
    "spa_data.epochs_initial": _int_at_least(0),
    "spa_data.epochs_recovery": _int_at_least(0),
    "pruning.criterion": _one_of(*get_args(Criterion)),
    "pruning.coupling": _one_of(*get_args(Coupling)),
    "pruning.mask_mode": _one_of(*MASK_MODES),
    "pruning.step_frac": _fraction,
    "pruning.total_pr": _fraction,
    "pruning.max_steps": _optional(_int_at_least(0)),
    "pruning.norm": _bool,
    "pruning.mask_bn": _bool,
    "adapter.method": _one_of(*ADAPTER_METHODS),
    "adapter.rank": _int_at_least(0),
}


def check(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` naming every key of ``RULES`` in ``cfg`` whose value has the wrong type or range."""
    problems = []
    for key, rule in RULES.items():
        if OmegaConf.select(cfg, key, default="???missing") == "???missing":
            continue  # not in this entry point's config
        value = OmegaConf.select(cfg, key)
        problem = rule(value)
        if problem is not None:
            problems.append(f"{key}={value!r} ({type(value).__name__}): expected {problem}")
    if problems:
        raise ConfigError("invalid config value(s); fix them on the command line or in the config:\n  "
                          + "\n  ".join(problems))  # fmt: skip


def check_ckpt_path(path: str | Path | None) -> None:
    """Check that ``path`` (``ckpt_path=``) is a readable Lightning checkpoint before ``trainer.fit/test`` read it:
    a missing, empty or truncated file, or an official/plain state dict (``model.net.weights=``), is an error that
    names the file and the fix. ``None`` (no checkpoint) passes."""
    if path is None:
        return
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path} does not exist: give the .ckpt file of a run (<run>/checkpoints/)")
    raw = load_torch_file(path, weights_only=False, mmap=True)  # our own runs' files; mmap: no tensor is read
    if not isinstance(raw, dict) or not is_lightning_checkpoint(raw):
        keys = sorted(raw)[:6] if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"ckpt_path={path} is not a Lightning checkpoint (no 'pytorch-lightning_version'; holds {keys}): a net's "
            f"weights or an official checkpoint are imported with model.net.weights={path}"
        )
