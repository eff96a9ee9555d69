"""One test per defect of the public continual-inference library (numbered as in
``paper/continual-inference.md``).

Each test fails on the library's behaviour (v1.2.4). Attention and transformer defects (4, 5, 8)
are tested in test_attention.py / test_transformer.py as well; they are repeated here so the list is complete.
Defect 11 (ONNX export under torch's dynamo exporter) has no counterpart: this core has no ONNX exporter.
"""

import pytest
import torch
from torch import nn

from modules import continual as co

from .helpers import assert_steps_match


def test_1_temporal_dilation_conv_is_supported() -> None:
    conv = co.continual(nn.Conv1d(2, 2, 3, dilation=3, padding=2))
    clip = torch.randn(1, 2, 12)
    assert conv.receptive_field == 7
    assert_steps_match(conv, clip, conv(clip))


def test_1_temporal_dilation_max_pool_values_and_receptive_field() -> None:
    """The library wraps its ring index at k instead of d(k-1)+1: [10, 0, ...] gave 0 where torch gives 10."""
    pool = co.MaxPool1d(3, stride=1, dilation=2)
    clip = torch.tensor([[[10.0, 0, 0, 0, 0, 0, 0]]])
    expected = nn.MaxPool1d(3, stride=1, dilation=2)(clip)
    assert expected[0, 0, 0] == 10
    assert pool.receptive_field == 5  # the library reports d * k = 6
    assert_steps_match(pool, clip, expected, atol=0)


def test_2_pointwise_conv_with_temporal_stride_skips_steps() -> None:
    """k_t = 1 and stride 2: the library emitted an output at every forward_step."""
    conv = co.Conv2d(1, 1, (1, 1), stride=(2, 1))
    clip = torch.randn(1, 1, 6, 3)
    outputs = [conv.forward_step(clip[:, :, t]) for t in range(6)]
    assert [y is not None for y in outputs] == [True, False] * 3
    assert_steps_match(conv, clip, conv(clip))


def test_3a_converted_max_pool_pads_with_minus_infinity() -> None:
    reference = nn.MaxPool1d(3, stride=1, padding=1)
    pool = co.continual(reference)
    clip = -torch.rand(1, 2, 6) - 1.0  # all negative: a zero fill would win every padded window
    assert_steps_match(pool, clip, reference(clip), atol=0)


def test_3b_count_include_pad_false_is_honoured_in_time() -> None:
    reference = nn.AvgPool1d(3, stride=1, padding=1, count_include_pad=False)
    pool = co.continual(reference)
    clip = torch.rand(1, 2, 5) + 1.0
    assert_steps_match(pool, clip, reference(clip))


def test_3c_ceil_mode_in_time_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="ceil_mode"):
        co.continual(nn.MaxPool1d(2, ceil_mode=True))


def test_4_retroactive_attention_is_stable_for_large_logits() -> None:
    attention = pytest.importorskip("modules.continual.attention")
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    co_mha = attention.RetroactiveMultiheadAttention.build_from(mha, sequence_len=5).eval()
    clip = torch.randn(1, 8, 9) * 100
    with torch.no_grad():
        co_mha.clean_state()
        outputs = [co_mha.forward_step(clip[:, :, t]) for t in range(9)]
        window = clip[:, :, -5:].transpose(1, 2)
        expected = mha(window, window, window, need_weights=False)[0].transpose(1, 2)
    assert torch.isfinite(outputs[-1]).all()
    torch.testing.assert_close(outputs[-1], expected, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_5_three_layer_encoder_constructs_and_honours_gelu(activation: str) -> None:
    transformer = pytest.importorskip("modules.continual.transformer")
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=activation, batch_first=True)
    reference = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False).eval()
    encoder = co.continual(reference, sequence_len=4).eval()
    assert isinstance(encoder, transformer.TransformerEncoder)
    clip = torch.randn(2, 8, 7)
    with torch.no_grad():
        encoder.clean_state()
        last = [encoder.forward_step(clip[:, :, t]) for t in range(7)][-1]
        window = clip[:, :, -4:].transpose(1, 2)
        expected = reference(window)[:, -1]
    torch.testing.assert_close(last, expected, atol=1e-5, rtol=1e-5)


def test_6_centered_residual_shrink_steps_like_forward() -> None:
    conv = co.Conv1d(2, 2, 3)
    res = co.Residual(conv, residual_shrink="centered")
    clip = torch.randn(1, 2, 8)
    expected = conv(clip) + clip[:, :, 1:-1]
    torch.testing.assert_close(res(clip), expected)
    assert_steps_match(res, clip, expected)


def test_7_conditional_honours_pad_end_and_keeps_a_list_state() -> None:
    net = co.Conditional(lambda m, x: True, co.Conv1d(1, 1, 3, padding=1))
    clip = torch.randn(1, 1, 6)
    net.clean_state()
    assert net.forward_steps(clip, pad_end=True).shape[2] == 6  # the library returned 5 frames
    state = net.get_state()
    assert isinstance(state, list)
    assert len(state) >= 2  # one entry per branch (and aligner), not a branch's own state tuple


def test_8_update_state_false_on_a_fresh_attention_module() -> None:
    attention = pytest.importorskip("modules.continual.attention")
    mha = attention.SingleOutputMultiheadAttention(4, 2, sequence_len=3)
    clip = torch.randn(1, 4, 5)
    peek = mha.forward_steps(clip, update_state=False)  # the library raised UnboundLocalError here
    # Nothing was kept: stepping the same clip again from here gives the same outputs.
    torch.testing.assert_close(peek, mha.forward_steps(clip))


def test_9_call_mode_contexts_nest_and_accept_ints() -> None:
    conv = co.Conv1d(1, 1, 1)
    with co.call_mode("forward_step"):
        with co.call_mode(1):
            assert conv.call_mode == "forward_steps"
        assert conv.call_mode == "forward_step"  # the library lost the outer mode here
    assert conv.call_mode == "forward"
    conv.call_mode = 2  # the library crashed on ints
    assert conv.call_mode == "forward_step"


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: co.Conv1d(1, 1, 3, padding=3), "exceeds the receptive field"),
        (lambda: co.continual(nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular")), "future frames"),
        (lambda: co.AdaptiveAvgPool3d((2, 1, 1), temporal_window=2), "temporal output size"),
        (lambda: co.continual(nn.LSTM(2, 2, bidirectional=True)), "recurrent"),
    ],
)
def test_10_unsupported_configurations_fail_clearly(build: object, match: str) -> None:
    with pytest.raises((ValueError, co.UnsupportedModuleError), match=match):
        build()  # type: ignore[operator]


def test_12_eval_mode_snapshot_is_a_snapshot() -> None:
    conv = co.Conv1d(1, 1, 3).eval()
    clip = torch.randn(1, 1, 6)
    with torch.no_grad():
        conv.clean_state()
        conv.forward_steps(clip[:, :, :3])
        snapshot = conv.get_state()
        before = snapshot[0].clone()
        conv.forward_steps(clip[:, :, 3:])
    torch.testing.assert_close(snapshot[0], before, atol=0, rtol=0)
