"""Adapted from the continual-inference library's tests (Lukas Hedegaard, Apache-2.0),
tests/continual/multihead_attention/test_retroactive_mha.py.

Differences, each also named where it applies:
* continual attention here is self-attention over the input stream: the library's test fed separate random
  query, key and value sequences (cross-attention); here one sequence is all three (``mha(x, x, x)``);
* layout: the library's (L, N, E) sequences are transposed to channels-first clips (N, E, L) (shim), and a step
  returns the window as (N, E, L) (the library: (L, N, E));
* ``forward`` returns no attention weights.

Left out: ``test_scaled_dot_product_attention_step`` (it drives the library's private step function with the
library's state tuple; the state here is another one, see modules/continual/attention.py, and the same step
equation is checked through ``forward_step`` below) and ``test_flops`` (ptflops counts under the library's own
counting hooks and conventions).
"""

import torch
from torch.nn.modules.activation import MultiheadAttention

from .shim import RetroactiveMultiheadAttention, clip_from_sequence, sequence_from_clip

torch.manual_seed(42)


def test_multi_head_attention() -> None:
    L = 10  # target sequence length
    E = 4  # embedding dimension
    N = 5  # batch size
    H = 2  # num heads
    mha = MultiheadAttention(
        embed_dim=E,
        num_heads=H,
        dropout=0.0,
        bias=True,
        add_bias_kv=False,
        add_zero_attn=False,
        kdim=None,
        vdim=None,
        batch_first=False,
        device=None,
        dtype=None,
    )
    comha = RetroactiveMultiheadAttention.build_from(mha, sequence_len=L)

    query = torch.randn((L, N, E))
    clip = clip_from_sequence(query)

    attn_output, _ = mha.forward(query, query, query)

    # Forward is identical (up to the batch-first computation order)
    attn_output2 = comha.forward(clip)
    assert torch.allclose(attn_output, sequence_from_clip(attn_output2), atol=1e-6)

    # Forward steps gives same output for full sequence: one window (N, E, 1, L)
    attn_output3 = comha.forward_steps(clip)
    assert torch.allclose(attn_output, sequence_from_clip(attn_output3[:, :, 0]), atol=1e-6)

    # Initialise, then use forward_step
    comha.clean_state()
    attn_output_dummy = comha.forward_steps(clip[:, :, :-1])
    assert attn_output_dummy is None
    attn_output4 = comha.forward_step(clip[:, :, -1])
    assert torch.allclose(attn_output, sequence_from_clip(attn_output4), atol=1e-6)

    # Shift the sequence by a time-step
    query_step = torch.randn((N, E))
    query2 = torch.cat((query[1:], query_step.unsqueeze(0)), dim=0)
    assert torch.equal(query[1:], query2[:-1])

    attn_output_next, _ = mha.forward(query2, query2, query2)

    # Continual MHA should yield the same result by using query_step
    attn_output_next2 = comha.forward_step(query_step)
    assert torch.allclose(attn_output_next, sequence_from_clip(attn_output_next2), atol=1e-6)
