"""OadTR and OadTR-b1/b2: the published parameter counts, the original keys, shapes, and what the class tokens do."""

from __future__ import annotations

import pytest
import torch

from modules import nets
from tests.nets.transformer.helpers import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(name: str, prefix: str = "", **overrides: int) -> int:
    with torch.device("meta"):
        net = nets.build(name, **overrides)
    return sum(p.numel() for k, p in net.named_parameters() if k.startswith(prefix))


@pytest.mark.parametrize(("name", "params"), [("oadtr", 74_709_036), ("oadtr_b1", 9_560_108), ("oadtr_b2", 15_858_732)])
def test_the_published_parameter_counts_at_3072_d(name: str, params: int) -> None:
    assert _params(name) == params
    assert nets.input_spec(name).is_features and nets.input_spec(name).channels == 3072


def test_the_decoder_holds_its_published_share() -> None:
    decoder = sum(_params("oadtr", p) for p in ("decoder.", "decoder_cls_token", "decoder_position_encoding."))
    assert decoder == 52_529_152


def test_the_original_key_names() -> None:
    with torch.device("meta"):
        keys = set(nets.build("oadtr").state_dict())
    expected = {
        "linear_encoding.weight", "cls_token", "position_encoding.pe.weight", "position_encoding.position_ids",
        "encoder.net.0.fn.norm.weight", "encoder.net.0.fn.fn.qkv.weight", "encoder.net.0.fn.fn.proj.bias",
        "encoder.net.1.fn.norm.bias", "encoder.net.1.fn.fn.net.0.weight", "encoder.net.5.fn.fn.net.3.bias",
        "pre_head_ln.weight", "decoder.layers.4.self_attention.query_projection.weight",
        "decoder.layers.0.cross_attention.out_projection.bias", "decoder.layers.2.conv1.weight",
        "decoder.layers.3.norm3.weight", "decoder.norm.bias", "decoder_cls_token",
        "decoder_position_encoding.pe.weight", "classifier.weight", "mlp_head.weight",
    }  # fmt: skip
    assert expected <= keys
    assert "encoder.net.0.fn.fn.qkv.bias" not in keys  # OadTR's qkv has no bias
    assert not any(k.startswith("encoder.net.6.") for k in keys)  # 3 layers: blocks 0..5
    with torch.device("meta"):
        b1 = set(nets.build("oadtr_b1").state_dict())
    assert {"cls_token", "classifier.weight", "position_encoding.pe.weight"} <= b1  # kept, unused
    assert not any(k.startswith("decoder") for k in b1)


def test_shapes_and_the_decoder_outputs() -> None:
    torch.manual_seed(0)
    clip = torch.randn(3, TINY["dim_feature"], TINY["sequence_len"])
    full = nets.build("oadtr", num_classes=4, decoder_layers=2, **TINY).eval()
    logits, future = full.forward_with_decoder(clip)
    assert logits.shape == (3, 4) and future.shape == (3, 4, 8)
    torch.testing.assert_close(full(clip), logits)
    b1 = nets.build("oadtr_b1", num_classes=4, **TINY).eval()
    assert b1(clip).shape == (3, 4)
    with pytest.raises(AttributeError, match="without a decoder"):
        b1.forward_with_decoder(clip)


def test_the_class_token_is_appended_and_read_by_oadtr_only() -> None:
    torch.manual_seed(0)
    clip = torch.randn(2, TINY["dim_feature"], TINY["sequence_len"])
    full = nets.build("oadtr", decoder_layers=1, **TINY).eval()
    b1 = nets.build("oadtr_b1", **TINY).eval()
    before = (full(clip), b1(clip))
    with torch.no_grad():
        full.cls_token.normal_()
        b1.cls_token.normal_()
        b1.classifier.weight.normal_()
    assert not torch.allclose(full(clip), before[0])
    torch.testing.assert_close(b1(clip), before[1], atol=0, rtol=0)
    # b1 predicts from the newest step: changing the oldest step changes it, as attention mixes all steps
    later = clip.clone()
    later[:, :, 0] += 1
    assert not torch.allclose(b1(later), before[1])


def test_decoder_queries_attend_causally() -> None:
    """Query i sees queries 0..i (FullAttention with its triangular mask): a later query cannot change it."""
    torch.manual_seed(0)
    clip = torch.randn(2, TINY["dim_feature"], TINY["sequence_len"])
    full = nets.build("oadtr", decoder_layers=2, **TINY).eval()
    _, future = full.forward_with_decoder(clip)
    with torch.no_grad():
        full.decoder_cls_token[:, 5:].normal_()
    _, changed = full.forward_with_decoder(clip)
    torch.testing.assert_close(changed[:, :, :5], future[:, :, :5])
    assert not torch.allclose(changed[:, :, 5:], future[:, :, 5:])


def test_a_wrong_feature_width_or_window_names_the_fix() -> None:
    net = nets.build("oadtr_b1", **TINY)
    with pytest.raises(ValueError, match="dim_feature=20"):
        net(torch.randn(1, 20, TINY["sequence_len"]))
    with pytest.raises(ValueError, match="sequence_len=7"):
        net(torch.randn(1, TINY["dim_feature"], 7))
