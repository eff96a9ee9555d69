"""Adapted from the continual-inference library's tests (Lukas Hedegaard, Apache-2.0),
tests/continual/multihead_attention/test_single_output_mha.py.

Differences, each also named where it applies:
* continual attention here is self-attention over the input stream: the library's test fed separate random
  query, key and value sequences (cross-attention); here one sequence is all three (``mha(x, x, x)``);
* layout: the library's (L, N, E) sequences are transposed to channels-first clips (N, E, L) (shim);
* ``forward`` returns the attention output of all L positions and no attention weights; the library's (with
  ``single_output_forward=True``) returned the selected position and its weights.

Left out: ``test_flops`` (ptflops counts under the library's own counting hooks and conventions).
The two library tests (default and non-default ``query_index``) are one parametrised test here.
"""

import pytest
import torch
from torch.nn.modules.activation import MultiheadAttention

from .shim import SingleOutputMultiheadAttention, clip_from_sequence

torch.manual_seed(42)


@pytest.mark.parametrize("query_index", [-1, 2])
def test_multi_head_attention(query_index: int) -> None:
    L = 10  # target sequence length
    E = 4  # embedding dimension
    N = 4  # batch size
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
    comha = SingleOutputMultiheadAttention.build_from(mha, sequence_len=L, query_index=query_index)

    query = torch.randn((L, N, E))
    clip = clip_from_sequence(query)

    attn_output, _ = mha.forward(query, query, query)

    # Forward: every position (the library's single_output_forward returned the selected one)
    attn_output2 = comha.forward(clip)
    assert torch.allclose(attn_output[query_index], attn_output2[:, :, query_index], atol=1e-6)

    # Forward steps gives same output for full sequence
    attn_output3 = comha.forward_steps(clip)
    assert torch.allclose(attn_output[query_index], attn_output3[:, :, 0], atol=1e-6)

    # Initialise, then use forward_step
    comha.clean_state()
    attn_output_dummy = comha.forward_steps(clip[:, :, :-1])
    assert attn_output_dummy is None
    attn_output4 = comha.forward_step(clip[:, :, -1])
    assert torch.allclose(attn_output[query_index], attn_output4, atol=1e-6)

    # Shift the sequence by a time-step
    query_step = torch.randn((N, E))
    query2 = torch.cat((query[1:], query_step.unsqueeze(0)), dim=0)
    assert torch.equal(query[1:], query2[:-1])

    attn_output_next, _ = mha.forward(query2, query2, query2)

    # Continual MHA should yield the same result by using query_step
    attn_output_next2 = comha.forward_step(query_step)
    assert torch.allclose(attn_output_next[query_index], attn_output_next2, atol=1e-6)
