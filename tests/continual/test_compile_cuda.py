"""A warmed-up step under torch.compile, and on CUDA: no host synchronisation and CUDA-graph replay."""

import pytest
import torch
from torch import nn

from modules import continual as co


def _net() -> nn.Module:
    torch.manual_seed(0)
    return co.Sequential(
        co.Conv3d(3, 8, 3, padding=1),
        nn.BatchNorm3d(8),
        nn.ReLU(),
        co.Residual(co.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0), groups=2)),
        co.MaxPool3d((2, 2, 2), stride=(1, 2, 2)),
        co.AdaptiveAvgPool3d((1, 1, 1), temporal_window=4),
        co.Linear(8, 5),
    ).eval()


@pytest.mark.slow  # compiling takes ~30-60 s on 2 cores
@torch.no_grad()
def test_compiled_step_equals_eager() -> None:
    torch._dynamo.reset()
    net = _net()
    clip = torch.randn(2, 3, 14, 6, 6)
    net.clean_state()
    expected = net.forward_steps(clip)
    net.clean_state()
    for t in range(net.delay):
        assert net.forward_step(clip[:, :, t]) is None
    step = torch.compile(net.forward_step)
    outputs = [step(clip[:, :, t]) for t in range(net.delay, clip.shape[2])]
    torch.testing.assert_close(torch.stack(outputs, dim=2), expected, atol=1e-5, rtol=1e-5)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_steps_equal_clip_without_host_sync() -> None:
    net = _net().cuda()
    clip = torch.randn(2, 3, 12, 6, 6, device="cuda")
    expected = net(clip)
    net.clean_state()
    net.forward_steps(clip[:, :, :6])  # warm-up allocates the state
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation now raises
    try:
        outputs = [net.forward_step(clip[:, :, t]) for t in range(6, 12)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    first = 6 - net.delay
    torch.testing.assert_close(torch.stack(outputs, 2), expected[:, :, first : first + 6], atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_graph_replay_of_a_warmed_up_step() -> None:
    net = _net().cuda()
    clip = torch.randn(1, 3, 20, 6, 6, device="cuda")
    net.clean_state()
    eager = net.forward_steps(clip)
    net.clean_state()
    start = net.delay + 3
    net.forward_steps(clip[:, :, :start])  # eager warm-up: state, cached weights, kernels chosen
    static_in = clip[:, :, start].clone()
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        static_out = net.forward_step(static_in)  # recorded, not run
    outputs = []
    for t in range(start, clip.shape[2]):
        static_in.copy_(clip[:, :, t])
        graph.replay()
        outputs.append(static_out.clone())
    torch.testing.assert_close(torch.stack(outputs, 2), eager[:, :, start - net.delay :], atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_graph_step_helper_matches_eager() -> None:
    net = _net().cuda()
    clip = torch.randn(2, 3, 24, 6, 6, device="cuda")
    net.clean_state()
    eager = net.forward_steps(clip)
    net.clean_state()
    graphed = co.CudaGraphStep(net, clip[:, :, 0], warmup_steps=0)  # feeds frame 0 net.delay + 1 times
    outputs = [graphed(clip[:, :, t]).clone() for t in range(net.delay + 1, clip.shape[2])]
    # output k answers step delay + 1 + k, eager output k + 1; compare once the window holds only real frames
    skip = net.receptive_field
    graph_out = torch.stack(outputs, 2)[:, :, skip:]
    torch.testing.assert_close(graph_out, eager[:, :, 1 + skip :], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_warm_until_output_feeds_delay_plus_one_steps() -> None:
    net = _net()
    net.clean_state()
    assert co.replay.warm_until_output(net, torch.randn(1, 3, 6, 6), extra_steps=2) == net.delay + 3
    assert net.forward_step(torch.randn(1, 3, 6, 6)) is not None


def test_cuda_graph_step_refuses_a_cpu_step() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        co.CudaGraphStep(_net(), torch.randn(1, 3, 6, 6))


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_graph_call_replays_a_clip_model() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten()).cuda().eval()
    clips = torch.randn(3, 2, 3, 4, 8, 8, device="cuda")
    graphed = co.CudaGraphCall(net, clips[0])
    for clip in clips:  # each replay reads the new input from the static buffer
        torch.testing.assert_close(graphed(clip).clone(), net(clip), atol=1e-5, rtol=1e-5)


def test_cuda_graph_call_refuses_a_cpu_input() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        co.CudaGraphCall(lambda x: x, torch.randn(2))
