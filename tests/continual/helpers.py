"""Shared checks of the step protocol."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def step_through(module: nn.Module, clip: Tensor) -> list[Tensor | None]:
    """Outputs of ``forward_step`` for every step of ``clip`` from a clean state."""
    module.clean_state()
    return [module.forward_step(clip[:, :, t]) for t in range(clip.shape[2])]


def assert_steps_match(module: nn.Module, clip: Tensor, reference: Tensor, atol: float = 1e-5) -> None:
    """The step contract: None exactly where no window is complete, then the prefix of ``reference``;
    ``forward_steps(pad_end=True)`` gives all of ``reference``."""
    with torch.no_grad():
        outs = step_through(module, clip)
        emitted = [t for t, y in enumerate(outs) if y is not None]
        expected = [t for t in range(clip.shape[2]) if t >= module.delay and (t - module.delay) % module.stride[0] == 0]
        assert emitted == expected, f"outputs at steps {emitted}, expected {expected} (delay {module.delay})"
        if emitted:
            stepped = torch.stack([y for y in outs if y is not None], dim=2)
            torch.testing.assert_close(stepped, reference[:, :, : stepped.shape[2]], atol=atol, rtol=0)
        module.clean_state()
        full = module.forward_steps(clip, pad_end=True)
    assert full is not None
    assert full.shape == reference.shape
    torch.testing.assert_close(full, reference, atol=atol, rtol=0)


def assert_peek_does_not_advance(module: nn.Module, clip: Tensor) -> None:
    """``update_state=False`` returns what the real step returns and leaves the state as it was, step by step
    and for ``forward_steps`` on a fresh module."""
    with torch.no_grad():
        module.clean_state()
        for t in range(clip.shape[2]):
            before = module.get_state()
            peek = module.forward_step(clip[:, :, t], update_state=False)
            torch.testing.assert_close(module.get_state(), before, atol=0, rtol=0)
            out = module.forward_step(clip[:, :, t])
            assert (peek is None) == (out is None)
            if out is not None:
                torch.testing.assert_close(peek, out, atol=0, rtol=0)
        module.clean_state()
        peek = module.forward_steps(clip, update_state=False)
        torch.testing.assert_close(peek, module.forward_steps(clip), atol=0, rtol=0)
