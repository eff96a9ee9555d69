"""GFLOPs per prediction of the 12 skeleton nets against spec B7 (ptflops 0.6.9 on the original code, NTU-60 input
``(1, 3, 300, 25, 2)``; continual nets: warm up ``rf − pad − 1`` frames, then count the ``stride`` steps of one
prediction). Slow: every net runs at full size; ``python -m tests.nets.skeleton.test_flops`` prints the table.

``modules.profiling``'s ``"ptflops"`` convention charges modules as ptflops did (conv formulas on what each call
returns); the executed MACs (``"macs"``) exceed its conv/linear part by two amounts, both measured here:

* ``unit_products``: the products the spatial units compute with tensor ops (ST-GCN's ``x·A_k``, AGCN's ``θᵀφ``
  and ``x·(A+B+C)``, S-TR's ``q·kᵀ`` and ``weights·v``) are not modules, so ptflops never saw them.
* ``dropped_steps``: a continual conv of temporal stride 2 convolves every input step with all its taps, also on
  the steps whose output the stride drops (it returns ``None``); ptflops charged the emitted outputs only. Only the
  original twins (CoST-GCN, CoAGCN, CoS-TR: layer5 and layer8) have such convs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from modules import continual as co
from modules.nets import build
from modules.nets.skeleton import gcn
from modules.profiling import FlopCounter
from modules.profiling.macs import countable

#: spec B7: GFLOPs per prediction, ptflops 0.6.9 on continual-skeletons a8fe293
TARGETS = {
    "st_gcn": 16.728, "st_gcn_mod": 36.903, "agcn": 18.685, "agcn_mod": 40.870, "s_tr": 16.142, "s_tr_mod": 35.653,
    "cost_gcn": 0.223, "cost_gcn_mod": 0.156, "coagcn": 0.250, "coagcn_mod": 0.172, "cos_tr": 0.216,
    "cos_tr_mod": 0.151,
}  # fmt: skip
_UNIT_METHODS = ((gcn.GraphConvolution, "_aggregate"), (gcn.AdaptiveGraphConvolution, "_aggregate_clip"),
                 (gcn.FrameAdaptiveGraphConvolution, "_aggregate"), (gcn.SpatialAttention, "forward"))  # fmt: skip


@contextlib.contextmanager
def _tally_dropped_steps(counter: FlopCounter, net: nn.Module, tally: list[int]) -> Iterator[None]:
    """Add to ``tally[0]`` the MACs that strided continual convs execute on steps that emit nothing."""
    strided = [m for m in net.modules() if isinstance(m, co.Conv2d) and m.stride[0] > 1]

    saved = [m.__dict__.get("forward_step") for m in strided]  # the FlopCounter's own wrapper, if any

    def wrap(module: nn.Module) -> None:
        method = module.forward_step

        def call(step: Any, *args: Any, **kwargs: Any) -> Any:
            before = counter.macs.total
            out = method(step, *args, **kwargs)
            if out is None:
                tally[0] += counter.macs.total - before
            return out

        module.__dict__["forward_step"] = call

    for m in strided:
        wrap(m)
    try:
        yield
    finally:
        for m, previous in zip(strided, saved):
            if previous is None:
                del m.__dict__["forward_step"]
            else:
                m.__dict__["forward_step"] = previous


@contextlib.contextmanager
def _tally_unit_products(counter: FlopCounter, tally: list[int]) -> Iterator[None]:
    """Add to ``tally[0]`` the non-convolution MACs executed inside the spatial units' product methods."""
    originals: list[tuple[type, str, Callable[..., Any]]] = []
    depth = [0]

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return method(self, *args, **kwargs)
            before = counter.macs.by_op.copy()
            depth[0] += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                depth[0] -= 1
                delta = counter.macs.by_op - before
                tally[0] += sum(v for op, v in delta.items() if "convolution" not in op)

        return call

    for cls, name in _UNIT_METHODS:
        originals.append((cls, name, cls.__dict__[name]))
        setattr(cls, name, wrap(cls.__dict__[name]))
    try:
        yield
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)


def measure(name: str) -> dict[str, float]:
    """GFLOPs of one prediction of ``name``: ``ptflops`` and ``macs`` conventions and the unit products."""
    torch.manual_seed(0)
    net = build(name).eval()
    continual = hasattr(net, "delay")
    if continual:
        net.clean_state()
        with torch.no_grad():
            for _ in range(net.receptive_field - net.padding[0] - 1):  # ride's warm-up (spec B3)
                net.forward_step(torch.randn(1, 3, 25, 2))
        frames = torch.randn(1, 3, net.stride[0], 25, 2)

        def run() -> None:
            outs = [net.forward_step(frames[:, :, t]) for t in range(frames.shape[2])]
            assert sum(o is not None for o in outs) == 1
    else:
        clip = torch.randn(1, 3, 300, 25, 2)

        def run() -> None:
            net(clip)

    products, dropped = [0], [0]
    counter = FlopCounter(net, stepping=continual)
    tallies = (_tally_unit_products(counter, products), _tally_dropped_steps(counter, net, dropped))
    with torch.no_grad(), countable(), counter, tallies[0], tallies[1]:
        run()
    return {
        "ptflops": counter.total("ptflops") / 1e9,
        "macs": counter.total("macs") / 1e9,
        "module_macs": counter.module_macs / 1e9,
        "unit_products": products[0] / 1e9,
        "dropped_steps": dropped[0] / 1e9,
    }


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_ptflops_convention_is_the_published_count_and_the_executed_gap_is_explained(name: str) -> None:
    r = measure(name)
    assert r["ptflops"] == pytest.approx(TARGETS[name], rel=0.01)
    # executed = what ptflops saw of the modules + the products it never saw + the strided convs' dropped steps
    assert r["macs"] == pytest.approx(r["module_macs"] + r["unit_products"] + r["dropped_steps"], rel=1e-4)
    assert (r["dropped_steps"] > 0) == (name in ("cost_gcn", "coagcn", "cos_tr"))


def main() -> None:
    torch.set_num_threads(2)
    print(f"{'model':14s} {'ptflops':>8s} {'target':>7s} {'ptf/t':>6s} {'macs':>8s} {'products':>8s} "
          f"{'dropped':>8s}")  # fmt: skip
    for name, target in TARGETS.items():
        r = measure(name)
        print(f"{name:14s} {r['ptflops']:8.4f} {target:7.3f} {r['ptflops'] / target:6.3f} {r['macs']:8.4f} "
              f"{r['unit_products']:8.4f} {r['dropped_steps']:8.4f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
