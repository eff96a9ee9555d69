"""Resolvers of the online action detection configs (``configs/data/thumos14.yaml``, ``tvseries.yaml``), registered
with the others by ``experiments.inputs.register_resolvers``:

* ``${oad_feature_dim:<dataset>,<feature>}``: the width of one feature step (rgb + flow [+ audio]) of the
  pre-extracted features the Continual Transformers paper used (Hedegaard et al., ICLR 2023; CoOadTR's
  ``--dim_feature``): THUMOS14 TSN features pretrained on ActivityNet (``anet``, 2048 rgb + 1024 flow = 3072) or
  Kinetics (``kin``, 4096), each optionally with 4096-d AudioSet features (``*_audio``); TVSeries TSN-R50 features
  (4096 for both pretrainings).
* ``${oad_metric:<task>,<name>}``: the metric a run of ``task`` optimises and returns: ``val/<name>`` when training
  (``task_name: train``: the metric after the last epoch), ``test/<name>`` otherwise (``experiments.eval`` logs test
  metrics only), e.g. ``optimized_metric: ${oad_metric:${task_name},mcAP}``.
"""

from __future__ import annotations

from omegaconf import OmegaConf

__all__ = ["FEATURE_DIMS", "oad_feature_dim", "oad_metric", "register"]

#: dataset -> feature -> width of a step
FEATURE_DIMS: dict[str, dict[str, int]] = {
    "thumos14": {"anet": 3072, "kin": 4096, "anet_audio": 7168, "kin_audio": 8192},
    "tvseries": {"anet": 4096, "kin": 4096},
}


def oad_feature_dim(dataset: str, feature: str) -> int:
    """The feature width of ``dataset`` with ``feature``; an unknown pair names the known ones."""
    if dataset not in FEATURE_DIMS:
        raise KeyError(f"oad_feature_dim: dataset {dataset!r} is none of {sorted(FEATURE_DIMS)}")
    if feature not in FEATURE_DIMS[dataset]:
        raise KeyError(
            f"oad_feature_dim: {dataset} has no feature {feature!r}; use one of {sorted(FEATURE_DIMS[dataset])}"
        )
    return FEATURE_DIMS[dataset][feature]


def oad_metric(task: str, name: str) -> str:
    """``val/<name>`` for the ``train`` task, ``test/<name>`` for any other."""
    return f"{'val' if task == 'train' else 'test'}/{name}"


def register() -> None:
    """Register ``oad_feature_dim`` and ``oad_metric`` (idempotent)."""
    for name, resolver in {"oad_feature_dim": oad_feature_dim, "oad_metric": oad_metric}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
