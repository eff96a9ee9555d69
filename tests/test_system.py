"""The classification systems: the clip system's evaluation protocols on a small continual net, the image system's
per-phase schedule, and the metric names and units they share."""

import functools
import importlib
import sys

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from modules.nets import build
from modules.systems import (
    ClassificationSystem,
    ClassifierBase,
    ImageClassificationSystem,
    phase_step_lr,
    required_clip_length,
)


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


# --- evaluation clip lengths ------------------------------------------------------------------------------------
def test_required_clip_length_of_each_protocol_on_co_conv_stack() -> None:
    net = build("co_conv_stack", num_classes=5, channels=(4,), clip_length=4)  # delay 3 + 1 = 4, rf 6
    assert (net.delay, net.receptive_field) == (4, 6)
    assert required_clip_length(net, "clip", clip_length=4).frames == 4
    assert required_clip_length(net, "frame", clip_length=4).frames == net.delay + 1
    assert required_clip_length(net, "frame", clip_length=4, num_forward_frames=3).frames == net.delay + 3
    # window 32: delay 31 + 1 conv step = 32, one more frame for the output; the net keeps its window of 4
    extended = required_clip_length(net, "extended", clip_length=4, windows=(2, 32, 8))
    assert extended.frames == 33 and "window 32" in extended.reason
    assert net[-2].temporal_window == 4 and net.delay == 4
    # transient: frames delay + 1 .. receptive_field by default, or delay + the frames asked for
    transient = required_clip_length(net, "transient", clip_length=4)
    assert transient.frames == net.receptive_field and transient.min_video_frames == net.delay + 1
    assert required_clip_length(net, "transient", clip_length=4, transient_frames=7).frames == net.delay + 7
    with pytest.raises(ValueError, match="windows"):
        required_clip_length(net, "extended", clip_length=4)


def test_required_clip_length_of_cox3d_tiny_follows_its_delay() -> None:
    net = build("cox3d_tiny")  # 8-frame pool: delay 16, receptive field 26
    assert required_clip_length(net, "frame", clip_length=8).frames == 17
    system = ClassificationSystem(
        net, 10, optimizer=torch.optim.SGD, eval_protocol="extended", extended_windows=(8, 16, 32)
    )
    assert system.eval_clip_length(8).frames == 41  # delay 40 at window 32
    system = ClassificationSystem(net, 10, optimizer=torch.optim.SGD, eval_protocol="transient")
    assert system.eval_clip_length(8).frames == 26
    assert net.head.avg_pool.temporal_window == 8


def test_the_default_transient_sweep_ends_where_every_fill_agrees() -> None:
    system = _system("transient")
    need = system.eval_clip_length(4)
    clip = torch.randn(2, 3, need.frames, 8, 8) + 3.0
    from modules.continual import set_temporal_fill

    set_temporal_fill(system.net, "zeros")
    zeros = system.step_outputs(clip)
    set_temporal_fill(system.net, "replicate")
    replicate = system.step_outputs(clip)
    assert zeros.shape[2] > 1  # a curve, not a point
    assert not torch.allclose(zeros[:, :, 0], replicate[:, :, 0])
    torch.testing.assert_close(zeros[:, :, -1], replicate[:, :, -1])  # no filled frame in view any more


def test_transient_protocol_reports_several_frame_counts_at_the_derived_length() -> None:
    system = _system("transient")
    _test(system, _loader(system.eval_clip_length(4).frames))
    frames = sorted({r["frames_seen"] for r in system.protocol_results})
    assert frames == list(range(system.net.delay + 1, system.net.receptive_field + 1)) and len(frames) > 1


def test_extended_windows_8_16_32_run_end_to_end_on_cox3d_tiny() -> None:
    torch.manual_seed(0)
    net = build("cox3d_tiny").eval()
    system = ClassificationSystem(
        net, 10, optimizer=torch.optim.SGD, eval_protocol="extended", extended_windows=(8, 16, 32)
    )
    frames = system.eval_clip_length(8).frames
    clips = torch.randn(2, 3, frames, 32, 32)
    loader = DataLoader(TensorDataset(clips, torch.randint(0, 10, (2,))), batch_size=2)
    metrics = _test(system, loader)
    assert {"test/top1_window8", "test/top1_window16", "test/top1_window32", "test/top1"} <= set(metrics)
    assert [r["window"] for r in system.protocol_results] == [8, 16, 32]
    with pytest.raises(ValueError, match=r"net\.delay"):  # one frame fewer leaves the 32-frame window silent
        system.test_step((clips[:, :, : frames - 1], torch.zeros(2, dtype=torch.long)), 0)


# --- the image system and what the family shares ------------------------------------------------------------------
def _image_system(**kwargs: object) -> ImageClassificationSystem:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6))
    optimizer = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=5e-4)
    return ImageClassificationSystem(net, 6, optimizer, **kwargs)


def _images(n: int = 16) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 3, 8, 8), torch.randint(0, 6, (n,))), batch_size=4)


def test_image_system_logs_stage_names_as_fractions() -> None:
    system = _image_system(scheduler=functools.partial(phase_step_lr, steps=4, gamma=0.2))
    trainer = pl.Trainer(
        max_epochs=2, logger=False, enable_progress_bar=False, enable_checkpointing=False, accelerator="cpu"
    )
    trainer.fit(system, _images(), _images(8))
    fitted = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"train/loss", "train/top1", "train/top5", "val/loss", "val/top1", "val/top5"} <= set(fitted)
    test = _images(8)
    metrics = _test(system, test)
    assert set(metrics) == {"test/loss", "test/top1", "test/top5"}
    assert 0.0 <= metrics["test/top1"] <= metrics["test/top5"] <= 1.0
    # the accuracy is the fraction of correct predictions, not a percentage
    x, y = test.dataset.tensors
    with torch.no_grad():
        expected = (system.eval()(x).argmax(1) == y).float().mean().item()
    assert metrics["test/top1"] == pytest.approx(expected)


def test_the_clip_and_image_systems_share_metric_names() -> None:
    image = _image_system()  # 6 classes
    clip = ClassificationSystem(build("conv_stack", num_classes=6), 6, optimizer=torch.optim.SGD)
    five = _system("frame")  # 5 classes: top-5 would always be 1
    for stage in ("train", "val", "test"):
        assert set(getattr(image, f"{stage}_metrics")) == {f"{stage}/top1", f"{stage}/top5"}
        assert set(getattr(clip, f"{stage}_metrics")) == {f"{stage}/top1", f"{stage}/top5"}
        assert set(getattr(five, f"{stage}_metrics")) == {f"{stage}/top1"}
    assert isinstance(image, ClassifierBase) and isinstance(clip, ClassifierBase)


@pytest.mark.parametrize(("epochs", "step_size"), [(1, 1), (4, 1), (20, 5), (30, 7)])
def test_the_schedule_follows_each_fits_length(epochs: int, step_size: int) -> None:
    """The published recipe: a fresh SGD and StepLR(max(1, epochs // 4), 0.2) per phase, over what trains."""
    system = _image_system(scheduler=functools.partial(phase_step_lr, steps=4, gamma=0.2))
    system.net[0].weight.requires_grad_(False)  # an adapter's frozen base weight
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, accelerator="cpu")
    system.trainer = trainer
    config = system.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["weight_decay"] == 5e-4
    assert all(p.requires_grad for group in optimizer.param_groups for p in group["params"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 3  # conv bias, linear weight and bias
    assert (scheduler.step_size, scheduler.gamma) == (step_size, 0.2)
    assert config["lr_scheduler"]["name"] == "train/lr"


def test_a_scheduler_without_epochs_is_an_error_naming_the_fix() -> None:
    with pytest.raises(ValueError, match="phase_step_lr"):
        _image_system(scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2))


def test_the_old_import_path_is_a_deprecated_alias() -> None:
    sys.modules.pop("modules.system", None)
    with pytest.warns(DeprecationWarning, match="modules.systems"):
        old = importlib.import_module("modules.system")
    assert old.ClassificationSystem is ClassificationSystem
    assert old.required_clip_length is required_clip_length


# --- the fast path of the stepped protocols (modules/systems/stepping.py) -----------------------------------------
def _with_batchnorm_stats(system: ClassificationSystem) -> ClassificationSystem:
    """Non-trivial BatchNorm statistics, so that folding them changes the weights."""
    for m in system.net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return system


@pytest.mark.parametrize("protocol", ["frame", "transient", "extended"])
def test_the_fast_path_scores_as_the_plain_eager_step(protocol: str) -> None:
    kwargs = {"extended_windows": (2, 4)} if protocol == "extended" else {}
    frames = 12
    results = {}
    for fast in (False, True):
        system = _with_batchnorm_stats(_system(protocol, fast_path=fast, **kwargs))
        if fast:  # the steady state through a traced program (the eager backend: no C++ compiler here)
            system.clip_streams.compile, system.clip_streams.backend = True, "eager"
            system._may_compile = lambda: True
        torch.manual_seed(1)
        clips = torch.randn(5, 3, frames, 8, 8)  # batches of 3 and 2: the last one padded to the compiled 3
        loader = DataLoader(TensorDataset(clips, torch.randint(0, 5, (5,))), batch_size=3)
        results[fast] = (_test(system, loader), torch.cat([p[0] for p in system.test_predictions]))
        assert system.clip_streams.source is system.net
    (plain, plain_logits), (fast, fast_logits) = results[False], results[True]
    torch.testing.assert_close(fast_logits, plain_logits, atol=1e-5, rtol=1e-5)
    assert fast.keys() == plain.keys() and all(abs(fast[k] - plain[k]) < 1e-6 for k in plain)


def test_the_fast_path_follows_new_weights_and_fills() -> None:
    system = _with_batchnorm_stats(_system("frame"))
    clip = torch.randn(2, 3, 10, 8, 8)

    def plain() -> torch.Tensor:
        system.net.clean_state()
        out = system.net.forward_steps(clip)
        system.net.clean_state()
        return out.reshape(2, 5, -1)

    torch.testing.assert_close(system.step_outputs(clip), plain(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        next(system.net.parameters()).mul_(2.0)  # as an optimiser step or a checkpoint load would
    torch.testing.assert_close(system.step_outputs(clip), plain(), atol=1e-5, rtol=1e-5)
    from modules.continual import set_temporal_fill

    set_temporal_fill(system.net, "replicate")
    torch.testing.assert_close(system.step_outputs(clip), plain(), atol=1e-5, rtol=1e-5)


def test_compile_steps_false_never_compiles_even_when_testing() -> None:
    system = _system("transient", compile_steps=False)
    _test(system, _loader(system.net.delay + 12))  # long enough a steady state to compile for
    steppers = list(system.clip_streams._steppers.values())
    assert steppers and not any(s.compiled for s in steppers)
