"""Adapted from the continual-inference library's tests (Lukas Hedegaard, Apache-2.0),
tests/continual/multihead_attention/test_stacked_mha.py.

Differences: layout (the library's batch-first (N, L, E) sequences become channels-first clips (N, E, L),
shim); ``forward`` returns the output without attention weights, so the library's
``forward_returns_attn_mask=False`` is not passed; a single-output ``forward`` returns every position (the
library's: the selected one), so the last position is compared.
"""

import torch
from torch.nn.modules.activation import MultiheadAttention

from .shim import RetroactiveMultiheadAttention, SingleOutputMultiheadAttention, clip_from_sequence


def test_stacked_mha() -> None:
    L = 10  # target sequence length
    E = 4  # embedding dimension
    N = 5  # batch size
    H = 2  # num heads

    # Regular net
    r1 = MultiheadAttention(embed_dim=E, num_heads=H, dropout=0.0, bias=True, batch_first=True)
    r2 = MultiheadAttention(embed_dim=E, num_heads=H, dropout=0.0, bias=True, batch_first=True)

    class Reg(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1 = r1
            self.l2 = r2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x, _ = self.l1(x, x, x)
            x, _ = self.l2(x, x, x)
            return x

    reg = Reg()

    # Continual net
    c1 = RetroactiveMultiheadAttention.build_from(r1, sequence_len=L)
    c2 = SingleOutputMultiheadAttention.build_from(r2, sequence_len=L, query_index=-1)

    class Con(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1 = c1
            self.l2 = c2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.l2(self.l1(x))

        def forward_step(self, x: torch.Tensor) -> torch.Tensor | None:
            x = self.l1.forward_step(x)  # the updated window (N, E, L)
            if not isinstance(x, torch.Tensor):
                return x
            return self.l2.forward(x)[:, :, -1]

        def forward_steps(self, x: torch.Tensor) -> torch.Tensor | None:
            outs = []
            o = None
            for t in range(x.shape[2]):
                o = self.forward_step(x[:, :, t])
                if isinstance(o, torch.Tensor):
                    outs.append(o)
            if len(outs) > 0:
                return torch.stack(outs, dim=2)
            return o

    con = Con()

    # Test
    x = torch.randn((N, L, E))
    clip = clip_from_sequence(x, batch_first=True)

    o_reg = reg.forward(x)  # Baseline

    # Forward
    o_con = con.forward(clip)

    assert torch.allclose(o_reg[:, -1], o_con[:, :, -1], atol=1e-6)

    # Forward step
    assert con.forward_steps(clip[:, :, :-1]) is None  # initialise
    o_con_step = con.forward_step(clip[:, :, -1])

    assert torch.allclose(o_reg[:, -1], o_con_step, atol=1e-6)
