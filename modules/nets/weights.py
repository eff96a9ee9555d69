"""Loading official checkpoints into our nets: read the file, convert its keys, load with a report.

Each net family registers a converter for the checkpoint formats it understands (``register_converter``).
``load_pretrained(net, path)`` reads the file (torch ``.pyth/.pth/.pt/.ckpt``, or a Caffe2 ``.pkl`` pickle), asks
the converters in turn, and loads the converted state dict: shapes must match (a mismatch raises), missing and
unexpected keys are reported and warned about (``strict=True``: missing keys are an error). ``skip_head=True``
leaves the classifier head as the net has it, for fine-tuning on another class count. Continual twins share the
offline nets' keys, so one converter serves both. Converters find the state dict inside a training checkpoint with
``unwrap_state_dict``, so that every format accepts the same wrappings.

Files are unpickled with ``weights_only=True``: tensors, containers and the classes in ``SAFE_GLOBALS`` (what the
official formats need) only; a file that needs more, an empty or truncated file, and a Lightning training checkpoint
of this framework (resumed with ``ckpt_path=``, not imported as weights) are errors that name the file.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import logging
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "LIGHTNING_VERSION_KEY",
    "SAFE_GLOBALS",
    "STATE_DICT_KEYS",
    "CheckpointError",
    "LoadReport",
    "head_keys",
    "is_lightning_checkpoint",
    "load_pretrained",
    "load_torch_file",
    "read_checkpoint",
    "register_converter",
    "skipping_head",
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


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used as asked: the message names the file, the problem and the fix."""


#: The classes beyond tensors and containers that the official formats pickle: the original OadTR / CoOadTR
#: checkpoints keep their command line as an ``argparse.Namespace`` (``args``); the continual-skeletons ``.ckpt``
#: files are Lightning checkpoints, whose ``hyper_parameters`` Lightning may keep in an ``AttributeDict``, read as an
#: ``OrderedDict`` (this module does not import Lightning; the weights never depend on the hyper-parameters)
SAFE_GLOBALS: list[Any] = [
    argparse.Namespace,
    *((OrderedDict, f"{module}.AttributeDict") for module in
      ("pytorch_lightning.utilities.parsing", "lightning_fabric.utilities.data", "lightning.fabric.utilities.data")),
]  # fmt: skip

#: The key every Lightning checkpoint has (``pytorch_lightning``; ``lightning`` writes ``lightning_version`` too)
LIGHTNING_VERSION_KEY = "pytorch-lightning_version"


def is_lightning_checkpoint(raw: Mapping[str, Any]) -> bool:
    """Whether ``raw`` is a Lightning training checkpoint (a run to resume or test with ``ckpt_path=``)."""
    return LIGHTNING_VERSION_KEY in raw or "lightning_version" in raw


def load_torch_file(path: str | Path, *, weights_only: bool = True, mmap: bool = False) -> Any:
    """``torch.load`` of ``path`` onto the CPU, with ``SAFE_GLOBALS`` allowed under ``weights_only`` (``mmap``:
    tensors stay on disk until read); an empty, truncated or corrupt file, or one that pickles other classes, is a
    ``CheckpointError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted download or save; fetch or "
                              "write it again")  # fmt: skip
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"checkpoint {path} ({size} bytes) is corrupt: {e}") from e
        raise CheckpointError(
            f"checkpoint {path} pickles classes beyond tensors and containers, which are not loaded (they could run "
            f"code): {_unpickler_reason(e)}. If the file is trusted and an official format needs the class, add it to "
            "modules.nets.weights.SAFE_GLOBALS"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is truncated or corrupt ({type(e).__name__}: {_first_line(e)}); "
            "an interrupted download or save: fetch or write it again"
        ) from e


def _unpickler_reason(error: BaseException) -> str:
    """The line of torch's weights-only error that names the refused class (its first lines are generic)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line or "GLOBAL" in line or "but got" in line]
    return named[0] if named else _first_line(error)


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw content of a checkpoint file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".pkl":
        with path.open("rb") as f:
            try:
                raw = pickle.load(f, encoding="latin1")  # Caffe2 pickles hold numpy arrays written by Python 2
            except (EOFError, pickle.UnpicklingError) as e:
                raise CheckpointError(f"checkpoint {path} is empty, truncated or corrupt ({type(e).__name__}: "
                                      f"{e}); fetch it again") from e  # fmt: skip
    else:
        raw = load_torch_file(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(raw).__name__}, not a dict of tensors")
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


_SKIPPING_HEAD: contextvars.ContextVar[bool] = contextvars.ContextVar("skipping_head", default=False)


def skipping_head() -> bool:
    """Whether the running ``load_pretrained`` leaves the head out: converters then accept a checkpoint of another
    class count instead of raising."""
    return _SKIPPING_HEAD.get()


@contextlib.contextmanager
def _skip_head(skip: bool) -> Iterator[None]:
    token = _SKIPPING_HEAD.set(skip)
    try:
        yield
    finally:
        _SKIPPING_HEAD.reset(token)


def head_keys(net: nn.Module) -> list[str]:
    """The state-dict keys of ``net``'s classifier: the weights and biases of its linear and convolution layers
    that output the class scores (``fc``, ``head.projection``, ``mlp_head`` and OadTR's decoder ``classifier``).

    The class count is the output width of the last such layer; every layer of that width is a classifier.
    """
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    if not layers:
        raise ValueError(f"{type(net).__name__} has no linear or convolution layer: it has no classifier head to skip")
    classes = layers[-1][1].weight.shape[0]
    own = net.state_dict()
    prefixes = [f"{name}." for name, m in layers if m.weight.shape[0] == classes]
    return sorted(k for k in own if any(k.startswith(p) for p in prefixes))


def load_pretrained(net: nn.Module, path: str | Path, *, skip_head: bool = False, strict: bool = False) -> LoadReport:
    """Load an official checkpoint into ``net`` (an offline net or its continual twin).

    ``skip_head=True`` keeps ``net``'s own classifier (``head_keys``): the checkpoint's may score another class
    count (fine-tuning on a new task). ``strict=True`` makes keys missing from the checkpoint (other than a skipped
    head) an error instead of a warning.

    Raises ``CheckpointError`` (a ``ValueError``) for an unreadable file or a Lightning training checkpoint that no
    format recognises (a run, to be resumed or tested with ``ckpt_path=``), and ``ValueError`` when no converter
    recognises the file, when a tensor's shape differs from the net's, or (strict) when keys are missing; warns
    about missing and unexpected keys.
    """
    raw = read_checkpoint(path)
    with _skip_head(skip_head):
        converter = next((c for c in _CONVERTERS if c.accepts(net, raw)), None)
        if converter is None and is_lightning_checkpoint(raw):
            # official Lightning checkpoints (continual-skeletons) have a converter; this one is a training run's
            raise CheckpointError(
                f"{path} is a Lightning training checkpoint (it has {LIGHTNING_VERSION_KEY!r}), not weights of a "
                f"format {type(net).__name__} knows: resume or test a run with ckpt_path={path} instead of "
                "model.net.weights="
            )
        if converter is None:
            known = ", ".join(c.name for c in _CONVERTERS) or "none registered"
            raise ValueError(
                f"no converter recognises {path} for {type(net).__name__} (top-level keys: {sorted(raw)[:8]}); "
                f"known formats: {known}"
            )
        state = {k: _as_tensor(v) for k, v in converter.convert(net, raw).items()}
    skipped = head_keys(net) if skip_head else []
    state = {k: v for k, v in state.items() if k not in skipped}
    own = net.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs net {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and own[k].shape != v.shape]  # fmt: skip
    if mismatched:
        hint = "" if skip_head else " (a head for another class count: load with skip_head=True / weights_skip_head)"
        raise ValueError(f"shape mismatch loading {path} ({converter.name}){hint}:\n  " + "\n  ".join(mismatched))
    loadable = {k: v.to(own[k].dtype) for k, v in state.items() if k in own}
    report = LoadReport(
        path=str(path),
        converter=converter.name,
        loaded=sorted(loadable),
        missing=sorted(set(own) - set(loadable) - set(skipped)),
        unexpected=sorted(set(state) - set(own)),
    )
    if strict and report.missing:
        raise ValueError(
            f"{path} ({converter.name}) lacks {len(report.missing)} of {type(net).__name__}'s keys: "
            f"{report.missing[:10]}; strict loading refuses a partial import (strict=False warns instead)"
        )
    net.load_state_dict(loadable, strict=False)
    if report.missing:
        warnings.warn(
            f"{path}: {len(report.missing)} keys missing from the checkpoint: {report.missing[:10]}", stacklevel=2
        )
    if report.unexpected:
        warnings.warn(
            f"{path}: {len(report.unexpected)} unexpected keys ignored: {report.unexpected[:10]}", stacklevel=2
        )
    if skipped:
        log.info("%s: classifier head %s left as built (skip_head)", path, skipped)
    log.info("%s", report)
    return report
