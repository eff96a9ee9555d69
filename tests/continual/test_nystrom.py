"""Nyström attention and its continual twin: what a step computes in each landmark mode, exactly."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from modules import continual as co
from modules.continual.nystrom import (
    ContinualNystromAttention,
    NystromAttention,
    NystromTransformerEncoderLayer,
    iterative_pinv,
    nystrom_attention,
    segment_means,
)
from tests.continual.helpers import assert_peek_does_not_advance

pytestmark = pytest.mark.usefixtures("one_thread")

N = 8  # window


def _attention(
    mode: str = "single_output", fixed: bool = False, projections: bool = True, **kw
) -> ContinualNystromAttention:
    torch.manual_seed(0)
    heads = 2 if projections else 1
    attention = ContinualNystromAttention(
        8, heads, kw.pop("m", 4), sequence_len=N, mode=mode, projections=projections, **kw
    ).eval()
    if fixed:
        shape = attention.q_landmarks.shape
        attention.set_landmarks(torch.randn(shape), torch.randn(shape))
    return attention


def _steps(module: nn.Module, clip: Tensor) -> list[Tensor | None]:
    module.clean_state()
    with torch.no_grad():
        return [module.forward_step(clip[:, :, t]) for t in range(clip.shape[2])]


def _window_reference(attention: NystromAttention, window: Tensor, mode: str, landmarks=None) -> Tensor:
    with torch.no_grad():
        out = attention.attend(window.transpose(1, 2), landmarks=landmarks).transpose(1, 2)
    return out[:, :, -1] if mode == "single_output" else out


# --- functional ---------------------------------------------------------------------------------------------
def test_segment_means_gives_the_first_n_mod_m_segments_one_token_more() -> None:
    x = torch.arange(7.0).view(1, 7, 1)
    torch.testing.assert_close(segment_means(x, 3).flatten(), torch.tensor([1.0, 3.5, 5.5]))  # [0 1 2] [3 4] [5 6]
    torch.testing.assert_close(segment_means(x[:, :6], 3).flatten(), torch.tensor([0.5, 2.5, 4.5]))


def test_iterative_pinv_inverts_each_matrix_of_a_batch_on_its_own() -> None:
    torch.manual_seed(0)
    kernels = torch.softmax(torch.randn(3, 5, 5), -1)
    inverse = iterative_pinv(kernels, iterations=30)  # row-stochastic and well conditioned: it converges
    torch.testing.assert_close(kernels @ inverse, torch.eye(5).expand(3, 5, 5), atol=1e-4, rtol=0)
    # each stream its own scaling: the inverse of one matrix does not depend on the others in the batch
    torch.testing.assert_close(iterative_pinv(kernels[1:2]), iterative_pinv(kernels)[1:2])


def test_nystrom_with_every_token_as_its_landmark_is_softmax_attention() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 6, 4).mul(0.5).unbind(0)
    exact = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    approx = nystrom_attention(q, k, v, q, k, iterations=40)  # S pinv(S) S V = S V
    torch.testing.assert_close(approx, exact, atol=1e-4, rtol=0)


# --- offline module -----------------------------------------------------------------------------------------
def test_projected_attention_has_multihead_attention_keys_and_loads_its_weights() -> None:
    attention = NystromAttention(8, 2, 4, projections=True)
    mha = nn.MultiheadAttention(8, 2)
    missing, unexpected = attention.load_state_dict(mha.state_dict(), strict=False)
    assert sorted(missing) == ["k_landmarks", "landmarks_fixed", "q_landmarks"] and not unexpected
    torch.testing.assert_close(attention.in_proj_weight, mha.in_proj_weight)


def test_without_projections_there_are_no_parameters_and_one_head() -> None:
    assert not list(NystromAttention(8, 1, 4, projections=False).parameters())
    with pytest.raises(ValueError, match="one head"):
        NystromAttention(8, 2, 4, projections=False)


def test_at_least_as_many_landmarks_as_tokens_is_exact_softmax_attention() -> None:
    attention = NystromAttention(8, 1, 4, projections=False)
    x = torch.randn(2, 3, 8)  # 3 tokens < 4 landmarks: the original's fallback
    exact = torch.softmax(x @ x.transpose(1, 2) / 8**0.5, -1) @ x
    torch.testing.assert_close(attention.attend(x), exact)


def test_pseudo_inverse_switch_changes_the_middle_kernel_only() -> None:
    torch.manual_seed(0)
    with_inverse, without = NystromAttention(8, 1, 2, projections=False), NystromAttention(8, 1, 2, projections=False)
    without.pseudo_inverse = False
    x = torch.randn(2, 8, 6)
    assert not torch.allclose(with_inverse(x), without(x), atol=1e-3)
    tokens = x.transpose(1, 2).unsqueeze(1) * 8**-0.25
    ql, kl = segment_means(tokens, 2), segment_means(tokens, 2)
    expected = torch.softmax(tokens @ kl.transpose(-1, -2), -1) @ torch.softmax(ql @ kl.transpose(-1, -2), -1)
    expected = expected @ (torch.softmax(ql @ tokens.transpose(-1, -2), -1) @ x.transpose(1, 2).unsqueeze(1))
    torch.testing.assert_close(without(x), expected.squeeze(1).transpose(1, 2))


def test_fixed_landmarks_are_buffers_whose_flag_survives_a_checkpoint() -> None:
    source = _attention(fixed=True)
    target = ContinualNystromAttention(8, 2, 4, sequence_len=N)
    assert not target.fixed_landmarks
    target.load_state_dict(source.state_dict())
    assert target.fixed_landmarks
    torch.testing.assert_close(target.q_landmarks, source.q_landmarks)
    target.pseudo_inverse = False  # fixed landmarks invert all the same
    assert target.uses_pseudo_inverse
    target.release_landmarks()
    assert not target.fixed_landmarks and not bool(target.landmarks_fixed) and not target.uses_pseudo_inverse
    with pytest.raises(ValueError, match="heads, landmarks, head_dim"):
        target.set_landmarks(torch.zeros(4, 4), torch.zeros(4, 4))


def test_tokens_hook_sees_the_attention_input_until_removed() -> None:
    attention = NystromAttention(8, 1, 2, projections=False)
    seen: list[Tensor] = []
    handle = attention.register_tokens_hook(lambda module, tokens: seen.append(tokens))
    x = torch.randn(2, 8, 6)
    attention(x)
    attention.attend_last(x.transpose(1, 2))
    handle.remove()
    attention(x)
    assert len(seen) == 2 and torch.equal(seen[0], x.transpose(1, 2))


# --- continual: fixed landmarks ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["single_output", "retroactive"])
@pytest.mark.parametrize("projections", [True, False])
def test_fixed_landmark_steps_equal_forward_on_each_window(mode: str, projections: bool) -> None:
    attention = _attention(mode, fixed=True, projections=projections)
    clip = torch.randn(2, 8, 3 * N)
    outs = _steps(attention, clip)
    assert all(y is None for y in outs[: N - 1])
    for t in range(N - 1, clip.shape[2]):
        reference = _window_reference(attention, clip[:, :, t - N + 1 : t + 1], mode)
        torch.testing.assert_close(outs[t], reference, atol=1e-5, rtol=0)


def test_fixed_landmarks_need_not_divide_the_window() -> None:
    attention = _attention(fixed=True, m=3)  # 8 % 3 != 0: fine with fixed landmarks
    clip = torch.randn(1, 8, 2 * N)
    outs = _steps(attention, clip)
    for t in range(N - 1, clip.shape[2]):
        reference = _window_reference(attention, clip[:, :, t - N + 1 : t + 1], "single_output")
        torch.testing.assert_close(outs[t], reference, atol=1e-5, rtol=0)


def test_steps_stay_exact_for_large_logits() -> None:
    """Nothing is subtracted when a key leaves the window: logits of several hundred neither overflow nor cancel."""
    attention = _attention(fixed=True, projections=False)
    clip = torch.randn(1, 8, 3 * N) * 30
    outs = _steps(attention, clip)
    for t in range(N - 1, clip.shape[2]):
        reference = _window_reference(attention, clip[:, :, t - N + 1 : t + 1], "single_output")
        assert torch.isfinite(outs[t]).all()
        torch.testing.assert_close(outs[t], reference, atol=1e-3, rtol=1e-4)


# --- continual: continual landmarks --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["single_output", "retroactive"])
def test_continual_landmarks_equal_the_window_on_refresh_steps_and_lag_in_between(mode: str) -> None:
    attention = _attention(mode)  # n = 8, m = 4: a landmark row is refreshed every 2 steps
    assert attention.refresh_period == 2
    clip = torch.randn(2, 8, 3 * N + 1)
    outs = _steps(attention, clip)
    q_landmarks, k_landmarks = attention.stream_landmarks(clip.transpose(1, 2))
    lagged = 0
    for t in range(N - 1, clip.shape[2]):
        window = clip[:, :, t - N + 1 : t + 1]
        own = _window_reference(attention, window, mode)
        through = _window_reference(attention, window, mode, (q_landmarks[:, t - N + 1], k_landmarks[:, t - N + 1]))
        torch.testing.assert_close(outs[t], through, atol=1e-5, rtol=0)
        if (t + 1) % attention.refresh_period == 0:
            torch.testing.assert_close(outs[t], own, atol=1e-5, rtol=0)
        else:
            lagged += 1
            assert not torch.allclose(outs[t], own, atol=1e-3), f"step {t} should use the last refresh's landmarks"
    assert lagged == (clip.shape[2] - N + 1) // 2


def test_stream_landmarks_in_chunks_equal_all_at_once() -> None:
    attention = _attention()
    tokens = torch.randn(2, 3 * N, 8)
    q_all, k_all = attention.stream_landmarks(tokens)
    q_part, k_part = attention.stream_landmarks(tokens, 5, 9)
    torch.testing.assert_close(q_part, q_all[:, 5:9])
    torch.testing.assert_close(k_part, k_all[:, 5:9])


def test_continual_landmarks_must_divide_the_window() -> None:
    attention = _attention(m=3)
    with pytest.raises(ValueError, match="divide sequence_len"):
        attention.forward_step(torch.randn(1, 8))


def test_too_many_landmarks_for_stepping_is_refused() -> None:
    with pytest.raises(ValueError, match="exact softmax attention"):
        ContinualNystromAttention(8, 1, N, sequence_len=N, projections=False)


# --- the step protocol ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixed", [False, True])
def test_streams_of_a_batch_are_independent(fixed: bool) -> None:
    attention = _attention("retroactive", fixed=fixed)
    clip = torch.randn(3, 8, 2 * N)
    together = attention.forward_steps(clip)
    attention.clean_state()
    alone = attention.forward_steps(clip[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-6, rtol=0)
    assert together.shape == (3, 8, N + 1, N)


def test_peeking_does_not_advance_and_state_snapshots_restore() -> None:
    attention = _attention()
    clip = torch.randn(1, 8, 2 * N)
    assert_peek_does_not_advance(attention, clip)
    attention.clean_state()
    attention.forward_steps(clip[:, :, :N])
    snapshot = attention.get_state()
    first = attention.forward_steps(clip[:, :, N:])
    attention.set_state(snapshot)
    torch.testing.assert_close(attention.forward_steps(clip[:, :, N:]), first, atol=0, rtol=0)
    with pytest.raises(ValueError, match="clean_state"):
        attention.forward_step(torch.randn(2, 8))


def test_two_layer_encoder_steps_equal_its_layers_on_each_window() -> None:
    torch.manual_seed(0)
    layers = [NystromTransformerEncoderLayer(8, 2, 16, 0.0, "gelu", sequence_len=N, num_landmarks=4) for _ in range(2)]
    encoder = co.TransformerEncoder(layers).eval()
    assert layers[0].self_attn.mode == "retroactive" and layers[1].self_attn.mode == "single_output"
    clip = torch.randn(2, 8, 2 * N)
    outs = _steps(encoder, clip)
    for t in range(N - 1, clip.shape[2], 2):  # refresh steps: the first layer's landmarks are its window's
        window = clip[:, :, t - N + 1 : t + 1].transpose(1, 2)
        with torch.no_grad():
            reference = layers[1].forward_last_token(layers[0].forward_tokens(window))
        torch.testing.assert_close(outs[t], reference, atol=1e-5, rtol=0)
