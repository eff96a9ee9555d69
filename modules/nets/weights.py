"""Loading official checkpoints into our nets: read the file, convert its keys, load with a report.

Each net family registers a converter for the checkpoint formats it understands (``register_converter``).
``load_pretrained(net, path)`` reads the file (torch ``.pyth/.pth/.pt/.ckpt``, or a Caffe2 ``.pkl`` pickle), asks
the converters in turn, and loads the converted state dict: shapes must match (a mismatch raises), missing and
unexpected keys are reported and warned about. Continual twins share the offline nets' keys, so one converter
serves both. Converters find the state dict inside a training checkpoint with ``unwrap_state_dict``, so that every
format accepts the same wrappings.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "STATE_DICT_KEYS",
    "LoadReport",
    "load_pretrained",
    "read_checkpoint",
    "register_converter",
    "unwrap_state_dict",
]

log = logging.getLogger(__name__)

#: accepts(net, raw_checkpoint) -> bool; convert(net, raw_checkpoint) -> state dict in the net's own key names
Accepts = Callable[[nn.Module, Mapping[str, Any]], bool]
Convert = Callable[[nn.Module, Mapping[str, Any]], dict[str, Tensor]]


@dataclass(frozen=True)
class _Converter:
    name: str
    accepts: Accepts
    convert: Convert


_CONVERTERS: list[_Converter] = []


def register_converter(name: str, accepts: Accepts, convert: Convert) -> None:
    """Add a checkpoint format; later registrations are tried first."""
    _CONVERTERS.insert(0, _Converter(name, accepts, convert))


@dataclass
class LoadReport:
    """What ``load_pretrained`` did: the format it recognised and the keys it loaded, missed and ignored."""

    path: str
    converter: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.path} ({self.converter}): {len(self.loaded)} tensors loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected"
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw content of a checkpoint file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".pkl":
        with path.open("rb") as f:
            raw = pickle.load(f, encoding="latin1")  # Caffe2 pickles hold numpy arrays written by Python 2
    else:
        raw = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(raw, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(raw).__name__}, not a dict of tensors")
    return dict(raw)


#: Where training checkpoints keep the model's state dict, looked up in this order: SlowFast and pytorchvideo
#: (``model_state``), Lightning (``state_dict``), torchvision's reference scripts (``model``).
STATE_DICT_KEYS = ("model_state", "state_dict", "model")

#: The prefix ``DataParallel`` and ``DistributedDataParallel`` give every key of the module they wrap.
_PARALLEL_PREFIX = "module."


def _strip_parallel_prefix(key: str) -> str:
    while key.startswith(_PARALLEL_PREFIX):  # DDP around DataParallel nests the prefix
        key = key[len(_PARALLEL_PREFIX) :]
    return key


def unwrap_state_dict(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The model's state dict inside checkpoint ``raw``: the first of ``STATE_DICT_KEYS`` whose value is a dict,
    else ``raw`` itself (a bare state dict), with the ``module.`` prefixes of ``DataParallel``/DDP removed.

    Other wrapper prefixes (Lightning's attribute name, e.g. pytorchvideo's ``model.``) are the converters' own.
    """
    state = next((raw[k] for k in STATE_DICT_KEYS if isinstance(raw.get(k), Mapping)), raw)
    return {_strip_parallel_prefix(k): v for k, v in state.items()}


def _as_tensor(value: Any) -> Tensor:
    return value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))


def load_pretrained(net: nn.Module, path: str | Path) -> LoadReport:
    """Load an official checkpoint into ``net`` (an offline net or its continual twin).

    Raises ``ValueError`` when no converter recognises the file or when a tensor's shape differs from the net's;
    warns about missing and unexpected keys.
    """
    raw = read_checkpoint(path)
    converter = next((c for c in _CONVERTERS if c.accepts(net, raw)), None)
    if converter is None:
        known = ", ".join(c.name for c in _CONVERTERS) or "none registered"
        raise ValueError(
            f"no converter recognises {path} for {type(net).__name__} (top-level keys: {sorted(raw)[:8]}); "
            f"known formats: {known}"
        )
    state = {k: _as_tensor(v) for k, v in converter.convert(net, raw).items()}
    own = net.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs net {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and own[k].shape != v.shape]  # fmt: skip
    if mismatched:
        raise ValueError(f"shape mismatch loading {path} ({converter.name}):\n  " + "\n  ".join(mismatched))
    loadable = {k: v.to(own[k].dtype) for k, v in state.items() if k in own}
    net.load_state_dict(loadable, strict=False)
    report = LoadReport(
        path=str(path),
        converter=converter.name,
        loaded=sorted(loadable),
        missing=sorted(set(own) - set(loadable)),
        unexpected=sorted(set(state) - set(own)),
    )
    if report.missing:
        warnings.warn(
            f"{path}: {len(report.missing)} keys missing from the checkpoint: {report.missing[:10]}", stacklevel=2
        )
    if report.unexpected:
        warnings.warn(
            f"{path}: {len(report.unexpected)} unexpected keys ignored: {report.unexpected[:10]}", stacklevel=2
        )
    log.info("%s", report)
    return report
