import itertools

import pytest
import torch
from torch import nn

from modules import continual as co

from .helpers import assert_steps_match

AVG_GRID = [(k, s, p) for k, s, p in itertools.product([1, 2, 3, 4], [1, 2, 3], [0, 1, 2]) if p <= k // 2]
MAX_GRID = [(k, s, p, d) for k, s, p in AVG_GRID for d in (1, 2)]


@pytest.mark.parametrize(("k", "s", "p"), AVG_GRID)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_grid(k: int, s: int, p: int, count_include_pad: bool) -> None:
    torch.manual_seed(k + s + p)
    kwargs = dict(kernel_size=(k, 3, 2), stride=(s, 1, 2), padding=(p, 1, 1), count_include_pad=count_include_pad)
    pool, reference = co.AvgPool3d(**kwargs), nn.AvgPool3d(**kwargs)
    for batch, t in ((2, 9), (1, k)):
        clip = torch.randn(batch, 3, t, 5, 4, dtype=torch.float64)
        assert_steps_match(pool, clip, reference(clip), atol=1e-12)


@pytest.mark.parametrize(("k", "s", "p", "d"), MAX_GRID)
def test_max_pool_grid_on_negative_inputs(k: int, s: int, p: int, d: int) -> None:
    """Negative inputs reveal a zero fill where torch pads with -inf."""
    torch.manual_seed(k + s + p + d)
    kwargs = dict(kernel_size=(k, 3), stride=(s, 1), padding=(p, 1), dilation=(d, 1))
    pool, reference = co.MaxPool2d(**kwargs), nn.MaxPool2d(**kwargs)
    t = max(d * (k - 1) + 1 - 2 * p, 1) + 6
    clip = torch.randn(2, 3, t, 5) - 5.0
    assert_steps_match(pool, clip, reference(clip), atol=0)


@pytest.mark.parametrize("pool_cls", [co.AvgPool1d, co.MaxPool1d])
def test_replicate_fill_pools_copies_of_edge_frames(pool_cls: type) -> None:
    torch.manual_seed(0)
    pool = pool_cls(3, stride=1, padding=1, temporal_fill="replicate")
    clip = torch.randn(2, 4, 6)
    padded = torch.cat([clip[:, :, :1], clip, clip[:, :, -1:]], dim=2)
    expected = pool_cls(3, stride=1)(padded)
    torch.testing.assert_close(pool(clip), expected)
    assert_steps_match(pool, clip, expected)


def test_avg_pool_divisor_override() -> None:
    kwargs = dict(kernel_size=(2, 2, 2), stride=1, padding=(1, 0, 1), divisor_override=3)
    pool, reference = co.AvgPool3d(**kwargs), nn.AvgPool3d(**kwargs)
    clip = torch.randn(1, 2, 5, 4, 4, dtype=torch.float64)
    assert_steps_match(pool, clip, reference(clip), atol=1e-12)


@pytest.mark.parametrize(
    ("pool_cls", "torch_cls"),
    [(co.AdaptiveAvgPool3d, nn.AdaptiveAvgPool3d), (co.AdaptiveMaxPool3d, nn.AdaptiveMaxPool3d)],
)
def test_adaptive_pool_over_a_temporal_window(pool_cls: type, torch_cls: type) -> None:
    torch.manual_seed(1)
    pool = pool_cls((1, 2, 1), temporal_window=4)
    clip = torch.randn(2, 3, 10, 4, 6)
    windows = [torch_cls((1, 2, 1))(clip[:, :, t : t + 4]) for t in range(7)]
    expected = torch.cat(windows, dim=2)
    torch.testing.assert_close(pool(clip), expected)
    assert_steps_match(pool, clip, expected)
    assert pool.delay == 3


def test_adaptive_pool_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="temporal output size must be 1"):
        co.AdaptiveAvgPool3d((2, 1, 1), temporal_window=3)
    pool = co.AdaptiveAvgPool2d((1, 1))
    assert pool(torch.randn(1, 2, 5, 3)).shape == (1, 2, 1, 1)
    with pytest.raises(ValueError, match="temporal_window=<frames>"):
        pool.forward_step(torch.randn(1, 2, 3))


def test_ceil_mode_in_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="ceil_mode"):
        co.MaxPool1d(2, ceil_mode=True)
