"""Continual Transformer encoders: offline equality with nn, windowed steps for any depth, state, conversion."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from modules.continual.attention import RetroactiveMultiheadAttention, SingleOutputMultiheadAttention
from modules.continual.base import clone_state
from modules.continual.convert import continual
from modules.continual.transformer import TransformerEncoder, TransformerEncoderLayer

from .helpers import assert_peek_does_not_advance

E, H, FF, N = 8, 2, 16, 4  # d_model, heads, feed-forward width, window


# tiny tensors: one intra-op thread (tests/conftest.py) avoids OpenMP contention on 2 shared cores
pytestmark = pytest.mark.usefixtures("one_thread")


def _nn_encoder(
    num_layers: int,
    norm_first: bool = False,
    activation: str = "relu",
    dtype: torch.dtype = torch.float32,
    batch_first: bool = True,
    final_norm: bool = True,
) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        E,
        H,
        FF,
        dropout=0.0,
        activation=activation,
        norm_first=norm_first,
        batch_first=batch_first,
        dtype=dtype,
    )
    norm = nn.LayerNorm(E, dtype=dtype) if final_norm else None
    encoder = nn.TransformerEncoder(layer, num_layers, norm=norm, enable_nested_tensor=False).eval()
    with torch.no_grad():  # distinct layers, non-trivial norms and biases
        for p in encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return encoder


def _nn_apply(module: nn.Module, clip: Tensor) -> Tensor:
    """An nn encoder (layer) on a channels-first clip (B, E, T), returned channels first."""
    first = module.layers[0] if isinstance(module, nn.TransformerEncoder) else module
    if first.self_attn.batch_first:
        return module(clip.transpose(1, 2)).transpose(1, 2)
    return module(clip.permute(2, 0, 1)).permute(1, 2, 0)


def _steps(module: nn.Module, clip: Tensor) -> list[Tensor | None]:
    return [module.forward_step(clip[:, :, t]) for t in range(clip.shape[2])]


def _check_windows(encoder: nn.Module, reference: nn.Module, clip: Tensor, atol: float) -> None:
    """None for the first N-1 steps, then each step equals nn on the last N frames at the newest position."""
    encoder.clean_state()
    outputs = _steps(encoder, clip)
    assert [y is None for y in outputs] == [t < N - 1 for t in range(clip.shape[2])]
    for t in range(N - 1, clip.shape[2]):
        expected = _nn_apply(reference, clip[:, :, t - N + 1 : t + 1])[:, :, -1]
        torch.testing.assert_close(outputs[t], expected, atol=atol, rtol=0)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_forward_and_steps_equal_nn(num_layers: int, norm_first: bool, activation: str) -> None:
    torch.manual_seed(num_layers)
    reference = _nn_encoder(num_layers, norm_first, activation)
    encoder = TransformerEncoder.build_from(reference, N).eval()
    assert encoder.state_dict().keys() == reference.state_dict().keys()
    assert (encoder.receptive_field, encoder.delay, encoder.stride, encoder.padding) == (N, N - 1, (1,), (0,))
    clip = torch.randn(3, E, 3 * N)
    with torch.no_grad():
        torch.testing.assert_close(encoder(clip), _nn_apply(reference, clip), atol=1e-5, rtol=0)
        _check_windows(encoder, reference, clip, atol=1e-5)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_is_exact_in_float64(num_layers: int, norm_first: bool) -> None:
    torch.manual_seed(10 + num_layers)
    reference = _nn_encoder(num_layers, norm_first, "gelu", dtype=torch.float64)
    encoder = TransformerEncoder.build_from(reference, N).eval()
    clip = torch.randn(2, E, 3 * N, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(encoder(clip), _nn_apply(reference, clip), atol=1e-10, rtol=0)
        _check_windows(encoder, reference, clip, atol=1e-10)


def test_three_layers_construct_from_one_layer_and_are_exact() -> None:
    """Library defect 5 (``paper/continual-inference.md``): the reference library fails to build num_layers=3."""
    torch.manual_seed(20)
    layer = TransformerEncoderLayer(E, H, FF, dropout=0.0, sequence_len=N)
    encoder = TransformerEncoder(layer, num_layers=3, norm=nn.LayerNorm(E)).eval()
    assert len(encoder.layers) == 3
    assert isinstance(encoder.layers[0].self_attn, RetroactiveMultiheadAttention)
    assert encoder.layers[0].mode == "retroactive"
    assert layer.mode == "single_output"  # the template was copied, not changed
    # The deep copies are independent parameters, as in nn.
    assert encoder.layers[0].linear1.weight.data_ptr() != encoder.layers[1].linear1.weight.data_ptr()
    reference = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True),
        3,
        norm=nn.LayerNorm(E),
        enable_nested_tensor=False,
    ).eval()
    reference.load_state_dict(encoder.state_dict())
    clip = torch.randn(2, E, 3 * N)
    with torch.no_grad():
        torch.testing.assert_close(encoder(clip), _nn_apply(reference, clip), atol=1e-5, rtol=0)
        _check_windows(encoder, reference, clip, atol=1e-5)


def test_gelu_is_gelu() -> None:
    """Library defect 5 (``paper/continual-inference.md``): the reference library used ReLU for activation="gelu"."""
    torch.manual_seed(21)
    gelu_ref = _nn_encoder(2, activation="gelu")
    relu_ref = _nn_encoder(2, activation="relu")
    relu_ref.load_state_dict(gelu_ref.state_dict())
    encoder = TransformerEncoder.build_from(gelu_ref, N).eval()
    clip = torch.randn(2, E, 2 * N)
    with torch.no_grad():
        assert not torch.allclose(_nn_apply(gelu_ref, clip), _nn_apply(relu_ref, clip), atol=1e-3)
        torch.testing.assert_close(encoder(clip), _nn_apply(gelu_ref, clip), atol=1e-5, rtol=0)
        _check_windows(encoder, gelu_ref, clip, atol=1e-5)
    built = TransformerEncoderLayer(E, H, FF, activation="gelu", sequence_len=N)
    assert built.activation is torch.nn.functional.gelu


@pytest.mark.parametrize("batch_first", [True, False])
def test_conversion_through_continual(batch_first: bool) -> None:
    torch.manual_seed(22)
    reference = _nn_encoder(2, batch_first=batch_first)
    encoder = continual(reference, sequence_len=N, temporal_fill="zeros")  # unknown kwargs are ignored
    assert isinstance(encoder, TransformerEncoder)
    nn_layer = reference.layers[0]
    layer = continual(nn_layer, sequence_len=N)
    assert isinstance(layer, TransformerEncoderLayer)
    assert isinstance(layer.self_attn, SingleOutputMultiheadAttention)
    assert layer.state_dict().keys() == nn_layer.state_dict().keys()
    retro = continual(nn_layer, sequence_len=N, mode="retroactive")
    assert isinstance(retro.self_attn, RetroactiveMultiheadAttention)
    clip = torch.randn(2, E, 2 * N)
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(clip), _nn_apply(reference, clip), atol=1e-5, rtol=0)
        _check_windows(encoder, reference, clip, atol=1e-5)
        torch.testing.assert_close(layer.eval()(clip), _nn_apply(nn_layer, clip), atol=1e-5, rtol=0)
        _check_windows(layer, nn_layer, clip, atol=1e-5)
    for module in (reference, nn_layer):
        with pytest.raises(ValueError, match="sequence_len"):
            continual(module)


def test_retroactive_layer_steps_the_whole_window() -> None:
    torch.manual_seed(23)
    for norm_first in (False, True):
        nn_layer = _nn_encoder(1, norm_first=norm_first).layers[0]
        layer = TransformerEncoderLayer.build_from(nn_layer, N, mode="retroactive").eval()
        clip = torch.randn(2, E, 3 * N)
        with torch.no_grad():
            outputs = _steps(layer, clip)
            assert [y is None for y in outputs] == [t < N - 1 for t in range(3 * N)]
            for t in range(N - 1, 3 * N):
                expected = _nn_apply(nn_layer, clip[:, :, t - N + 1 : t + 1])
                assert outputs[t].shape == (2, E, N)
                torch.testing.assert_close(outputs[t], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_steps_is_the_stacked_windows(batch: int) -> None:
    torch.manual_seed(24)
    reference = _nn_encoder(3, norm_first=True)
    encoder = TransformerEncoder.build_from(reference, N).eval()
    clip = torch.randn(batch, E, 3 * N)
    with torch.no_grad():
        encoder.clean_state()
        stacked = encoder.forward_steps(clip)
        encoder.clean_state()
        padded = encoder.forward_steps(clip, pad_end=True)  # no end padding: the same windows
        encoder.clean_state()
        exact = encoder.forward_steps(clip[:, :, :N])  # T == N: the last position of forward
        encoder.clean_state()
        assert encoder.forward_steps(clip[:, :, : N - 1]) is None
        expected = torch.stack(
            [_nn_apply(reference, clip[:, :, t - N + 1 : t + 1])[:, :, -1] for t in range(N - 1, 3 * N)],
            dim=2,
        )
        assert stacked.shape == (batch, E, 2 * N + 1)
        torch.testing.assert_close(stacked, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(padded, stacked, atol=0, rtol=0)
        torch.testing.assert_close(exact, encoder(clip[:, :, :N])[:, :, -1:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_layers", [1, 3])
def test_streams_in_a_batch_are_independent(num_layers: int) -> None:
    torch.manual_seed(25)
    encoder = TransformerEncoder.build_from(_nn_encoder(num_layers), N).eval()
    clip = torch.randn(3, E, 3 * N)
    changed = clip.clone()
    changed[1] = torch.randn(E, 3 * N)
    with torch.no_grad():
        encoder.clean_state()
        a = encoder.forward_steps(clip)
        encoder.clean_state()
        b = encoder.forward_steps(changed)
    torch.testing.assert_close(a[[0, 2]], b[[0, 2]], atol=0, rtol=0)
    assert not torch.allclose(a[1], b[1])


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_get_state_is_a_snapshot_and_set_state_resumes(num_layers: int) -> None:
    torch.manual_seed(26)
    encoder = TransformerEncoder.build_from(_nn_encoder(num_layers), N).eval()
    clip = torch.randn(2, E, 4 * N)
    with torch.no_grad():
        encoder.clean_state()
        _steps(encoder, clip[:, :, : N + 1])
        snapshot = encoder.get_state()
        frozen = clone_state(snapshot)
        first = _steps(encoder, clip[:, :, N + 1 :])
        torch.testing.assert_close(snapshot, frozen, atol=0, rtol=0)
        for _ in range(2):
            encoder.set_state(snapshot)
            for a, b in zip(_steps(encoder, clip[:, :, N + 1 :]), first):
                torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_update_state_false_peeks_without_advancing(num_layers: int) -> None:
    torch.manual_seed(27)
    encoder = TransformerEncoder.build_from(_nn_encoder(num_layers), N).eval()
    clip = torch.randn(2, E, 2 * N)
    assert_peek_does_not_advance(encoder, clip)


def test_variants_without_bias_final_norm_or_with_a_callable_activation() -> None:
    torch.manual_seed(28)
    layer = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, activation=nn.SiLU(), bias=False, batch_first=True)
    reference = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    encoder = TransformerEncoder.build_from(reference, N).eval()
    assert encoder.state_dict().keys() == reference.state_dict().keys()
    clip = torch.randn(2, E, 2 * N)
    with torch.no_grad():
        torch.testing.assert_close(encoder(clip), _nn_apply(reference, clip), atol=1e-5, rtol=0)
        _check_windows(encoder, reference, clip, atol=1e-5)


def test_masks_reach_every_layer_in_forward() -> None:
    torch.manual_seed(29)
    reference = _nn_encoder(2)
    encoder = TransformerEncoder.build_from(reference, N).eval()
    clip = torch.randn(2, E, 6)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    with torch.no_grad():
        expected = reference(clip.transpose(1, 2), mask=causal).transpose(1, 2)
        torch.testing.assert_close(encoder(clip, mask=causal), expected, atol=1e-5, rtol=0)


def test_clear_errors() -> None:
    layer = TransformerEncoderLayer(E, H, FF, dropout=0.1, sequence_len=N)
    encoder = TransformerEncoder(layer, 2)
    with pytest.raises(RuntimeError, match="eval"):
        encoder.forward_step(torch.randn(1, E))  # training mode with dropout
    encoder.eval()
    assert encoder.forward_step(torch.randn(1, E)) is None  # in eval dropout is a no-op
    with pytest.raises(ValueError, match="activation"):
        TransformerEncoderLayer(E, H, activation="swish", sequence_len=N)
    with pytest.raises(ValueError, match="mode"):
        TransformerEncoderLayer(E, H, sequence_len=N, mode="regular")
    with pytest.raises(ValueError, match="sequence_len"):
        TransformerEncoder([layer, TransformerEncoderLayer(E, H, FF, sequence_len=N + 1)])
    with pytest.raises(ValueError, match="num_layers"):
        TransformerEncoder(layer)
    with pytest.raises(TypeError, match="build_from"):
        TransformerEncoder([nn.TransformerEncoderLayer(E, H)])
    with pytest.raises(ValueError, match=r"\(B, E=8, T\)"):
        encoder(torch.randn(1, E + 1, 3))
