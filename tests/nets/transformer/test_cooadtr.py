"""CoOadTR-b1/b2: published parameter counts, the architecture's facts (post-norm, no attention biases, recycling
PE), and the continual contract: a step's output is the clip output of its window at its positional offset."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules import continual as co
from modules import nets
from tests.nets.transformer.helpers import TINY_CO

pytestmark = pytest.mark.usefixtures("one_thread")

N = TINY_CO["sequence_len"]
D = TINY_CO["dim_feature"]
NAMES = ("cooadtr_b1", "cooadtr_b2")


def _tiny(name: str, **overrides: object) -> nn.Module:
    torch.manual_seed(0)
    return nets.build(name, num_classes=3, **{**TINY_CO, **overrides}).eval()


@pytest.mark.parametrize(
    ("name", "dim_feature", "params"),
    [
        ("cooadtr_b1", 3072, 9_468_950),
        ("cooadtr_b2", 3072, 15_766_550),
        ("cooadtr_b1", 4096, 10_517_526),
        ("cooadtr_b2", 4096, 16_815_126),
    ],
)
def test_the_published_parameter_counts(name: str, dim_feature: int, params: int) -> None:
    with torch.device("meta"):
        net = nets.build(name, dim_feature=dim_feature)
    assert sum(p.numel() for p in net.parameters()) == params
    assert net.delay == 63 and net.receptive_field == 64


@pytest.mark.parametrize("name", NAMES)
def test_post_norm_gelu_layers_whose_attention_has_no_bias(name: str) -> None:
    net = _tiny(name)
    layers = net.encoder.layers
    assert len(layers) == (1 if name.endswith("b1") else 2)
    modes = [layer.mode for layer in layers]
    assert modes == (["single_output"] if len(layers) == 1 else ["retroactive", "single_output"])
    for layer in layers:
        attention = layer.self_attn
        assert isinstance(attention, co.RetroactiveMultiheadAttention | co.SingleOutputMultiheadAttention)
        assert attention.in_proj_bias is None and attention.out_proj.bias is None
        assert layer.linear1.bias is not None and layer.linear2.bias is not None and layer.norm1.bias is not None
        assert not layer.norm_first and layer.activation is torch.nn.functional.gelu
    assert not any("self_attn" in k and k.endswith("bias") for k in net.state_dict())


def test_the_fixed_table_is_a_buffer_and_the_learned_one_a_parameter() -> None:
    fixed, learned = _tiny("cooadtr_b1"), _tiny("cooadtr_b1", positional_encoding="recycling_learned")
    assert "position_encoding.pe.pattern" in fixed.state_dict()
    assert "position_encoding.pe.pattern" not in dict(fixed.named_parameters())
    assert "position_encoding.pe.weight" in dict(learned.named_parameters())
    assert fixed.position_encoding.num_embeds == TINY_CO["num_embeddings"]


@pytest.mark.parametrize("name", NAMES)
def test_a_step_is_the_clip_output_of_its_window_at_its_offset(name: str) -> None:
    """Step t emits the window t-n+1..t with PE rows (t-n+1 ..) mod num_embeddings: beyond one cycle of the table."""
    net = _tiny(name)
    steps = 2 * TINY_CO["num_embeddings"] + 3
    stream = torch.randn(2, D, steps)
    with torch.no_grad():
        net.clean_state()
        outs = [net.forward_step(stream[:, :, t]) for t in range(steps)]
        assert all(o is None for o in outs[: N - 1]) and all(o is not None for o in outs[N - 1 :])
        for t in range(N - 1, steps):
            net.clean_state()
            net.position_encoding.forward_steps(torch.zeros(2, TINY_CO["embed_dim"], t - N + 1))  # offset t - n + 1
            window = net(stream[:, :, t - N + 1 : t + 1])
            assert window.shape == (2, 3, 1)
            torch.testing.assert_close(outs[t], window[:, :, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_clip_output_equals_forward_steps_on_a_long_stream(name: str) -> None:
    """One output per complete window (the original's forward_steps fails beyond num_embeddings steps)."""
    net = _tiny(name)
    stream = torch.randn(1, D, 3 * TINY_CO["num_embeddings"])
    with torch.no_grad():
        net.clean_state()
        clip = net(stream)
        net.clean_state()
        stepped = net.forward_steps(stream)
    assert clip.shape == stepped.shape == (1, 3, stream.shape[2] - N + 1)
    torch.testing.assert_close(clip, stepped, atol=1e-5, rtol=1e-5)


def test_forward_moves_the_offset_by_one_per_call_even_in_eval() -> None:
    net = _tiny("cooadtr_b1")
    window = torch.randn(1, D, N)
    with torch.no_grad():
        first, second = net(window), net(window)
        assert net.position_encoding.index == 2
        assert not torch.allclose(first, second)
        net.clean_state()
        torch.testing.assert_close(net(window), first, atol=0, rtol=0)


def test_state_snapshots_and_peeking() -> None:
    net = _tiny("cooadtr_b2")
    stream = torch.randn(1, D, N + 3)
    with torch.no_grad():
        net.clean_state()
        net.forward_steps(stream[:, :, :N])
        saved = net.get_state()
        peek = net.forward_step(stream[:, :, N], update_state=False)
        out = net.forward_step(stream[:, :, N])
        torch.testing.assert_close(peek, out, atol=0, rtol=0)
        net.set_state(saved)
        torch.testing.assert_close(net.forward_step(stream[:, :, N]), out, atol=0, rtol=0)


def test_wrong_inputs_and_options_name_the_fix() -> None:
    net = _tiny("cooadtr_b1")
    with pytest.raises(ValueError, match="dim_feature=20"):
        net(torch.randn(1, 20, N))
    with pytest.raises(ValueError, match="dim_feature=20"):
        net.forward_step(torch.randn(1, 20))
    with pytest.raises(ValueError, match=f"sequence_len={N}"):
        net(torch.randn(1, D, N - 1))
    with pytest.raises(ValueError, match="recycling_fixed"):
        nets.build("cooadtr_b1", positional_encoding="learned")
    with pytest.raises(RuntimeError, match="eval"):
        net.train().forward_step(torch.randn(1, D))
