"""Flattened state-dict keys as the continual-inference library writes them (``state_dict(flatten=True)``).

The expected key lists are written out by hand from the library (v1.2.4, Lukas Hedegaard, Apache-2.0): the
first example is its own test (tests/continual/test_container.py::test_flat_state_dict); the nested keys of
aligned branches and of ``Conditional`` follow its container.py (a branch that emits early is wrapped in
``Sequential(branch, Delay)``, ``Conditional`` registers ``0`` / ``1``, or ``Sequential(Delay, branch)``).
"""

import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from modules import continual as co
from modules.continual.flatten import flat_key, flat_state_dict, library_keys, load_state_dict, state_dict


def _randomize(net: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for p in net.parameters():
        p.data.normal_()
    return net.eval()


def _library_example() -> co.BroadcastReduce:
    return co.BroadcastReduce(
        co.Sequential(nn.Conv1d(1, 1, 3)), co.Sequential(OrderedDict([("c1", nn.Conv1d(1, 1, 3))]))
    )


def _aligned() -> co.BroadcastReduce:
    """Branch delays 4, 2, 0: branches 1 and 2 are aligned by a Delay (the library nests them under ``.0``)."""
    return co.BroadcastReduce(
        co.Conv1d(2, 2, 5),
        co.Sequential(OrderedDict([("a", co.Conv1d(2, 2, 3)), ("b", nn.BatchNorm1d(2))])),
        co.Conv1d(2, 2, 1),
    )


ALIGNED_LIBRARY_KEYS = [
    "0.weight",
    "0.bias",
    "1.0.a.weight",
    "1.0.a.bias",
    "1.0.b.weight",
    "1.0.b.bias",
    "1.0.b.running_mean",
    "1.0.b.running_var",
    "1.0.b.num_batches_tracked",
    "2.0.weight",
    "2.0.bias",
]


def _conditional() -> co.Conditional:
    """on_true has delay 0, on_false delay 2: the library registers ``Sequential(Delay(2), on_true)`` as ``0``."""
    return co.Conditional(
        lambda module, x: True, co.Conv1d(2, 2, 1), co.Sequential(OrderedDict([("k", co.Conv1d(2, 2, 3))]))
    )


def test_flat_key_drops_numeric_parts_only() -> None:
    assert flat_key("0.c1.1.weight") == "c1.weight"
    assert flat_key("layers.10.norm.bias") == "layers.norm.bias"
    assert flat_key("weight") == "weight"


def test_library_example_keys_and_load() -> None:
    """The library's test_flat_state_dict, parts 1 and 2, with its literal key sets."""
    single = co.Sequential(nn.Conv1d(1, 1, 3))
    assert set(single.state_dict()) == {"0.weight", "0.bias"}
    assert set(single.state_dict(flatten=True)) == {"weight", "bias"}
    named = co.Sequential(OrderedDict([("c1", nn.Conv1d(1, 1, 3))]))
    assert set(named.state_dict(flatten=True)) == {"c1.weight", "c1.bias"}

    nested = _library_example()
    assert set(nested.state_dict()) == {"0.0.weight", "0.0.bias", "1.c1.weight", "1.c1.bias"}
    flat = nested.state_dict(flatten=True)
    assert list(flat) == ["weight", "bias", "c1.weight", "c1.bias"]

    fresh = _library_example()
    assert not torch.equal(fresh.state_dict()["0.0.weight"], flat["weight"])
    fresh.load_state_dict(flat, flatten=True)
    for key, value in nested.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def _named_net() -> co.Sequential:
    head = OrderedDict([("p", co.Conv1d(4, 3, 3, padding=1)), ("q", co.Conv1d(4, 3, 1))])  # q aligned by Delay(1)
    return co.Sequential(
        OrderedDict(
            [
                ("stem", co.Conv1d(2, 4, 3, padding=1)),
                ("res", co.Residual(co.Sequential(co.Conv1d(4, 4, 3, padding=1), nn.ReLU()))),
                ("head", co.BroadcastReduce(head)),
            ]
        )
    )


def test_flat_round_trip_gives_equal_outputs() -> None:
    net = _randomize(_named_net(), seed=1)
    flat = net.state_dict(flatten=True)
    assert list(flat) == [
        "stem.weight",
        "stem.bias",
        "res.weight",
        "res.bias",
        "head.p.weight",
        "head.p.bias",
        "head.q.weight",
        "head.q.bias",
    ]
    assert library_keys(net)["head.q.weight"] == "head.q.0.weight"
    fresh = _named_net().eval()
    fresh.load_state_dict(flat, flatten=True)
    clip = torch.randn(2, 2, 9)
    assert torch.equal(fresh(clip), net(clip))
    assert torch.equal(fresh.forward_steps(clip), net.forward_steps(clip))


def test_aligned_branches_use_the_library_nested_keys() -> None:
    net = _randomize(_aligned(), seed=2)
    assert list(net.state_dict()) == [key.replace(".0.", ".", 1) for key in ALIGNED_LIBRARY_KEYS]
    assert list(library_keys(net).values()) == ALIGNED_LIBRARY_KEYS
    # "0.weight" and "2.0.weight" both flatten to "weight": the library keeps its nested keys, with a warning.
    with pytest.warns(UserWarning, match=r"ambiguous \('weight' <- \['0.weight', '2.weight'\]"):
        written = net.state_dict(flatten=True)
    assert list(written) == ALIGNED_LIBRARY_KEYS

    fresh = _aligned().eval()
    fresh.load_state_dict(written)  # the library's nested keys load without flatten=True
    clip = torch.randn(1, 2, 8)
    assert torch.equal(fresh.forward_steps(clip), net.forward_steps(clip))


def test_conditional_keys_follow_the_library() -> None:
    net = _randomize(_conditional(), seed=3)
    assert list(net.state_dict()) == ["on_true.weight", "on_true.bias", "on_false.k.weight", "on_false.k.bias"]
    assert list(library_keys(net).values()) == ["0.1.weight", "0.1.bias", "1.k.weight", "1.k.bias"]
    assert list(net.state_dict(flatten=True)) == ["weight", "bias", "k.weight", "k.bias"]
    clip = torch.randn(1, 2, 6)
    expected = net.forward_steps(clip)
    library_dict = OrderedDict(zip(library_keys(net).values(), net.state_dict().values()))
    for flatten, written in ((False, library_dict), (True, net.state_dict(flatten=True))):
        fresh = _conditional().eval()
        fresh.load_state_dict(written, flatten=flatten)
        assert torch.equal(fresh.forward_steps(clip), expected)


def test_unknown_and_missing_keys_are_named() -> None:
    net = _library_example()
    flat = net.state_dict(flatten=True)
    del flat["c1.bias"]
    flat["c2.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"unknown keys \['c2.weight'\] and missing keys \['c1.bias'\]"):
        net.load_state_dict(flat, flatten=True)
    with pytest.raises(RuntimeError, match=r"unknown keys \['weight', 'bias'.*loads with flatten=True"):
        net.load_state_dict(net.state_dict(flatten=True))
    result = net.load_state_dict(flat, strict=False, flatten=True)
    assert result.missing_keys == ["1.c1.bias"] and result.unexpected_keys == ["c2.weight"]


def test_ambiguous_flat_keys_do_not_load() -> None:
    net = _aligned()
    flat = {flat_key(key): value for key, value in zip(ALIGNED_LIBRARY_KEYS, net.state_dict().values())}
    with pytest.raises(RuntimeError, match=r"missing keys .*flattened keys of BroadcastReduce are ambiguous"):
        net.load_state_dict(flat, flatten=True)


def test_two_keys_for_one_parameter_are_refused() -> None:
    net = _library_example()
    both = {**net.state_dict(), "weight": torch.zeros(1, 1, 3)}
    with pytest.raises(RuntimeError, match=r"keys \['0.0.weight', 'weight'\] all name the parameter '0.0.weight'"):
        net.load_state_dict(both, flatten=True)


def test_flat_state_dict_context_flattens_and_nests() -> None:
    """The library's test_flat_state_dict, part 3: inside the context, flatten=False still flattens."""
    net = _randomize(_library_example(), seed=4)
    fresh = _library_example()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # children must not try to flatten their own keys
        with flat_state_dict, flat_state_dict:
            written = net.state_dict(flatten=False)
            assert list(written) == ["weight", "bias", "c1.weight", "c1.bias"]
            fresh.load_state_dict(written, flatten=False)
        assert list(net.state_dict()) == ["0.0.weight", "0.0.bias", "1.c1.weight", "1.c1.bias"]
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))


def test_module_functions_work_on_any_module() -> None:
    """``state_dict`` / ``load_state_dict`` of flatten.py (the library's co.state_dict / co.load_state_dict)."""
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.Conv1d(2, 1, 1)))
    with pytest.warns(UserWarning, match="ambiguous"):
        written = state_dict(net, flatten=True)
    assert list(written) == ["0.weight", "0.bias", "1.1.weight", "1.1.bias"]
    single = nn.Sequential(nn.Conv1d(1, 2, 3))
    assert list(state_dict(single, flatten=True)) == ["weight", "bias"]
    fresh = nn.Sequential(nn.Conv1d(1, 2, 3))
    load_state_dict(fresh, state_dict(single, flatten=True), flatten=True)
    assert torch.equal(fresh[0].weight, single[0].weight)
