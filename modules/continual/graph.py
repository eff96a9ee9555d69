"""Replay a warmed-up continual step as a CUDA graph.

A step is a chain of small kernels; launching them one by one from Python bounds a single stream's frame rate by
launch overhead, not arithmetic. Because the core writes its state in place and keeps step counters on the host,
a step taken once the window is full can be captured and replayed: each replay reads the new frame from a static
input buffer, updates the state tensors where they are, and writes the output into a static buffer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CudaGraphStep", "warm_until_output"]


def warm_until_output(net: nn.Module, step: Tensor, extra_steps: int = 0) -> int:
    """Feed ``step`` until the net emits (``net.delay + 1`` steps from a clean state), then ``extra_steps`` more;
    returns the number of steps fed."""
    fed, out = 0, None
    while out is None:
        if fed > net.delay:
            raise RuntimeError(f"{type(net).__name__} emitted nothing after net.delay + 1 = {fed} steps")
        out = net.forward_step(step)
        fed += 1
    for _ in range(extra_steps):
        net.forward_step(step)
    return fed + extra_steps


class CudaGraphStep:
    """``CudaGraphStep(net, first_step)`` captures ``net.forward_step`` after stepping ``first_step`` through it
    until it emits; calling it with a step returns the next output (a view of a static buffer: clone it to keep).

    Requirements: CUDA, eval mode, no autograd, and a net whose temporal stride is 1 (with stride ``s`` only one
    step in ``s`` emits, so a single captured step cannot stand for all of them).
    """

    def __init__(self, net: nn.Module, first_step: Tensor, warmup_steps: int = 3) -> None:
        if first_step.device.type != "cuda":
            raise ValueError("CudaGraphStep needs the step on a CUDA device")
        if net.stride[0] != 1:
            raise ValueError(f"CudaGraphStep needs temporal stride 1, the net has {net.stride[0]}")
        if net.training:
            raise ValueError("CudaGraphStep needs net.eval(): training-mode layers cannot step")
        self.net = net
        with torch.no_grad():
            # Fill the window (and choose kernels) eagerly: capture records kernels without running them.
            warm_until_output(net, first_step, warmup_steps)
            self.static_in = first_step.clone()
            self.graph = torch.cuda.CUDAGraph()
            torch.cuda.synchronize(first_step.device)
            with torch.cuda.graph(self.graph):
                self.static_out = net.forward_step(self.static_in)

    def __call__(self, step: Tensor) -> Tensor:
        self.static_in.copy_(step, non_blocking=True)
        self.graph.replay()
        return self.static_out
