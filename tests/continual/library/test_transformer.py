"""Adapted from the continual-inference library's tests (Lukas Hedegaard, Apache-2.0),
tests/continual/test_transformer.py.

Differences: ``forward`` of a 2-layer encoder returns all T positions (the library's: the last one); step
tolerance atol 1e-6 (see test_trans_enc_b1). Left out: the ptflops parts of both tests (counts under the
library's own counting hooks and conventions).
"""

import torch
from torch import nn

from . import shim as co

torch.manual_seed(42)


def test_trans_enc_b1():
    T = 10  # temporal sequence length
    E = 4  # embedding dimension
    N = 1  # batch size
    H = 2  # num heads

    encoder_layer = nn.TransformerEncoderLayer(d_model=E, nhead=H, dim_feedforward=E * 2, dropout=0.0, batch_first=True)
    regenc = nn.TransformerEncoder(
        encoder_layer,
        num_layers=1,
        norm=nn.LayerNorm(E),
    )

    enc = co.TransformerEncoder.build_from(regenc, sequence_len=T)

    # NB: regular and continual transformers expect different input formats
    query = torch.randn((N, E, T))
    query_reg_format = query.permute(0, 2, 1)  # N, T, E

    # Baseline
    oreg = regenc.forward(query_reg_format)
    o = enc.forward(query)

    assert torch.allclose(oreg.permute(0, 2, 1), o)

    # Forward step
    o_step = enc.forward_steps(query[:, :, :-1])  # init

    o_step = enc.forward_step(query[:, :, -1])

    # Difference: atol 1e-6 (the library: allclose's default atol 1e-8, 1e-7 below): a step computes the attention
    # row in another order than nn's forward; errors up to ~1.5e-7 on values of order 1.
    assert torch.allclose(o[:, :, -1], o_step, atol=1e-6)


def test_trans_enc_b2():
    T = 10  # temporal sequence length
    E = 4  # embedding dimension
    N = 1  # batch size
    H = 2  # num heads

    encoder_layer = nn.TransformerEncoderLayer(d_model=E, nhead=H, dim_feedforward=E * 2, dropout=0.0, batch_first=True)
    regenc = nn.TransformerEncoder(
        encoder_layer,
        num_layers=2,
        # norm=nn.LayerNorm(E),
    )

    enc = co.TransformerEncoder.build_from(regenc, sequence_len=T)

    # NB: regular and continual transformers expect different input formats
    query = torch.randn((N, E, T))
    query_reg_format = query.permute(0, 2, 1)  # N, T, E

    # Baseline
    oreg = regenc.forward(query_reg_format)
    o = enc.forward(query)

    # Difference: forward returns all T positions (the library's 2-layer encoder returned the last one only).
    assert torch.allclose(oreg.permute(0, 2, 1)[:, :, -1], o[:, :, -1], atol=1e-6)

    # Forward step
    o_step = enc.forward_steps(query[:, :, :-1])  # init

    o_step = enc.forward_step(query[:, :, -1], update_state=False)

    assert torch.allclose(o[:, :, -1], o_step, atol=1e-6)  # Difference: atol 1e-6, see above

    # Same result with forward_steps
    o_step2 = enc.forward_steps(query[:, :, -1].unsqueeze(-1))
    assert torch.allclose(o_step, o_step2.squeeze(-1))
