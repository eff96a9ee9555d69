"""Where a call's time goes on a GPU: the summary of device events (any machine) and its collection (CUDA)."""

import pytest
import torch
from torch import nn

from modules.profiling.cuda_profile import DeviceEvent, busy_us, format_cuda_profiles, profile_cuda, summarize

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_busy_time_counts_overlapping_kernels_once_and_gaps_not_at_all() -> None:
    events = [DeviceEvent("a", 0, 10), DeviceEvent("b", 5, 10), DeviceEvent("c", 30, 5), DeviceEvent("d", 31, 2)]
    assert busy_us(events) == 15 + 5  # [0, 15] and [30, 35]
    assert busy_us([]) == 0


def test_summary_per_call_splits_kernels_from_copies_and_ranks_the_slowest() -> None:
    events = []
    for call in range(2):
        t = call * 1000.0
        events += [DeviceEvent("Memcpy HtoD (Pinned -> Device)", t, 4), DeviceEvent("conv_dw", t + 10, 30)]
        events += [DeviceEvent("gemm", t + 50, 10), DeviceEvent("gemm", t + 70, 10)]
        events.append(DeviceEvent("Memset (Device)", t, 1))
    summary = summarize(events, calls=2, wall_ms=0.2, top=2)
    assert summary["kernels"] == 3 and summary["copies"] == 2
    assert summary["busy_ms"] == pytest.approx((4 + 30 + 20) / 1e3)  # the memset lies inside the copy
    assert summary["idle_ms"] == pytest.approx(0.2 - 0.054)
    (first, second) = summary["top_kernels"]
    assert (first["name"], first["per_call"], first["mean_us"]) == ("conv_dw", 1, 30)
    assert (second["name"], second["per_call"], second["mean_us"]) == ("gemm", 2, 10)
    assert first["share"] == pytest.approx(0.6) and second["share"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="calls must be >= 1"):
        summarize(events, calls=0, wall_ms=1.0)


def test_profiles_format_as_markdown_tables() -> None:
    summary = summarize([DeviceEvent("k|1", 0, 5)], calls=1, wall_ms=0.05)
    text = format_cuda_profiles({"frames_per_s_graph": summary}, "### title")
    assert text.startswith("### title\n\n| variant | wall ms | GPU busy ms | GPU idle ms |")
    assert "| frames_per_s_graph | 0.050 | 0.005 | 0.045 | 1 | 0 |" in text
    assert "| `k/1` | 1 | 5.0 | 100% |" in text  # a '|' in a kernel name would split the row


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no CUDA device is present")
def test_profiling_needs_a_cuda_device() -> None:
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        profile_cuda(lambda: None)


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_profile_cuda_counts_the_kernels_of_a_call_and_of_its_cuda_graph() -> None:
    from modules.continual import CudaGraphCall

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).cuda().eval()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    eager = profile_cuda(lambda: net(x), calls=5)
    assert eager["kernels"] >= 3 and eager["busy_ms"] > 0 and eager["wall_ms"] > 0
    graphed = CudaGraphCall(net, x)
    replayed = profile_cuda(lambda: graphed(x), calls=5)
    # the replay runs the same kernels (the copy into the static input is one more device event)
    assert replayed["kernels"] >= eager["kernels"] - 1 and replayed["copies"] >= 1
