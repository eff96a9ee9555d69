"""Shared helpers of the transformer net tests (OadTR, CoOadTR, the Nyströmformers)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: Small widths shared by the feature nets' tests: every forward takes milliseconds.
TINY: dict[str, Any] = {"dim_feature": 12, "embed_dim": 16, "num_heads": 2, "ff_dim": 8, "sequence_len": 5}
#: The continual ones also get a short recycling table (>= 2 n - 1 rows, so a window's positions stay distinct).
TINY_CO: dict[str, Any] = {**TINY, "num_embeddings": 9}


@contextmanager
def from_clean_state(net: nn.Module) -> Iterator[None]:
    """The clip output of a recycling-PE net is what steps compute from a fresh stream: the clip starts at
    positional offset 0, as ``step_through`` does."""
    net.clean_state()
    yield


#: Registry-test configurations of the feature nets (``tests/nets/test_registry.py`` builds ``Small(**kwargs)``):
#: ``frames`` steps of ``dim_feature`` features (``side`` unused), build ``overrides``; continual nets get two
#: outputs beyond the first and compare their clip output from offset 0 (``step_reference``).
TRANSFORMER_SMALL: dict[str, dict[str, Any]] = {
    **{name: {"side": 0, "frames": TINY["sequence_len"], "overrides": TINY} for name in ("oadtr_b1", "oadtr_b2")},
    "oadtr": {"side": 0, "frames": TINY["sequence_len"], "overrides": {**TINY, "decoder_layers": 2}},
    **{
        name: {"side": 0, "frames": TINY["sequence_len"] + 2, "overrides": TINY_CO, "step_reference": from_clean_state}
        for name in ("cooadtr_b1", "cooadtr_b2")
    },
    # Nyström: 6 steps, 2 landmarks (a refresh every 3 steps), so the 3 outputs include a lagged-landmark step
    **{
        name: {"side": 0, "frames": 6, "overrides": {**TINY, "sequence_len": 6, "num_landmarks": 2}}
        for name in ("nystromformer_b1", "nystromformer_b2")
    },
    **{
        name: {
            "side": 0,
            "frames": 8,
            "overrides": {**TINY_CO, "sequence_len": 6, "num_landmarks": 2, "num_embeddings": 11},
            "step_reference": from_clean_state,
        }
        for name in ("conystromformer_b1", "conystromformer_b2")
    },
}


def save_original_checkpoint(path: Path, state: dict[str, Tensor], **args: Any) -> Path:
    """Write ``state`` as the original ``main.py`` does: ``{"model", "optimizer", "lr_scheduler", "epoch", "args"}``
    with ``args`` a real ``argparse.Namespace``."""
    optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(2))], lr=1e-4, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    torch.save(
        {
            "model": state,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": 4,
            "args": argparse.Namespace(lr=1e-4, batch_size=128, enc_layers=64, **args),
        },
        path,
    )
    return path
