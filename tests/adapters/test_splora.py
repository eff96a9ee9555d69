"""SPLoRA layers mirroring the library's tests (sp_adapters v0.7.1 ``tests/test_splora.py``), plus exactness
checks."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modules.adapters import (
    LowRankMatrix,
    SPLoRAConv1d,
    SPLoRAConv2d,
    SPLoRAConv3d,
    SPLoRALinear,
    SPLoRAMultiheadAttention,
    merge_adapters,
    splora,
    trainable_parameter_count,
)

pytestmark = pytest.mark.usefixtures("one_thread")

IN_MASK = torch.tensor([1, 0, 1, 1, 0, 1, 0, 0, 0], dtype=torch.bool)  # 4 of 9 kept
OUT_MASK = torch.tensor([1, 0, 1, 0], dtype=torch.bool)  # 2 of 4 kept
CONVS = {1: (nn.Conv1d, SPLoRAConv1d), 2: (nn.Conv2d, SPLoRAConv2d), 3: (nn.Conv3d, SPLoRAConv3d)}


def adam_step(module: nn.Module, out: torch.Tensor) -> None:
    """One Adam step on an MSE loss against a random target."""
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad])
    opt.zero_grad()
    F.mse_loss(out, torch.randn_like(out)).backward()
    opt.step()


def test_linear_copies_trains_adapter_only_and_counts() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(9, 4)
    sp = SPLoRALinear.from_module(lin, rank=2)
    assert torch.equal(sp.weight, lin.weight) and torch.equal(sp.bias, lin.bias)
    assert sp.weight is not lin.weight and sp.bias is not lin.bias
    assert not sp.weight.requires_grad and sp.bias.requires_grad
    assert isinstance(sp, nn.Linear) and sp.rank == 2
    assert repr(sp) == (
        "SPLoRALinear(\n  in_features=9, out_features=4, bias=True, rank=2, init_range=0.0001\n"
        "  (adapter): LowRankMatrix(in_features=9, out_features=4, rank=2)\n)"
    )
    rows, cols = sp.adapter.rows.clone(), sp.adapter.cols.clone()
    x = torch.randn(2, 9)

    sp.weight.requires_grad = True
    with pytest.warns(UserWarning, match="frozen base weight"):
        out = sp(x)
    assert not sp.weight.requires_grad
    torch.testing.assert_close(out, lin(x), atol=1e-3, rtol=0)

    adam_step(sp, out)
    assert torch.equal(sp.weight, lin.weight)
    assert not torch.equal(sp.bias, lin.bias)
    assert not torch.equal(sp.adapter.rows, rows) and not torch.equal(sp.adapter.cols, cols)

    # the library's test: r·n_in + r·n_out + n_out(bias) = 2·4 + 2·2 + 2
    assert sp.learned_parameter_count(IN_MASK, OUT_MASK) == 14
    assert sp.learned_parameter_count(IN_MASK.int(), OUT_MASK.float()) == 14  # 0/1 masks too
    assert sp.learned_parameter_count() == trainable_parameter_count(sp) == 2 * 9 + 2 * 4 + 4
    sp.bias.requires_grad_(False)
    assert sp.learned_parameter_count(IN_MASK, OUT_MASK) == 12  # a frozen bias is not learned

    fused = sp.eval().to_module()
    assert type(fused) is nn.Linear
    assert torch.equal(fused.weight, sp.adapted_weight()) and torch.equal(fused.bias, sp.bias)
    assert torch.equal(fused(x), sp(x))


def test_linear_training_path_equals_eval_path() -> None:
    # the low-memory training forward (x·Aᵀ)·Bᵀ never builds ΔW but must give x·(W + BA)ᵀ
    torch.manual_seed(0)
    sp = SPLoRALinear(12, 7, rank=3, init_range=0.1)
    x = torch.randn(5, 3, 12)
    train_out = sp.train()(x)
    eval_out = sp.eval()(x)
    torch.testing.assert_close(train_out, eval_out, atol=1e-6, rtol=0)
    assert not torch.allclose(eval_out, F.linear(x, sp.weight, sp.bias), atol=1e-3)  # the adapter matters


def test_delta_is_low_rank_product_and_initialised_as_library() -> None:
    torch.manual_seed(0)
    sp = SPLoRALinear(40, 30, rank=4, init_range=1e-3)
    a, b = sp.adapter.rows, sp.adapter.cols
    assert a.shape == (1, 4, 40) and b.shape == (1, 30, 4)
    assert torch.equal(sp.delta_weight(), b[0] @ a[0])
    assert torch.equal(sp.adapted_weight(), sp.weight + b[0] @ a[0])
    # A: kaiming_uniform_(a=√5) on the 3-D tensor has fan_in r·Ci, so |A| ≤ 1/√(r·Ci); it uses most of that range
    bound = 1 / math.sqrt(4 * 40)
    assert a.abs().max() <= bound and a.abs().max() > 0.8 * bound
    assert b.abs().max() <= 1e-3 and b.abs().max() > 0.8e-3
    # falsy init_range: B is kaiming too, fan_in Co·r
    b0 = SPLoRALinear(40, 30, rank=4, init_range=0).adapter.cols
    assert b0.abs().max() <= 1 / math.sqrt(30 * 4) and b0.abs().max() > 1e-2


@pytest.mark.parametrize(
    ("rank", "out_features", "expected"),
    [(2, 4, 2), (2.6, 4, 3), (1 / 8, 512, 64), (1 / 8, 10, 1), (0.01, 10, 1), (0.5, 4, 2)],
)
def test_rank_resolution(rank: float, out_features: int, expected: int) -> None:
    assert SPLoRALinear(6, out_features, rank=rank).rank == expected
    assert LowRankMatrix(6, out_features, rank).rank == expected


@pytest.mark.parametrize("rank", [0, -1, True, "4"])
def test_bad_rank_raises(rank: object) -> None:
    with pytest.raises(ValueError, match="rank"):
        SPLoRALinear(6, 4, rank=rank)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_copies_trains_adapter_only_and_counts(nd: int) -> None:
    torch.manual_seed(0)
    conv_cls, sp_cls = CONVS[nd]
    bias = nd == 2  # as the library test: bias only for 2d
    rank = 2
    conv = conv_cls(9, 4, kernel_size=3, bias=bias)
    sp = sp_cls.from_module(conv, rank=rank)
    assert isinstance(sp, conv_cls) and sp.adapter.rows.shape == (1, rank, 9) and sp.adapter.cols.shape == (1, 4, rank)
    assert torch.equal(sp.weight, conv.weight) and not sp.weight.requires_grad
    if bias:
        assert torch.equal(sp.bias, conv.bias) and sp.bias.requires_grad
    else:
        assert sp.bias is None
    rows, cols = sp.adapter.rows.clone(), sp.adapter.cols.clone()
    x = torch.randn(2, 9, *(7,) * nd)

    sp.weight.requires_grad_(True)
    with pytest.warns(UserWarning, match="frozen base weight"):
        out = sp(x)
    assert not sp.weight.requires_grad
    torch.testing.assert_close(out, conv(x), atol=1e-3, rtol=0)

    adam_step(sp, out)
    assert torch.equal(sp.weight, conv.weight)
    if bias:
        assert not torch.equal(sp.bias, conv.bias)
    assert not torch.equal(sp.adapter.rows, rows) and not torch.equal(sp.adapter.cols, cols)

    # the library's test: 4r + 2r (+2), independent of the kernel size
    assert sp.learned_parameter_count(IN_MASK, OUT_MASK) == 4 * rank + 2 * rank + (2 if bias else 0)
    assert sp.learned_parameter_count() == trainable_parameter_count(sp)

    fused = sp.to_module()
    assert type(fused) is conv_cls
    assert torch.equal(fused.weight, sp.adapted_weight())
    if bias:
        assert torch.equal(fused.bias, sp.bias)
    torch.testing.assert_close(fused(x), sp(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_delta_sits_on_centre_tap(nd: int) -> None:
    torch.manual_seed(0)
    sp = CONVS[nd][1](6, 4, kernel_size=5, groups=2, rank=2, init_range=0.1)
    delta = sp.delta_weight()
    assert delta.shape == sp.weight.shape == (4, 3, *(5,) * nd)
    centre = (slice(None), slice(None), *(2,) * nd)
    assert torch.equal(delta[centre], sp.adapter.cols[0] @ sp.adapter.rows[0])
    off_centre = delta.clone()
    off_centre[centre] = 0
    assert not off_centre.any()
    assert torch.equal(sp.adapted_weight(), sp.weight + delta)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_adapter_equals_parallel_pointwise_conv(nd: int) -> None:
    # with padding = dilation·(k−1)/2 the centre tap reads the same pixel as a 1×1 conv, same stride
    torch.manual_seed(0)
    k, dilation, stride = 3, 2, 2
    sp = CONVS[nd][1](
        4, 6, k, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation, groups=2, rank=2, init_range=0.1
    )
    x = torch.randn(2, 4, *(9,) * nd)
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    base = sp._conv_forward(x, sp.weight, sp.bias)
    pointwise = conv(x, sp.delta_matrix().reshape(6, 2, *(1,) * nd), stride=stride, groups=2)
    torch.testing.assert_close(sp(x), base + pointwise, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(sp(x), base, atol=1e-3)


def test_grouped_conv_shapes_and_masked_count() -> None:
    torch.manual_seed(0)
    rank = 2
    conv = nn.Conv2d(10, 4, 3, groups=2, padding=1)
    sp = SPLoRAConv2d.from_module(conv, rank=rank)
    assert sp.adapter.rows.shape == (1, rank, 5)  # Ci/G (fixed in library v0.7.1)
    x = torch.randn(1, 10, 6, 6)
    torch.testing.assert_close(sp(x), conv(x), atol=1e-3, rtol=0)
    in_mask = torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool)  # over Ci/G: 3 kept
    assert sp.learned_parameter_count(in_mask, OUT_MASK) == 3 * rank + 2 * rank + 2
    # a mask over all Ci: column j of A lives while channel j of any group lives
    full = torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 0, 0], dtype=torch.bool)  # columns 0 and 2
    assert sp.learned_parameter_count(full, None) == 2 * rank + 4 * rank + 4
    with pytest.raises(ValueError, match=r"in_mask .* 7 entries; expected 5"):
        sp.learned_parameter_count(torch.ones(7), None)
    with pytest.raises(ValueError, match="out_mask"):
        sp.learned_parameter_count(None, torch.ones(5))


@pytest.mark.parametrize(
    "conv", [nn.Conv2d(3, 4, 4), nn.Conv2d(3, 4, (3, 5)), nn.Conv3d(3, 4, (1, 3, 3))], ids=["even", "3x5", "1x3x3"]
)
def test_kernel_must_be_square_and_odd(conv: nn.Module) -> None:
    sp_cls = SPLoRAConv2d if isinstance(conv, nn.Conv2d) else SPLoRAConv3d
    shape = re.escape(str(tuple(conv.kernel_size)))
    with pytest.raises(ValueError, match=f"cannot adapt {type(conv).__name__}.*kernel_size {shape}"):
        sp_cls.from_module(conv)
    with pytest.raises(ValueError, match="odd sides"):
        sp_cls(3, 4, conv.kernel_size)


def test_from_module_rejects_wrong_layers() -> None:
    with pytest.raises(TypeError, match=r"needs an nn\.Conv2d"):
        SPLoRAConv2d.from_module(nn.Conv1d(2, 2, 3))
    with pytest.raises(TypeError, match="already an adapter"):
        SPLoRAConv2d.from_module(SPLoRAConv2d(2, 2, 3))
    with pytest.raises(TypeError, match="already an adapter"):
        SPLoRAMultiheadAttention.from_module(SPLoRAMultiheadAttention(8, 2))


def test_conv_keeps_padding_mode_stride_and_device_dtype() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, padding_mode="circular", dtype=torch.float64)
    sp = SPLoRAConv2d.from_module(conv, rank=1, init_range=0)
    assert sp.weight.dtype == sp.adapter.rows.dtype == torch.float64
    assert sp.padding_mode == "circular" and sp.stride == (2, 2)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    fused = sp.to_module()
    assert fused.padding_mode == "circular" and fused.weight.dtype == torch.float64
    torch.testing.assert_close(fused(x), sp(x))
    assert not torch.allclose(sp(x), conv(x), atol=1e-3)  # kaiming B: a visible adapter that padding must see


def test_state_dict_keys_and_float64() -> None:
    sp = SPLoRAConv2d(3, 4, 3, rank=2)
    assert list(sp.state_dict()) == ["weight", "bias", "adapter.rows", "adapter.cols"]
    lin = SPLoRALinear(3, 4, bias=False, rank=2).to(torch.float64)
    assert list(lin.state_dict()) == ["weight", "adapter.rows", "adapter.cols"]
    assert not lin.weight.requires_grad and lin.adapter.cols.dtype == torch.float64
    assert lin(torch.randn(2, 3, dtype=torch.float64)).dtype == torch.float64


def _mha_pair(**kwargs: object) -> tuple[nn.MultiheadAttention, SPLoRAMultiheadAttention]:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, **kwargs)
    if mha.in_proj_bias is not None:  # torch zero-initialises these; make the copy test meaningful
        with torch.no_grad():
            mha.in_proj_bias.uniform_(-0.1, 0.1)
            mha.out_proj.bias.uniform_(-0.1, 0.1)
    return mha, SPLoRAMultiheadAttention.from_module(mha, rank=2)


MHA_CASES = {
    "equal_dims_no_bias": {"bias": False},
    "kdim_vdim_24_bias_kv_batch_first": {"kdim": 24, "vdim": 24, "add_bias_kv": True, "batch_first": True},
}


def _mha_inputs(mha: nn.MultiheadAttention) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    def seq(length: int, dim: int) -> torch.Tensor:
        return torch.randn(2, length, dim) if mha.batch_first else torch.randn(length, 2, dim)

    return seq(5, 16), seq(7, mha.kdim), seq(7, mha.vdim)


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_mha_copies_trains_adapters_only_and_fuses_exactly(case: str) -> None:
    mha, sp = _mha_pair(**MHA_CASES[case])
    if mha._qkv_same_embed_dim:
        base = torch.cat([sp.q_proj.weight, sp.k_proj.weight, sp.v_proj.weight])
        assert torch.equal(base, mha.in_proj_weight)
        torch.testing.assert_close(sp.in_proj_weight, mha.in_proj_weight, atol=1e-4, rtol=0)
    else:
        assert sp.in_proj_weight is None
        for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            assert torch.equal(getattr(sp, name[:6]).weight, getattr(mha, name))
            torch.testing.assert_close(getattr(sp, name), getattr(mha, name), atol=1e-4, rtol=0)
    assert torch.equal(sp.out_proj.weight, mha.out_proj.weight)
    projections = (sp.q_proj, sp.k_proj, sp.v_proj, sp.out_proj)
    assert all(not p.weight.requires_grad for p in projections)
    biases = [n for n in ("in_proj_bias", "bias_k", "bias_v") if getattr(mha, n) is not None]
    for name in biases:
        assert torch.equal(getattr(sp, name), getattr(mha, name))

    q, k, v = _mha_inputs(mha)
    out, weights = sp(q, k, v)
    ref_out, ref_weights = mha(q, k, v)
    torch.testing.assert_close(out, ref_out, atol=1e-3, rtol=0)
    torch.testing.assert_close(weights, ref_weights, atol=1e-3, rtol=0)

    factors = [t.clone() for p in projections for t in (p.adapter.rows, p.adapter.cols)]
    frozen = [p.weight.clone() for p in projections]
    before = {n: getattr(sp, n).clone() for n in biases}
    adam_step(sp, out)
    assert all(torch.equal(p.weight, w) for p, w in zip(projections, frozen, strict=True))
    after = [t for p in projections for t in (p.adapter.rows, p.adapter.cols)]
    assert len(after) == 8 and all(not torch.equal(a, b) for a, b in zip(after, factors, strict=True))
    for name in biases:
        assert not torch.equal(getattr(sp, name), before[name])

    sp.eval()
    fused = sp.to_module()
    assert type(fused) is nn.MultiheadAttention and fused.batch_first == mha.batch_first
    if mha._qkv_same_embed_dim:
        assert torch.equal(fused.in_proj_weight, sp.in_proj_weight)
    else:
        assert torch.equal(fused.k_proj_weight, sp.k_proj.adapted_weight())
    assert torch.equal(fused.out_proj.weight, sp.out_proj.adapted_weight())
    torch.testing.assert_close(fused(q, k, v)[0], sp(q, k, v)[0], atol=1e-6, rtol=0)


def test_mha_masks_unbatched_and_dropout_follow_torch() -> None:
    mha, sp = _mha_pair(dropout=0.5)
    mha.eval(), sp.eval()
    x = torch.randn(6, 2, 16)
    pad = torch.tensor([[False] * 5 + [True], [False] * 6])
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    out, w = sp(x, x, x, key_padding_mask=pad, attn_mask=causal, average_attn_weights=False)
    ref, ref_w = mha(x, x, x, key_padding_mask=pad, attn_mask=causal, average_attn_weights=False)
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=0)
    assert w.shape == ref_w.shape == (2, 4, 6, 6)
    single, none = sp(x[:, 0], x[:, 0], x[:, 0], need_weights=False)  # unbatched (L, E)
    assert none is None
    torch.testing.assert_close(single, mha(x[:, 0], x[:, 0], x[:, 0])[0], atol=1e-3, rtol=0)
    sp.train()
    torch.manual_seed(1)
    a = sp(x, x, x)[0]
    assert not torch.allclose(a, sp(x, x, x)[0])  # dropout is active in training only


def test_mha_learned_count_and_state_dict() -> None:
    _, sp = _mha_pair(kdim=24, vdim=24, add_bias_kv=True)
    assert sp.rank == 2
    assert sp.learned_parameter_count() == trainable_parameter_count(sp)
    keep = torch.zeros(16, dtype=torch.bool)
    keep[:4] = True
    # in_mask reaches only q (kdim/vdim ≠ embed_dim), out_mask only out_proj's outputs and bias
    expected = trainable_parameter_count(sp) - 2 * 12 - (2 * 12 + 12)
    assert sp.learned_parameter_count(keep, keep) == expected
    keys = set(sp.state_dict())
    assert {"q_proj.weight", "q_proj.adapter.rows", "out_proj.adapter.cols", "in_proj_bias", "bias_k"} <= keys


def test_mha_in_transformer_encoder_layer_matches_fused_in_eval() -> None:
    # torch's fused encoder-layer fast path (eval, no_grad, batch_first) would read the frozen base weights;
    # the adapter must keep it on the general path
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True, dropout=0.0)
    adapted = splora(layer, 2, init_range=0.1, types=(nn.MultiheadAttention,)).eval()
    fused = merge_adapters(adapted).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(adapted(x), fused(x), atol=1e-5, rtol=0)
        assert not torch.allclose(adapted(x), layer.eval()(x), atol=1e-3)


def test_legacy_prune_pattern_keeps_base_frozen_and_adapter_alive() -> None:
    # channel-spa-experiments ``src/prune_layer.py`` zeroes filters once via prune.custom_from_mask + remove and
    # leaves B rows alone
    from torch.nn.utils import prune

    torch.manual_seed(0)
    sp = SPLoRAConv2d(3, 4, 3, padding=1, rank=2, init_range=0.1)
    mask = torch.ones_like(sp.weight)
    mask[1] = 0
    prune.custom_from_mask(sp, "weight", mask)
    x = torch.randn(1, 3, 5, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "frozen base weight" warning on the way
        masked_out = sp(x)
        prune.remove(sp, "weight")
        out = sp(x)
    assert not sp.weight.requires_grad and not sp.weight[1].any()
    assert torch.equal(out, masked_out)
    pointwise = F.conv2d(x, sp.delta_matrix()[1:2, :, None, None])[0, 0]
    torch.testing.assert_close(out[0, 1], pointwise + sp.bias[1], atol=1e-6, rtol=0)  # only the adapter remains
