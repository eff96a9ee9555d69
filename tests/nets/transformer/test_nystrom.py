"""Nyströmformer-b1/b2 and Continual Nyströmformer-b1/b2: builders, shapes, twins, what the continual clip computes."""

from __future__ import annotations

import inspect

import pytest
import torch

from modules import continual as co
from modules import nets
from modules.nets.transformer.nystrom import CoNystromformer, Nystromformer
from tests.nets.helpers import randomize
from tests.nets.transformer.helpers import TINY_CO

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("nystromformer_b1", "nystromformer_b2", "conystromformer_b1", "conystromformer_b2")
SMALL = {**TINY_CO, "sequence_len": 6, "num_landmarks": 2, "num_embeddings": 11, "num_classes": 3}
N = SMALL["sequence_len"]


def _build(name: str, **overrides) -> Nystromformer:
    torch.manual_seed(0)
    return randomize(nets.build(name, **{**SMALL, **overrides})).eval()


@pytest.mark.parametrize("name", NAMES)
def test_builders_take_the_shared_keyword_arguments_with_the_original_defaults(name: str) -> None:
    defaults = nets.builder_defaults(name)
    expected = {
        "dim_feature": 3072,
        "num_classes": 22,
        "sequence_len": 64,
        "embed_dim": 1024,
        "num_heads": 8,
        "ff_dim": 1024,
        "dropout": 0.1,
        "num_embeddings": 127,
        "num_landmarks": 8,
        "fixed_landmarks": False,
        "attention_projections": False,
        "pseudo_inverse": False,
    }
    assert {k: defaults[k] for k in expected} == expected
    # the original: recycling_learned for `nystromformer`, recycling_fixed for `continual_nystrom`
    assert defaults["positional_encoding"] == ("recycling_fixed" if name.startswith("co") else "recycling_learned")
    parameters = inspect.signature(nets.get_builder(name)).parameters.values()
    assert all(p.kind is p.KEYWORD_ONLY for p in parameters)


@pytest.mark.parametrize("name", NAMES)
def test_one_or_two_post_norm_nystrom_layers(name: str) -> None:
    net = _build(name)
    layers = net.encoder.layers
    assert len(layers) == (2 if name.endswith("b2") else 1)
    assert isinstance(net, CoNystromformer) == name.startswith("co")
    assert all(not layer.norm_first and not layer.self_attn.projections for layer in layers)
    assert layers[0].self_attn.mode == ("retroactive" if len(layers) == 2 else "single_output")


def test_offline_net_scores_the_newest_step_of_one_window() -> None:
    net = _build("nystromformer_b2")
    assert net(torch.randn(2, SMALL["dim_feature"], N)).shape == (2, 3)
    with pytest.raises(ValueError, match="sequence_len=6"):
        net(torch.randn(2, SMALL["dim_feature"], N + 1))
    with pytest.raises(ValueError, match="dim_feature"):
        net(torch.randn(2, 5, N))


@pytest.mark.parametrize("name", ["conystromformer_b1", "conystromformer_b2"])
def test_continual_window_equals_the_offline_twin_with_the_same_weights(name: str) -> None:
    continual = _build(name)
    offline = nets.build(f"nystromformer_{name[-2:]}", **{**SMALL, "positional_encoding": "recycling_fixed"})
    offline.load_state_dict(continual.state_dict())  # same modules, same keys
    offline.eval()
    clip = torch.randn(2, SMALL["dim_feature"], N)
    with torch.no_grad():
        continual.clean_state()
        torch.testing.assert_close(continual(clip)[:, :, 0], offline(clip), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["conystromformer_b1", "conystromformer_b2"])
@pytest.mark.parametrize("fixed", [False, True])
def test_continual_clip_is_what_the_steps_emit_over_a_long_stream(name: str, fixed: bool) -> None:
    """Several chunks of windows (256 per chunk), the landmark ring cycling many times."""
    net = _build(name, fixed_landmarks=fixed)
    if fixed:
        for attention in net.landmark_attentions():
            attention.set_landmarks(torch.randn_like(attention.q_landmarks), torch.randn_like(attention.k_landmarks))
    stream = torch.randn(1, SMALL["dim_feature"], 270)
    with torch.no_grad():
        net.clean_state()
        clip = net(stream)
        net.clean_state()
        steps = net.forward_steps(stream)
    assert clip.shape == steps.shape == (1, 3, 270 - N + 1)
    torch.testing.assert_close(steps, clip, atol=1e-5, rtol=0)


def test_continual_landmarks_lag_between_refreshes() -> None:
    """Window w of a stream uses the landmarks of the last refresh (every n // m = 3 steps): on refresh steps its
    logits are the offline twin's on that window (at the same positional offset), in between they are not."""
    continual = _build("conystromformer_b1")
    offline = nets.build("nystromformer_b1", **{**SMALL, "positional_encoding": "recycling_fixed"}).eval()
    offline.load_state_dict(continual.state_dict())
    stream = torch.randn(1, SMALL["dim_feature"], N + 5)
    with torch.no_grad():
        continual.clean_state()
        logits = continual(stream)
        for w in range(logits.shape[2]):
            offline.position_encoding.set_state((None, w))  # the positional offset of window w
            window = offline(stream[:, :, w : w + N])
            if (N + w) % 3 == 0:  # the window ends on a refresh step
                torch.testing.assert_close(logits[:, :, w], window, atol=1e-5, rtol=0)
            else:
                assert not torch.allclose(logits[:, :, w], window, atol=1e-4)


def test_fixed_landmarks_build_and_checkpoint() -> None:
    net = _build("conystromformer_b2", fixed_landmarks=True)
    assert all(a.fixed_landmarks for a in net.landmark_attentions())
    fresh = nets.build("conystromformer_b2", **SMALL)
    fresh.load_state_dict(net.state_dict())
    assert all(a.fixed_landmarks for a in fresh.landmark_attentions())


def test_projected_heads_are_an_option() -> None:
    plain, projected = _build("conystromformer_b1"), _build("conystromformer_b1", attention_projections=True)
    attention = projected.encoder.layers[0].self_attn
    assert attention.num_heads == SMALL["num_heads"] and attention.projections
    embed = SMALL["embed_dim"]
    extra = sum(p.numel() for p in projected.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 4 * embed * embed + 4 * embed  # in_proj (3E x E + 3E) and out_proj (E x E + E)
    stream = torch.randn(2, SMALL["dim_feature"], N + 4)
    with torch.no_grad():
        projected.clean_state()
        clip = projected(stream)
        projected.clean_state()
        torch.testing.assert_close(projected.forward_steps(stream), clip, atol=1e-5, rtol=0)


def test_wrong_configurations_are_errors_that_name_the_fix() -> None:
    with pytest.raises(ValueError, match="cooadtr"):
        nets.build("conystromformer_b1", **{**SMALL, "num_landmarks": N})
    net = nets.build("conystromformer_b1", **{**SMALL, "num_landmarks": 4})  # 6 % 4: offline fine, steps not
    with pytest.raises(ValueError, match="divide sequence_len"):
        net.eval().forward_step(torch.randn(1, SMALL["dim_feature"]))
    with pytest.raises(ValueError, match="positional_encoding"):
        nets.build("nystromformer_b1", **{**SMALL, "positional_encoding": "learned"})
    assert isinstance(net, co.CoModule) and net.delay == N - 1
