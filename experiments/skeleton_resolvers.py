"""Resolvers of the skeleton configs (``configs/data/ntu*.yaml``, ``configs/model/skeleton.yaml``), registered
with the others by ``experiments.inputs.register_resolvers``:

* ``${skeleton_data:<field>,<dataset or stream>}``: ``channels`` of a stream, ``joints`` or ``graph`` (the nets'
  graph name) of a dataset (``ntu60``, ``ntu120``, ``kinetics``), from ``datamodules.skeletons``;
* ``${scaled_lr:<lr>,<reference batch>,<batch>,<devices>}``: the linear learning-rate scaling of the skeleton
  recipes (spec B4), ``lr / reference · batch · devices``, e.g. ``${scaled_lr:0.1,64,${data.batch_size},1}``;
* ``${skeleton_run:<net>,<dataset>,<subset>,<stream>}``: the run's name, that of the table row and column it
  reproduces, e.g. ``cost_gcn_mod_ntu60_xsub_joint`` (a null subset is left out: ``..._kinetics_bone``).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

__all__ = ["register", "scaled_lr", "skeleton_data", "skeleton_run"]


def skeleton_data(field: str, key: str) -> Any:
    """``channels`` of a stream, or ``joints`` / ``graph`` of a skeleton dataset."""
    from datamodules.skeletons import DATASETS, STREAMS

    if field not in ("channels", "joints", "graph"):
        raise KeyError(f"skeleton_data: {field!r} is not a skeleton fact; use channels, joints or graph")
    table = STREAMS if field == "channels" else DATASETS
    if key not in table:
        raise KeyError(f"skeleton_data:{field}: {key!r} is none of {sorted(table)}")
    if field == "channels":
        return STREAMS[key]
    if field == "joints":
        return DATASETS[key][1]
    return "kinetics" if key == "kinetics" else "ntu"


def scaled_lr(lr: float, reference_batch: int, batch_size: int, devices: Any) -> float:
    """``lr`` set for ``reference_batch`` samples per step, scaled linearly to ``batch_size · devices``."""
    count = len(devices) if isinstance(devices, list | tuple) else devices
    if not isinstance(count, int) or count < 1 or batch_size < 1 or reference_batch < 1:
        raise ValueError(
            f"scaled_lr needs positive batch sizes and a device count, got reference_batch={reference_batch}, "
            f"batch_size={batch_size}, devices={devices!r}; give trainer.devices as a number"
        )
    return float(lr) / reference_batch * batch_size * count


def skeleton_run(net: str, dataset: str, subset: str | None, stream: str) -> str:
    """``<net>_<dataset>[_<subset>]_<stream>``."""
    return "_".join(str(part) for part in (net, dataset, subset, stream) if part is not None)


def register() -> None:
    """Register the three (idempotent)."""
    resolvers = {"skeleton_data": skeleton_data, "scaled_lr": scaled_lr, "skeleton_run": skeleton_run}
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
