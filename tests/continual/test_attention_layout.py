"""The layout keyword ``embed_dim_second`` of continual attention and transformer modules.

``True`` (the default here) is this core's channels-first layout, clips ``(B, E, T)``; ``False`` is
continual-inference's default token layout with ``batch_first=True``, clips ``(B, T, E)``. Steps are ``(B, E)``
in both. The shapes asserted for ``False`` are the ones the library (v1.2.4, Lukas Hedegaard, Apache-2.0)
documents and returns in continual/multihead_attention/*.py: a retroactive step ``(N, L, E)``, its
``forward_steps`` ``(N, T', L, E)`` (``(N, E, T', L)`` with ``embed_dim_second``), a single-output step ``(N, E)``
and its ``forward_steps`` ``(N, T', E)``.
"""

import pytest
import torch
from torch import nn

from modules import continual as co

E, H, N, T, B = 8, 2, 4, 7, 2  # embed dim, heads, window, clip length, batch


def _pair(cls: type, **kwargs: object) -> tuple[nn.Module, nn.Module]:
    """The same weights in both layouts."""
    torch.manual_seed(0)
    first = cls(E, H, sequence_len=N, **kwargs).eval()
    second = cls(E, H, sequence_len=N, embed_dim_second=False, **kwargs).eval()
    second.load_state_dict(first.state_dict())
    return first, second


def test_default_layout_is_channels_first() -> None:
    for cls in (co.RetroactiveMultiheadAttention, co.SingleOutputMultiheadAttention):
        assert cls(E, H, sequence_len=N).embed_dim_second is True
    assert "embed_dim_second=False" in repr(co.SingleOutputMultiheadAttention(E, H, N, embed_dim_second=False))


def test_retroactive_layouts_are_transposes() -> None:
    first, second = _pair(co.RetroactiveMultiheadAttention)
    clip = torch.randn(B, E, T)
    tokens = clip.transpose(1, 2)
    assert torch.equal(second(tokens), first(clip).transpose(1, 2))
    steps_first, steps_second = first.forward_steps(clip), second.forward_steps(tokens)
    assert steps_first.shape == (B, E, T - N + 1, N)
    assert steps_second.shape == (B, T - N + 1, N, E)
    torch.testing.assert_close(steps_second, steps_first.permute(0, 2, 3, 1), rtol=0, atol=0)
    first.clean_state()
    second.clean_state()
    for t in range(T):
        a, b = first.forward_step(clip[:, :, t]), second.forward_step(clip[:, :, t])
        assert (a is None) == (b is None) == (t < N - 1)
        if a is not None:
            assert a.shape == (B, E, N) and b.shape == (B, N, E)
            assert torch.equal(b, a.transpose(1, 2))


def test_single_output_layouts_are_transposes() -> None:
    first, second = _pair(co.SingleOutputMultiheadAttention, query_index=1)
    clip = torch.randn(B, E, T)
    tokens = clip.transpose(1, 2)
    assert torch.equal(second(tokens), first(clip).transpose(1, 2))
    steps_first, steps_second = first.forward_steps(clip), second.forward_steps(tokens)
    assert steps_first.shape == (B, E, T - N + 1) and steps_second.shape == (B, T - N + 1, E)
    assert torch.equal(steps_second, steps_first.transpose(1, 2))
    last = second.forward_step(clip[:, :, 0])
    assert last.shape == (B, E)  # a step is (B, E) in both layouts


def test_library_docstring_example_in_both_layouts() -> None:
    """The library's RetroactiveMultiheadAttention example (batch_first=True, embed_dim_second=True), small.

    Difference: the library's ``forward`` returns ``(out, attn_weights)`` (``forward_returns_attn_mask=True``);
    ours returns ``out``.
    """
    for embed_dim_second in (True, False):
        mha = co.RetroactiveMultiheadAttention(
            embed_dim=E, num_heads=H, sequence_len=N, dropout=0.0, embed_dim_second=embed_dim_second
        ).eval()
        x = torch.rand(3, E, N) if embed_dim_second else torch.rand(3, N, E)
        out = mha.forward(x)
        firsts = mha.forward_steps(x[:, :, :-1] if embed_dim_second else x[:, :-1])
        last = mha.forward_step(x[:, :, -1] if embed_dim_second else x[:, -1])
        assert firsts is None
        torch.testing.assert_close(out, last, atol=1e-6, rtol=0)


def test_wrong_layout_names_the_expected_one() -> None:
    first, second = _pair(co.SingleOutputMultiheadAttention)
    with pytest.raises(ValueError, match=r"expects a clip \(B, T, E=8\) \(embed_dim_second=False\), got \(2, 8, 5\)"):
        second(torch.randn(B, E, 5))
    with pytest.raises(ValueError, match=r"forward_steps expects a clip \(B, E=8, T\).*embed_dim_second=False for"):
        first.forward_steps(torch.randn(B, 5, E))
    with pytest.raises(TypeError, match="embed_dim_second must be True"):
        co.RetroactiveMultiheadAttention(E, H, N, embed_dim_second="batch")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["single_output", "retroactive"])
def test_transformer_layer_layouts_are_transposes(mode: str) -> None:
    torch.manual_seed(1)
    kwargs = {"dim_feedforward": 16, "dropout": 0.0, "sequence_len": N, "mode": mode}
    first = co.TransformerEncoderLayer(E, H, **kwargs).eval()
    second = co.TransformerEncoderLayer(E, H, embed_dim_second=False, **kwargs).eval()
    second.load_state_dict(first.state_dict())
    clip = torch.randn(B, E, T)
    tokens = clip.transpose(1, 2)
    assert torch.equal(second(tokens), first(clip).transpose(1, 2))
    steps_first, steps_second = first.forward_steps(clip), second.forward_steps(tokens)
    if mode == "retroactive":
        assert steps_second.shape == (B, T - N + 1, N, E)
        assert torch.equal(steps_second, steps_first.permute(0, 2, 3, 1))
    else:
        assert steps_second.shape == (B, T - N + 1, E)
        assert torch.equal(steps_second, steps_first.transpose(1, 2))


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_transformer_encoder_layouts_are_transposes(num_layers: int) -> None:
    torch.manual_seed(2)
    reference = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(E, H, dim_feedforward=16, dropout=0.0, batch_first=True), num_layers
    ).eval()
    first = co.TransformerEncoder.build_from(reference, sequence_len=N).eval()
    layer = co.TransformerEncoderLayer(E, H, 16, 0.0, sequence_len=N, embed_dim_second=False)
    second = co.TransformerEncoder(layer, num_layers).eval()
    assert second.embed_dim_second is False
    second.load_state_dict(first.state_dict())
    clip = torch.randn(B, E, T)
    tokens = clip.transpose(1, 2)
    expected = reference(tokens)
    torch.testing.assert_close(second(tokens), expected, atol=1e-5, rtol=1e-5)
    steps, steps_first = second.forward_steps(tokens), first.forward_steps(clip)
    assert steps.shape == (B, T - N + 1, E)
    torch.testing.assert_close(steps, steps_first.transpose(1, 2), atol=1e-6, rtol=0)
    # The newest position of the encoder on the last N frames, as nn computes it.
    torch.testing.assert_close(steps[:, -1], reference(tokens[:, -N:])[:, -1], atol=1e-5, rtol=1e-5)
    # An explicit encoder layout overrides the layers': the channels-first encoder of the same layers.
    channels_first = co.TransformerEncoder(layer, num_layers, embed_dim_second=True).eval()
    channels_first.load_state_dict(first.state_dict())
    torch.testing.assert_close(channels_first.forward_steps(clip), steps_first, atol=1e-6, rtol=0)
