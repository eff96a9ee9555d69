"""Adapted from the continual-inference library's tests (Lukas Hedegaard, Apache-2.0),
tests/continual/test_linear.py.

Differences: ``Linear.build_from`` defaults to ``channel_dim=1`` (channels first); the library's default -1.
"""

import torch
from torch import nn

from . import shim as co


def test_linear():
    # Difference: build_from defaults to channel_dim=1, the channels of a channels-first clip (B, C, T); the
    # library's default -1 is the features of a (N, T, C) sequence. The library's own "alternative channel_dim"
    # case is this layout; the facts checked (forward, forward_steps, forward_step equal nn) are the same.
    mod = nn.Linear(2, 3, bias=True)
    comod = co.Linear.build_from(mod)

    assert comod.delay == 0
    assert comod.__repr__() == "Linear(in_features=2, out_features=3, bias=True, channel_dim=1)"

    #                     N, T, C
    sample = torch.randn((1, 3, 2))
    sample_cf = sample.swapaxes(1, 2)  # N, C, T

    target = mod.forward(sample).swapaxes(1, 2)

    # forward
    o = comod.forward(sample_cf)
    assert torch.allclose(target, o)

    # forward_steps
    o_steps = comod.forward_steps(sample_cf[:, :, :2])
    assert torch.allclose(target[:, :, :2], o_steps)

    # forward_step
    o_step = comod.forward_step(sample_cf[:, :, 2])
    assert torch.allclose(target[:, :, 2], o_step)
