"""The evaluation protocols of the classification system on a small continual net."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from modules.nets import build
from modules.system import ClassificationSystem


def _system(protocol: str, **kwargs: object) -> ClassificationSystem:
    torch.manual_seed(0)
    net = build("co_conv_stack", num_classes=5, channels=(4,), clip_length=4).eval()
    return ClassificationSystem(net, 5, optimizer=torch.optim.SGD, eval_protocol=protocol, **kwargs)


def _loader(frames: int, multi_label: bool = False) -> DataLoader:
    clips = torch.randn(6, 3, frames, 8, 8)
    target = (torch.rand(6, 5) > 0.5).float() if multi_label else torch.randint(0, 5, (6,))
    return DataLoader(TensorDataset(clips, target), batch_size=3)


def _test(system: ClassificationSystem, loader: DataLoader) -> dict[str, float]:
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False, accelerator="cpu")
    trainer.test(system, loader, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_frame_protocol_averages_the_last_outputs() -> None:
    system = _system("frame", num_forward_frames=3)
    clip = torch.randn(2, 3, 10, 8, 8)
    outputs = system.step_outputs(clip)
    assert outputs.shape == (2, 5, 10 - system.net.delay)
    torch.testing.assert_close(system.predict_frames(clip), outputs[:, :, -3:].mean(2))
    with pytest.raises(ValueError, match=r"net\.delay"):
        system.predict_frames(clip[:, :, : system.net.delay])


def test_transient_protocol_reports_every_fill_and_frame_count() -> None:
    system = _system("transient")
    delay = system.net.delay
    metrics = _test(system, _loader(delay + 3))
    frames = [delay + 1, delay + 2, delay + 3]
    for fill in ("zeros", "replicate"):
        for f in frames:
            assert 0.0 <= metrics[f"test/top1_{fill}_f{f}"] <= 1.0
    assert len(system.protocol_results) == 6
    assert {r["fill"] for r in system.protocol_results} == {"zeros", "replicate"}
    assert system.protocol_results[0]["frames_seen"] in frames
    # the fill is restored after the sweep
    assert all(getattr(m, "temporal_fill", "zeros") == "zeros" for m in system.net.modules())


def test_transient_fills_differ_before_the_window_is_real() -> None:
    system = _system("transient")
    clip = torch.randn(2, 3, system.net.delay + 1, 8, 8) + 3.0
    from modules.continual import set_temporal_fill

    set_temporal_fill(system.net, "zeros")
    zeros = system.step_outputs(clip)
    set_temporal_fill(system.net, "replicate")
    replicate = system.step_outputs(clip)
    assert not torch.allclose(zeros, replicate)


def test_extended_protocol_sweeps_the_pool_window() -> None:
    system = _system("extended", extended_windows=(2, 4, 6))
    system.net.clean_state()
    metrics = _test(system, _loader(12))
    assert {"test/top1_window2", "test/top1_window4", "test/top1_window6", "test/top1"} <= set(metrics)
    assert [r["window"] for r in system.protocol_results] == [2, 4, 6]
    assert system.net[-2].temporal_window == 4  # restored


def test_multi_label_uses_bce_and_map() -> None:
    system = _system("frame", multi_label=True)
    metrics = _test(system, _loader(system.net.delay + 1, multi_label=True))
    assert 0.0 <= metrics["test/map"] <= 1.0
    assert "test/top1" not in metrics


def test_protocol_needs_a_continual_net() -> None:
    with pytest.raises(ValueError, match="continual twin"):
        ClassificationSystem(build("conv_stack"), 10, optimizer=torch.optim.SGD, eval_protocol="transient")
    with pytest.raises(ValueError, match="extended_windows"):
        _system("extended")


def test_multi_label_mismatch_with_the_data_is_an_error() -> None:
    class MultiHotData(pl.LightningDataModule):
        multi_label = True

        def test_dataloader(self) -> DataLoader:
            return _loader(12, multi_label=True)

    trainer = pl.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu")
    with pytest.raises(ValueError, match=r"model\.multi_label=True"):
        trainer.test(_system("frame"), datamodule=MultiHotData(), verbose=False)
