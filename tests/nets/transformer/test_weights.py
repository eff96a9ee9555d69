"""Checkpoints in the original formats (CoOadTR's ``main.py``: ``{"model", "optimizer", "lr_scheduler", "epoch",
"args"}``), written with the original key names, load strictly, safely, and compute what those tensors define."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from modules import nets
from modules.nets.transformer.weights import cooadtr_key, load_checkpoint, read_original_checkpoint
from tests.nets.transformer.helpers import TINY, TINY_CO, save_original_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

E, D, FF, H, N, K = TINY["embed_dim"], TINY["dim_feature"], TINY["ff_dim"], TINY["num_heads"], TINY["sequence_len"], 3
ROWS = TINY_CO["num_embeddings"]


def _random(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.3 for k, s in shapes.items()}


def _post_norm_block(prefix: str, attention: str, ff: tuple[str, str], norms: tuple[str, str]) -> dict:
    """Shapes of one original CoSi/CoRe block: attention without biases, feed-forward and two norms."""
    return {
        f"{prefix}{attention}in_proj_weight": (3 * E, E),
        f"{prefix}{attention}out_proj.weight": (E, E),
        **{f"{prefix}{ff[0]}{p}": s for p, s in (("weight", (FF, E)), ("bias", (FF,)))},
        **{f"{prefix}{ff[1]}{p}": s for p, s in (("weight", (E, FF)), ("bias", (E,)))},
        **{f"{prefix}{norm}{p}": (E,) for norm in norms for p in ("weight", "bias")},
    }


def original_cooadtr_state(depth: int, learned: bool = False, seed: int = 0) -> dict[str, Tensor]:
    """A CoOadTR-b``depth`` state dict under the original ``co.Sequential``'s keys (spec C7)."""
    shapes: dict[str, tuple[int, ...]] = {"0.weight": (E, D), "0.bias": (E,), "4.fn.weight": (E,), "4.fn.bias": (E,)}
    shapes["1.pe.weight" if learned else "1.pe.pattern"] = (ROWS, E)
    shapes |= {"5.weight": (K, E), "5.bias": (K,)}
    if depth == 1:
        shapes |= _post_norm_block("3.", "0.1.", ("2.1.0.", "2.1.3."), ("1.fn.", "3.fn."))
    else:
        shapes |= _post_norm_block("3.0.", "0.1.", ("1.fn.1.fn.0.", "1.fn.1.fn.3."), ("1.fn.0.", "1.fn.2."))
        shapes |= _post_norm_block("3.1.fn.", "0.1.", ("2.1.0.", "2.1.3."), ("1.fn.", "3.fn."))
    return _random(shapes, seed)


def original_oadtr_state(layers: int, decoder_layers: int = 0, seed: int = 0) -> dict[str, Tensor]:
    """An OadTR state dict under the original ``VisionTransformer_v3``'s keys (branch ``original``;
    ``decoder_layers=0``: ``no-decoder-no-cls-token``, which keeps ``cls_token`` and ``classifier``)."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, E), "linear_encoding.weight": (E, D), "linear_encoding.bias": (E,),
        "position_encoding.pe.weight": (N + 1, E), "pre_head_ln.weight": (E,), "pre_head_ln.bias": (E,),
        "classifier.weight": (K, E), "classifier.bias": (K,),
        "mlp_head.weight": (K, 2 * E if decoder_layers else E), "mlp_head.bias": (K,),
    }  # fmt: skip
    for i in range(layers):
        a, f = f"encoder.net.{2 * i}.fn.", f"encoder.net.{2 * i + 1}.fn."
        shapes |= {f"{a}norm.weight": (E,), f"{a}norm.bias": (E,), f"{a}fn.qkv.weight": (3 * E, E)}
        shapes |= {
            f"{a}fn.proj.weight": (E, E),
            f"{a}fn.proj.bias": (E,),
            f"{f}norm.weight": (E,),
            f"{f}norm.bias": (E,),
        }
        shapes |= {f"{f}fn.net.0.weight": (FF, E), f"{f}fn.net.0.bias": (FF,)}
        shapes |= {f"{f}fn.net.3.weight": (E, FF), f"{f}fn.net.3.bias": (E,)}
    for i in range(decoder_layers):
        layer = f"decoder.layers.{i}."
        for attention in ("self_attention", "cross_attention"):
            for proj in ("query", "key", "value", "out"):
                shapes |= {f"{layer}{attention}.{proj}_projection.weight": (E, E)}
                shapes |= {f"{layer}{attention}.{proj}_projection.bias": (E,)}
        shapes |= {f"{layer}conv1.weight": (1024, E, 1), f"{layer}conv1.bias": (1024,)}
        shapes |= {f"{layer}conv2.weight": (E, 1024, 1), f"{layer}conv2.bias": (E,)}
        shapes |= {f"{layer}norm{j}.{p}": (E,) for j in (1, 2, 3) for p in ("weight", "bias")}
    if decoder_layers:
        shapes |= {"decoder.norm.weight": (E,), "decoder.norm.bias": (E,), "decoder_cls_token": (1, 8, E)}
        shapes |= {"decoder_position_encoding.pe.weight": (8, E)}
    state = _random(shapes, seed)
    state["position_encoding.position_ids"] = torch.arange(N + 1).expand((1, -1))
    if decoder_layers:
        state["decoder_position_encoding.position_ids"] = torch.arange(8).expand((1, -1))
    return state


# --- references computed from the original tensors --------------------------------------------------------------
def _attention(x: Tensor, in_proj: Tensor, out_proj: Tensor, out_bias: Tensor | None = None) -> Tensor:
    q, k, v = F.linear(x, in_proj).unflatten(-1, (3, H, E // H)).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    return F.linear(out, out_proj, out_bias)


def _norm(x: Tensor, s: dict[str, Tensor], prefix: str) -> Tensor:
    return F.layer_norm(x, (E,), s[f"{prefix}weight"], s[f"{prefix}bias"])


def _post_norm(x: Tensor, s: dict[str, Tensor], attention: str, ff: tuple[str, str], norms: tuple[str, str]) -> Tensor:
    y = _norm(x + _attention(x, s[f"{attention}in_proj_weight"], s[f"{attention}out_proj.weight"]), s, norms[0])
    hidden = F.gelu(F.linear(y, s[f"{ff[0]}weight"], s[f"{ff[0]}bias"]))
    return _norm(y + F.linear(hidden, s[f"{ff[1]}weight"], s[f"{ff[1]}bias"]), s, norms[1])


def reference_cooadtr(s: dict[str, Tensor], window: Tensor, depth: int) -> Tensor:
    """The newest step's logits of the original CoOadTR on one window at PE offset 0, from its tensors."""
    table = s.get("1.pe.pattern", s.get("1.pe.weight"))
    x = F.linear(window.transpose(1, 2), s["0.weight"], s["0.bias"]) + table[: window.shape[2]]
    if depth == 2:
        x = _post_norm(x, s, "3.0.0.1.", ("3.0.1.fn.1.fn.0.", "3.0.1.fn.1.fn.3."), ("3.0.1.fn.0.", "3.0.1.fn.2."))
        x = _post_norm(x, s, "3.1.fn.0.1.", ("3.1.fn.2.1.0.", "3.1.fn.2.1.3."), ("3.1.fn.1.fn.", "3.1.fn.3.fn."))
    else:
        x = _post_norm(x, s, "3.0.1.", ("3.2.1.0.", "3.2.1.3."), ("3.1.fn.", "3.3.fn."))
    return F.linear(_norm(x[:, -1], s, "4.fn."), s["5.weight"], s["5.bias"])


def reference_oadtr_b(s: dict[str, Tensor], window: Tensor, layers: int) -> Tensor:
    """OadTR-b logits from its tensors: pre-norm layers, the newest token."""
    x = F.linear(window.transpose(1, 2), s["linear_encoding.weight"], s["linear_encoding.bias"])
    x = x + s["position_encoding.pe.weight"][: window.shape[2]]
    for i in range(layers):
        a, f = f"encoder.net.{2 * i}.fn.", f"encoder.net.{2 * i + 1}.fn."
        x = x + _attention(
            _norm(x, s, f"{a}norm."), s[f"{a}fn.qkv.weight"], s[f"{a}fn.proj.weight"], s[f"{a}fn.proj.bias"]
        )
        hidden = F.gelu(F.linear(_norm(x, s, f"{f}norm."), s[f"{f}fn.net.0.weight"], s[f"{f}fn.net.0.bias"]))
        x = x + F.linear(hidden, s[f"{f}fn.net.3.weight"], s[f"{f}fn.net.3.bias"])
    return F.linear(_norm(x[:, -1], s, "pre_head_ln."), s["mlp_head.weight"], s["mlp_head.bias"])


# --- tests ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("learned", [False, True])
def test_cooadtr_checkpoints_load_strictly_and_compute_the_original(tmp_path: Path, depth: int, learned: bool) -> None:
    state = original_cooadtr_state(depth, learned)
    path = save_original_checkpoint(tmp_path / "checkpoint.pth", state, num_layers=depth, dim_feature=D)
    pe = "recycling_learned" if learned else "recycling_fixed"
    net = nets.build(f"cooadtr_b{depth}", num_classes=K, positional_encoding=pe, **TINY_CO).eval()
    raw = load_checkpoint(net, path)  # strict: every key of both sides matched
    assert raw["args"].num_layers == depth and raw["epoch"] == 4
    own = net.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(own[cooadtr_key(key, depth)], value, atol=0, rtol=0)
    window = torch.randn(2, D, N)
    with torch.no_grad():
        torch.testing.assert_close(net(window)[:, :, 0], reference_cooadtr(state, window, depth), atol=1e-5, rtol=1e-5)
        again = nets.build(f"cooadtr_b{depth}", num_classes=K, positional_encoding=pe, **TINY_CO).eval()
        report = nets.load_pretrained(again, path)
        assert not report.missing and not report.unexpected
        net.clean_state()  # both at positional offset 0
        torch.testing.assert_close(again(window), net(window), atol=0, rtol=0)


@pytest.mark.parametrize("layers", [1, 2])
def test_oadtr_b_checkpoints_load_strictly_and_compute_the_original(tmp_path: Path, layers: int) -> None:
    state = original_oadtr_state(layers)
    path = save_original_checkpoint(tmp_path / "checkpoint.pth", state, num_layers=layers)
    net = nets.build(f"oadtr_b{layers}", num_classes=K, **TINY).eval()
    load_checkpoint(net, path)
    window = torch.randn(2, D, N)
    with torch.no_grad():
        torch.testing.assert_close(net(window), reference_oadtr_b(state, window, layers), atol=1e-5, rtol=1e-5)


def test_the_full_oadtr_checkpoint_loads_strictly(tmp_path: Path) -> None:
    state = original_oadtr_state(3, decoder_layers=2)
    path = save_original_checkpoint(tmp_path / "checkpoint.pth", state, num_layers=3, decoder_layers=2)
    net = nets.build("oadtr", num_classes=K, decoder_layers=2, **TINY).eval()
    load_checkpoint(net, path)
    other = nets.build("oadtr", num_classes=K, decoder_layers=2, **TINY).eval()
    nets.load_pretrained(other, path)
    window = torch.randn(2, D, N)
    with torch.no_grad():
        for a, b in zip(net.forward_with_decoder(window), other.forward_with_decoder(window), strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


class _Payload:
    """A class no checkpoint of ours may instantiate on loading."""


def test_loading_allows_namespace_but_no_other_class(tmp_path: Path) -> None:
    state = original_cooadtr_state(1)
    path = save_original_checkpoint(tmp_path / "ok.pth", state, num_layers=1)
    assert read_original_checkpoint(path)["args"].enc_layers == 64
    torch.save({"model": state, "args": _Payload()}, tmp_path / "bad.pth")
    with pytest.raises(pickle.UnpicklingError):
        read_original_checkpoint(tmp_path / "bad.pth")


def test_a_checkpoint_of_another_net_names_the_one_that_fits(tmp_path: Path) -> None:
    b2 = save_original_checkpoint(tmp_path / "b2.pth", original_cooadtr_state(2))
    with pytest.raises(ValueError, match="build cooadtr_b2"):
        load_checkpoint(nets.build("cooadtr_b1", num_classes=K, **TINY_CO), b2)
    with pytest.raises(ValueError, match="build cooadtr_b1 / cooadtr_b2"):
        load_checkpoint(nets.build("oadtr_b1", num_classes=K, **TINY), b2)
    with pytest.raises(ValueError, match="positional_encoding='recycling_fixed'"):
        load_checkpoint(nets.build("cooadtr_b2", num_classes=K, positional_encoding="recycling_learned", **TINY_CO), b2)
    with pytest.raises(ValueError, match=f"dim_feature={D}"):
        load_checkpoint(nets.build("cooadtr_b2", num_classes=K, **{**TINY_CO, "dim_feature": D + 1}), b2)
    with pytest.raises(ValueError, match=f"num_classes={K}"):
        load_checkpoint(nets.build("cooadtr_b2", num_classes=K + 1, **TINY_CO), b2)
    oadtr = save_original_checkpoint(tmp_path / "oadtr.pth", original_oadtr_state(1))
    with pytest.raises(ValueError, match="build oadtr"):
        load_checkpoint(nets.build("cooadtr_b1", num_classes=K, **TINY_CO), oadtr)
