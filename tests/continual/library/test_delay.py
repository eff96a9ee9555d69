"""Adapted from the continual-inference library's tests (Lukas Hedegaard, Apache-2.0),
tests/continual/test_delay.py.

Differences: the state is read through ``get_state()`` (test_state), and the repr prints the fill.

Left out: ``test_auto_shrink``. The library's ``Delay(..., auto_shrink=True)`` shrinks the clip around the
delayed frames; here a Delay has no such keyword: a shrinking residual is built by
``Residual(module, residual_shrink=...)`` (test_container.py::test_residual_shrink_*), and ``Delay(shrink=...)``
drops frames at the end only.
"""

import torch

from .shim import Delay

torch.manual_seed(42)


def test_delay_3d():
    sample = torch.normal(mean=torch.zeros(4 * 3 * 3)).reshape((1, 1, 4, 3, 3))
    delay = Delay(delay=2, temporal_fill="zeros")
    delay.clean_state()  # Nothing should happen

    ones = torch.ones_like(sample[:, :, 0])

    assert delay.forward_step(sample[:, :, 0]) is None
    assert delay.forward_step(sample[:, :, 1]) is None

    assert torch.equal(delay.forward_step(sample[:, :, 2]), sample[:, :, 0])

    assert torch.equal(delay.forward_step(sample[:, :, 3]), sample[:, :, 1])

    assert torch.equal(delay.forward_step(ones), sample[:, :, 2])

    assert torch.equal(delay.forward_step(ones), sample[:, :, 3])

    assert torch.equal(delay.forward_step(ones), ones)


def test_delay_2d():
    sample = torch.rand((2, 2, 4, 3))
    delay = Delay(delay=2, temporal_fill="zeros")

    ones = torch.ones_like(sample[:, :, 0])

    assert delay.forward_step(sample[:, :, 0]) is None
    assert delay.forward_step(sample[:, :, 1]) is None

    assert torch.equal(delay.forward_step(sample[:, :, 2]), sample[:, :, 0])

    assert torch.equal(delay.forward_step(sample[:, :, 3]), sample[:, :, 1])

    assert torch.equal(delay.forward_step(ones), sample[:, :, 2])

    assert torch.equal(delay.forward_step(ones), sample[:, :, 3])

    assert torch.equal(delay.forward_step(ones), ones)


def test_delay_forward():
    sample = torch.rand((2, 2, 4, 3))
    delay = Delay(delay=2, temporal_fill="zeros")

    assert torch.equal(sample, delay.forward(sample))
    assert torch.equal(sample, delay.forward_steps(sample, pad_end=True))


def test_state():
    # Difference: the state is read through get_state() (a snapshot: ring buffer, step count), not through the
    # library's state_buffer / state_index attributes; the facts checked are the library test's.
    sample = torch.rand((2, 2, 4, 3))
    delay = Delay(delay=2, temporal_fill="zeros")

    zeros = torch.zeros_like(sample[:, :, 0])

    # State stays clean
    assert delay.get_state()[0] is None and delay.get_state()[-1] == 0

    delay.forward(sample)

    assert delay.get_state()[0] is None and delay.get_state()[-1] == 0

    # State is populated: the buffer holds the step and the zero fill of the unseen past
    delay.forward_step(sample[:, :, 0])
    frames = delay.get_state()[0].unbind(2)  # (B, C, delay, ...): the ring buffer on the time dim
    assert sorted(torch.equal(frame, sample[:, :, 0]) for frame in frames) == [False, True]
    assert any(torch.equal(frame, zeros) for frame in frames)
    assert delay.get_state()[-1] == 1  # still initialising

    # State can be cleaned
    delay.clean_state()
    assert delay.get_state()[0] is None and delay.get_state()[-1] == 0

    assert torch.equal(delay.forward_steps(sample, pad_end=True), sample)
    # state has not been flushed: the next steps release the last two frames
    assert torch.equal(delay.forward_step(zeros), sample[:, :, 2])
    assert torch.equal(delay.forward_step(zeros), sample[:, :, 3])


def test_zero_delay():
    sample = torch.rand((2, 2, 4, 3))

    no_delay = Delay(delay=0)
    assert torch.equal(no_delay.forward(sample), sample)
    assert torch.equal(no_delay.forward_steps(sample), sample)
    assert torch.equal(no_delay.forward_step(sample[:, :, -1]), sample[:, :, -1])


def test_repr():
    # Difference: the fill is printed too. The library's auto_shrink is not a Delay keyword here (see the
    # module docstring).
    delay = Delay(delay=2)
    assert delay.__repr__() == "Delay(2, temporal_fill='zeros')"
