"""Peak memory of one call: the live tensor storages on CPU, ``max_memory_allocated`` on CUDA."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .macs import countable

__all__ = ["peak_live_bytes", "peak_memory"]


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storages alive at once, sampled after every aten op.

    It sees what torch allocates for op outputs (not allocator caching or an op's internal workspace), which
    on CPU is the closest analogue of CUDA's ``max_memory_allocated``: process RSS or ``tracemalloc`` cannot
    isolate one call (torch allocates through C, outside Python's allocator).
    """

    def __init__(self, existing: Sequence[Tensor]) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        for t in existing:
            self._track(t)
        self.peak = self.current

    @property
    def current(self) -> int:
        return sum(n for _, n in self.live.values())

    def _track(self, t: Tensor) -> None:
        storage = t.untyped_storage()
        ref = StorageWeakRef(storage)
        if ref.cdata not in self.live:
            self.live[ref.cdata] = (ref, storage.nbytes())

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.device.type != "meta":
                self._track(t)
        self.peak = max(self.peak, self.current)
        return out


def peak_live_bytes(fn: Callable[[], Any], existing: Sequence[Tensor] = ()) -> int:
    """Peak bytes of live tensor storages while ``fn()`` runs, ``existing`` tensors (weights, inputs) included."""
    with countable(), _LiveBytes(existing) as tracker:
        fn()
    return tracker.peak


def _state_tensors(net: nn.Module) -> list[Tensor]:
    state = net.get_state() if hasattr(net, "get_state") else None
    return [t for t in tree_leaves(state) if isinstance(t, Tensor)]


def peak_memory(net: nn.Module, predict: Callable[[], Any], device: torch.device, inputs: Sequence[Tensor]) -> int:
    """Peak bytes over one ``predict()``: CUDA's ``max_memory_allocated``, or on CPU the peak of live tensor
    storages; weights, buffers, the continual state and ``inputs`` included either way."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        predict()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    existing = [*net.parameters(), *net.buffers(), *_state_tensors(net), *inputs]
    return peak_live_bytes(predict, existing)
