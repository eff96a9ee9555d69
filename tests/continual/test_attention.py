"""Continual multi-head attention: offline equality with nn, windowed steps, stability, state, conversion."""

from __future__ import annotations

import time

import pytest
import torch
from torch import Tensor, nn

from modules.continual.attention import (
    RetroactiveMultiheadAttention,
    SingleOutputMultiheadAttention,
    single_query_attention,
)
from modules.continual.base import clone_state
from modules.continual.convert import continual

from .helpers import assert_peek_does_not_advance

E, H, N = 8, 2, 5  # embed dim, heads, window
CLASSES = [RetroactiveMultiheadAttention, SingleOutputMultiheadAttention]
AttentionClass = type[RetroactiveMultiheadAttention] | type[SingleOutputMultiheadAttention]


# tiny tensors: one intra-op thread (tests/conftest.py) avoids OpenMP contention on 2 shared cores
pytestmark = pytest.mark.usefixtures("one_thread")


def _nn_mha(dtype: torch.dtype = torch.float32, batch_first: bool = True, bias: bool = True) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(E, H, bias=bias, batch_first=batch_first, dtype=dtype).eval()
    with torch.no_grad():  # nonzero biases, so that a missed bias shows
        for p in mha.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mha


def _nn_attend(mha: nn.MultiheadAttention, clip: Tensor) -> Tensor:
    """nn self-attention of a channels-first clip (B, E, T), returned channels first."""
    x = clip.transpose(1, 2) if mha.batch_first else clip.permute(2, 0, 1)
    out = mha(x, x, x, need_weights=False)[0]
    return out.transpose(1, 2) if mha.batch_first else out.permute(1, 2, 0)


def _expected_step(mha: nn.MultiheadAttention, clip: Tensor, t: int, module: nn.Module) -> Tensor:
    """What the step at input index t must return: nn on the window of the last N frames."""
    window = _nn_attend(mha, clip[:, :, t - N + 1 : t + 1])
    if isinstance(module, SingleOutputMultiheadAttention):
        return window[:, :, module.query_index]
    return window


def _steps(module: nn.Module, clip: Tensor) -> list[Tensor | None]:
    return [module.forward_step(clip[:, :, t]) for t in range(clip.shape[2])]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_forward_equals_nn(cls: AttentionClass, dtype: torch.dtype, atol: float, batch_first: bool) -> None:
    torch.manual_seed(0)
    mha = _nn_mha(dtype, batch_first)
    module = cls.build_from(mha, N).eval()
    clip = torch.randn(3, E, 11, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(module(clip), _nn_attend(mha, clip), atol=atol, rtol=0)
    assert module.state_dict().keys() == mha.state_dict().keys()


@pytest.mark.parametrize("cls", CLASSES)
def test_forward_passes_masks_like_nn(cls: AttentionClass) -> None:
    torch.manual_seed(0)
    mha = _nn_mha()
    module = cls.build_from(mha, N).eval()
    clip = torch.randn(2, E, 6)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)  # True = may not attend
    padding = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    x = clip.transpose(1, 2)
    with torch.no_grad():
        expected = mha(x, x, x, attn_mask=causal, key_padding_mask=padding, need_weights=False)[0]
        got = module(clip, attn_mask=causal, key_padding_mask=padding)
    torch.testing.assert_close(got, expected.transpose(1, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_steps_equal_nn_on_the_sliding_window(cls: AttentionClass, batch: int, dtype: torch.dtype, atol: float) -> None:
    torch.manual_seed(1)
    mha = _nn_mha(dtype)
    module = cls.build_from(mha, N).eval()
    assert (module.receptive_field, module.delay, module.stride, module.padding) == (N, N - 1, (1,), (0,))
    clip = torch.randn(batch, E, 3 * N, dtype=dtype)
    with torch.no_grad():
        outputs = _steps(module, clip)
        assert [y is None for y in outputs] == [t < N - 1 for t in range(3 * N)]
        for t in range(N - 1, 3 * N):
            expected = _expected_step(mha, clip, t, module)
            assert outputs[t].shape == expected.shape
            torch.testing.assert_close(outputs[t], expected, atol=atol, rtol=0)


@pytest.mark.parametrize("query_index", [0, 2, -1, -3])
def test_single_output_answers_for_query_index(query_index: int) -> None:
    torch.manual_seed(2)
    mha = _nn_mha()
    module = SingleOutputMultiheadAttention.build_from(mha, N, query_index=query_index).eval()
    assert module.delay == N - 1
    clip = torch.randn(2, E, 2 * N + 1)
    with torch.no_grad():
        outputs = _steps(module, clip)
        for t in range(N - 1, clip.shape[2]):
            torch.testing.assert_close(outputs[t], _expected_step(mha, clip, t, module), atol=1e-5, rtol=0)
        # With T == N the last step is forward's output at query_index.
        module.clean_state()
        last = _steps(module, clip[:, :, :N])[-1]
        torch.testing.assert_close(last, module(clip[:, :, :N])[:, :, query_index], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", CLASSES)
def test_forward_steps_stacks_the_step_outputs(cls: AttentionClass) -> None:
    torch.manual_seed(3)
    module = cls(E, H, N).eval()
    clip = torch.randn(2, E, 2 * N)
    with torch.no_grad():
        module.clean_state()
        stepped = torch.stack([y for y in _steps(module, clip) if y is not None], dim=2)
        module.clean_state()
        stacked = module.forward_steps(clip)
        module.clean_state()
        padded = module.forward_steps(clip, pad_end=True)  # no end padding: the same outputs
        module.clean_state()
        assert module.forward_steps(clip[:, :, : N - 1]) is None
    torch.testing.assert_close(stacked, stepped, atol=0, rtol=0)
    torch.testing.assert_close(padded, stepped, atol=0, rtol=0)
    expected_shape = (2, E, N + 1, N) if cls is RetroactiveMultiheadAttention else (2, E, N + 1)
    assert stacked.shape == expected_shape


@pytest.mark.parametrize("cls", CLASSES)
def test_streams_in_a_batch_are_independent(cls: AttentionClass) -> None:
    torch.manual_seed(4)
    module = cls(E, H, N).eval()
    clip = torch.randn(3, E, 2 * N)
    changed = clip.clone()
    changed[1] = torch.randn(E, 2 * N) * 5
    with torch.no_grad():
        module.clean_state()
        a = module.forward_steps(clip)
        module.clean_state()
        b = module.forward_steps(changed)
    torch.testing.assert_close(a[[0, 2]], b[[0, 2]], atol=0, rtol=0)
    assert not torch.allclose(a[1], b[1])


@pytest.mark.parametrize("scale", [10.0, 100.0])
def test_retroactive_is_exact_for_large_logits(scale: float) -> None:
    """Library defect 4 (``paper/continual-inference.md``): the reference library overflows to NaN at x10 with E=8."""
    torch.manual_seed(5)
    mha = _nn_mha(torch.float64)
    module = RetroactiveMultiheadAttention.build_from(mha, N).eval()
    clip = torch.randn(2, E, 4 * N, dtype=torch.float64) * scale
    with torch.no_grad():
        outputs = _steps(module, clip)
        for t in range(N - 1, 4 * N):
            assert torch.isfinite(outputs[t]).all()
            torch.testing.assert_close(outputs[t], _expected_step(mha, clip, t, module), atol=1e-9, rtol=1e-10)


def test_retroactive_float32_large_logits_is_as_accurate_as_nn() -> None:
    torch.manual_seed(6)
    mha64 = _nn_mha(torch.float64)
    mha32 = nn.MultiheadAttention(E, H, batch_first=True).eval()
    mha32.load_state_dict({k: v.float() for k, v in mha64.state_dict().items()})
    module = RetroactiveMultiheadAttention.build_from(mha32, N).eval()
    clip = torch.randn(1, E, 4 * N, dtype=torch.float64) * 100
    with torch.no_grad():
        outputs = _steps(module, clip.float())
        for t in range(N - 1, 4 * N):
            truth = _expected_step(mha64, clip, t, module)
            assert torch.isfinite(outputs[t]).all()
            # float32 logits of magnitude ~1e4 carry ~1e-3 absolute error (in nn too): compare relatively.
            torch.testing.assert_close(outputs[t].double(), truth, atol=1e-4 * truth.abs().max().item(), rtol=0)


def test_retroactive_survives_a_dominant_key_leaving_the_window() -> None:
    """One huge frame dominates every row's softmax; when it leaves, subtracting its weight would cancel out
    everything else (and exp of its logit overflows): the rows must still equal a fresh softmax."""
    torch.manual_seed(7)
    mha = _nn_mha(torch.float64)
    module = RetroactiveMultiheadAttention.build_from(mha, N).eval()
    clip = torch.randn(1, E, 3 * N, dtype=torch.float64)
    clip[:, :, N] *= 1e3
    with torch.no_grad():
        outputs = _steps(module, clip)
        for t in range(N - 1, 3 * N):
            torch.testing.assert_close(outputs[t], _expected_step(mha, clip, t, module), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("cls", CLASSES)
def test_get_state_is_a_snapshot_and_set_state_resumes(cls: AttentionClass) -> None:
    torch.manual_seed(8)
    module = cls(E, H, N).eval()
    clip = torch.randn(2, E, 4 * N)
    with torch.no_grad():
        module.clean_state()
        _steps(module, clip[:, :, : N + 2])
        snapshot = module.get_state()
        frozen = clone_state(snapshot)
        first = _steps(module, clip[:, :, N + 2 :])
        torch.testing.assert_close(snapshot, frozen, atol=0, rtol=0)  # later steps wrote the live state only
        for _ in range(2):
            module.set_state(snapshot)
            again = _steps(module, clip[:, :, N + 2 :])
            for a, b in zip(again, first):
                torch.testing.assert_close(a, b, atol=0, rtol=0)
        # Mid-warm-up too: the None pattern resumes where it was.
        module.clean_state()
        _steps(module, clip[:, :, :2])
        early = module.get_state()
        rest = _steps(module, clip[:, :, 2:])
        module.set_state(early)
        assert [y is None for y in _steps(module, clip[:, :, 2:])] == [y is None for y in rest]


@pytest.mark.parametrize("cls", CLASSES)
def test_update_state_false_peeks_without_advancing(cls: AttentionClass) -> None:
    torch.manual_seed(9)
    module = cls(E, H, N).eval()
    clip = torch.randn(2, E, 2 * N)
    assert_peek_does_not_advance(module, clip)


def test_long_stream_does_not_drift() -> None:
    """20,000 steps through the retroactive update still equal nn on the final window."""
    torch.manual_seed(10)
    n = 8
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    module = RetroactiveMultiheadAttention.build_from(mha, n).eval()
    clip = torch.randn(1, 8, 20_000)
    start = time.perf_counter()
    with torch.inference_mode():
        for t in range(clip.shape[2]):
            out = module.forward_step(clip[:, :, t])
        window = clip[:, :, -n:].transpose(1, 2)
        expected = mha(window, window, window, need_weights=False)[0].transpose(1, 2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    print(f"20,000 retroactive steps: {time.perf_counter() - start:.1f} s")


def test_steps_carry_gradients() -> None:
    """With autograd on, the state is not overwritten in place and gradients reach the weights."""
    torch.manual_seed(11)
    mha = _nn_mha()
    mha.train()  # dropout is 0: training mode may step
    module = RetroactiveMultiheadAttention.build_from(mha, N)
    clip = torch.randn(2, E, N + 3)
    module.forward_steps(clip).square().sum().backward()
    expected = sum(_nn_attend(mha, clip[:, :, t - N + 1 : t + 1]).square().sum() for t in range(N - 1, N + 3))
    expected.backward()
    torch.testing.assert_close(module.in_proj_weight.grad, mha.in_proj_weight.grad, atol=1e-4, rtol=1e-4)


def test_single_query_attention_matches_nn() -> None:
    torch.manual_seed(12)
    mha = _nn_mha(batch_first=False)
    clip = torch.randn(2, E, 7)
    with torch.no_grad():
        full = _nn_attend(mha, clip)
        for index in (0, 3, -1):
            got = single_query_attention(mha, clip.transpose(1, 2), index)
            torch.testing.assert_close(got, full[:, :, index], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", CLASSES)
def test_without_bias(cls: AttentionClass) -> None:
    torch.manual_seed(13)
    mha = _nn_mha(bias=False)
    module = cls.build_from(mha, N).eval()
    assert module.state_dict().keys() == mha.state_dict().keys()
    clip = torch.randn(1, E, N + 2)
    with torch.no_grad():
        out = _steps(module, clip)[-1]
        torch.testing.assert_close(out, _expected_step(mha, clip, N + 1, module), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kdim": 4, "vdim": 4}, "kdim/vdim"),
        ({"add_bias_kv": True}, "add_bias_kv"),
        ({"add_zero_attn": True}, "add_zero_attn"),
    ],
)
@pytest.mark.parametrize("cls", CLASSES)
def test_build_from_refuses_what_it_cannot_step(cls: AttentionClass, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls.build_from(nn.MultiheadAttention(E, H, **kwargs), N)


@pytest.mark.parametrize("cls", CLASSES)
def test_step_errors_are_clear(cls: AttentionClass) -> None:
    module = cls(E, H, N, dropout=0.1)
    step = torch.randn(2, E)
    with pytest.raises(RuntimeError, match="eval"):
        module.forward_step(step)  # training mode with dropout
    module.eval()
    assert module.forward_step(step) is None  # in eval dropout is a no-op
    with pytest.raises(ValueError, match="attn_mask"):
        module.forward_step(step, attn_mask=torch.zeros(1, 1))
    with pytest.raises(ValueError, match="key_padding_mask"):
        module.forward_step(step, key_padding_mask=torch.zeros(2, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="clean_state"):
        module.forward_step(torch.randn(3, E))  # another batch size mid-stream
    with pytest.raises(ValueError, match=r"\(B, E=8\)"):
        module.forward_step(torch.randn(2, E, 1))
    with pytest.raises(ValueError, match="sequence_len"):
        cls(E, H, 0)


def test_continual_converts_nn_multihead_attention() -> None:
    torch.manual_seed(14)
    mha = _nn_mha(batch_first=False)
    single = continual(mha, sequence_len=N)
    retro = continual(mha, sequence_len=N, mode="retroactive", temporal_fill="zeros")  # unknown kwargs ignored
    assert type(single) is SingleOutputMultiheadAttention
    assert type(retro) is RetroactiveMultiheadAttention
    assert continual(single) is single
    clip = torch.randn(1, E, N)
    with torch.no_grad():
        for module in (single, retro):
            torch.testing.assert_close(module(clip), _nn_attend(mha, clip), atol=1e-5, rtol=0)
        assert continual(mha, sequence_len=N, query_index=0).query_index == 0
    with pytest.raises(ValueError, match="sequence_len"):
        continual(mha)
    with pytest.raises(ValueError, match="mode"):
        continual(mha, sequence_len=N, mode="regular")
