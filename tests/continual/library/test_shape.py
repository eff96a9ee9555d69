"""Adapted from the continual-inference library's tests (Lukas Hedegaard, Apache-2.0),
tests/continual/test_shape.py.

Differences: ``Reshape`` keeps the batch dim (test_reshape); the library's shape checks, which lacked
``assert``, are asserted.
"""

import pytest
import torch

from . import shim as co


def test_reshape():
    # Difference: the shape keeps the batch dim as it is (1 here): the library's Reshape(2, 20) folded the
    # batch of 1 into 2 rows, mixing streams, which is refused here. The library's shape checks had no assert;
    # here they are asserted.
    x = torch.randn((1, 2, 3, 4, 5))

    r1 = co.Reshape((1, 2, 20), contiguous=True)
    r2 = co.Reshape(1, 2, 20)

    assert r1.shape == r2.shape
    assert r1.__repr__() == "Reshape((1, 2, 20), contiguous=True)"
    assert r2.__repr__() == "Reshape((1, 2, 20))"

    # Temporal axis is always in position 2
    assert r1.forward(x).shape == (1, 2, 3, 20)
    assert r1.forward_steps(x).shape == (1, 2, 3, 20)
    assert r1.forward_step(x[:, :, 0]).shape == (1, 2, 20)
    with pytest.raises(ValueError, match="mixing independent streams"):
        co.Reshape(2, 20).forward(x)
