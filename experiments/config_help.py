"""``--help`` that lists only the config groups and experiments of the entry point asked.

Every entry point shares one config root (``configs/``), so Hydra's own ``$APP_CONFIG_GROUPS`` would show the SPA
study's groups in ``python -m experiments.train --help`` and the video ones in ``experiments.spa``. The
``config_groups`` resolver (used by ``configs/hydra/default.yaml``'s help template) lists the groups named in the
entry point's primary config (its defaults list), the experiments whose ``override /group`` entries all fall in
those groups, and one line naming the groups that belong to other entry points.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

__all__ = ["CONFIG_DIR", "ENTRY_POINTS", "config_groups_help", "entry_point_groups", "experiment_groups"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# wiring a user never picks (hydra: run directories and this help; paths: roots set by environment variables)
_NOT_LISTED = {"hydra", "paths"}
#: the primary configs, one per entry point (configs/<name>.yaml, python -m experiments.<name>)
ENTRY_POINTS = ("train", "eval", "profile", "bench", "demo", "spa")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _all_groups() -> list[str]:
    """Top-level groups with options (``model/base`` is an internal include of the model configs)."""
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and _options(p.name))


def _defaults_groups(path: Path) -> set[str]:
    """Groups a config file selects or overrides in its defaults list (``- group: option``, ``- override /g: o``)."""
    groups = set()
    for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []) or []:
        if isinstance(entry, dict):
            for key in entry:
                groups.add(str(key).removeprefix("override ").strip().lstrip("/").split("@")[0])
    return groups


@cache
def entry_point_groups(config_name: str) -> frozenset[str]:
    """The groups ``configs/<config_name>.yaml`` composes."""
    return frozenset(_defaults_groups(CONFIG_DIR / f"{config_name}.yaml"))


def experiment_groups(name: str) -> set[str]:
    """Groups an experiment file overrides, including those of the experiments it builds on."""
    path = CONFIG_DIR / "experiment" / f"{name}.yaml"
    groups = _defaults_groups(path)
    for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []) or []:
        if isinstance(entry, str) and entry != "_self_" and (CONFIG_DIR / "experiment" / f"{entry}.yaml").is_file():
            groups |= experiment_groups(entry)
    return groups


def config_groups_help(config_name: str) -> str:
    """The ``group: options`` lines of one entry point, then the groups it does not use."""
    mine = entry_point_groups(config_name.removesuffix(".yaml"))
    lines = []
    for group in _all_groups():
        if group in mine and group not in _NOT_LISTED:
            options = _options(group)
            if group == "experiment":
                options = [o for o in options if experiment_groups(o) <= mine]
            lines.append(f"{group}: {', '.join(options)}")
    others = [g for g in _all_groups() if g not in mine and g not in _NOT_LISTED]
    if others:
        users = {g: [n for n in ENTRY_POINTS if g in entry_point_groups(n)] for g in others}
        names = ", ".join(f"{g} ({'/'.join(users[g]) or 'no entry point'})" for g in others)
        lines.append(f"\nGroups of other entry points (python -m experiments.<name> --help): {names}")
    return "\n".join(lines)


def register() -> None:
    if not OmegaConf.has_resolver("config_groups"):
        OmegaConf.register_new_resolver("config_groups", config_groups_help)
