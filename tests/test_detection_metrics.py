"""The frame-level detection metrics (modules/systems/detection_metrics.py) against hand-computed values and against
a port of CoOadTR's ``utils.frame_level_map_n_cap`` (the loop as published, on ``softmax(logits[:, :21])``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.systems.detection_metrics import DetectionAP, average_precisions, score_columns

pytestmark = pytest.mark.usefixtures("one_thread")


def original_map_n_cap(probs: np.ndarray, labels: np.ndarray) -> tuple[float, list[float], float, list[float]]:
    """CoOadTR utils.frame_level_map_n_cap (7393c63), line for line: ``probs`` and ``labels`` are (classes, frames);
    class 0 is skipped."""
    all_cls_ap, all_cls_acp = [], []
    for i in range(1, labels.shape[0]):
        this_cls_prob, this_cls_gt = probs[i, :], labels[i, :]
        w = np.sum(this_cls_gt == 0) / np.sum(this_cls_gt == 1)
        indices = np.argsort(-this_cls_prob)
        tp, psum, cpsum = 0, 0.0, 0.0
        for k, idx in enumerate(indices):
            if this_cls_gt[idx] == 1:
                tp += 1
                wtp = w * tp
                fp = (k + 1) - tp
                psum += tp / (tp + fp)
                cpsum += wtp / (wtp + fp)
        all_cls_ap.append(psum / np.sum(this_cls_gt))
        all_cls_acp.append(cpsum / np.sum(this_cls_gt))
    return sum(all_cls_ap) / len(all_cls_ap), all_cls_ap, sum(all_cls_acp) / len(all_cls_acp), all_cls_acp


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, num_classes).float()


def _thumos_like(frames: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (no ties: continuous values) and one-hot targets over 22 classes, no Ambiguous frame."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 21, (frames,), generator=g)
    logits = torch.randn(frames, 22, generator=g) + 2.0 * _one_hot(labels, 22)  # informative, not perfect
    return logits, _one_hot(labels, 22)


# --- hand-computed ----------------------------------------------------------------------------------------------
def test_ap_and_calibrated_ap_of_a_hand_worked_example():
    # scores 0.9 0.8 0.7 0.6 0.5, positives at ranks 1 and 3: P = 2, N = 3, w = N / P = 1.5
    #   rank 1: TP 1, FP 0 -> precision 1,   calibrated 1.5·1 / (1.5·1 + 0) = 1
    #   rank 3: TP 2, FP 1 -> precision 2/3, calibrated 1.5·2 / (1.5·2 + 1) = 3/4
    #   AP = (1 + 2/3) / 2 = 5/6,  cAP = (1 + 3/4) / 2 = 7/8
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6], [0.5]])
    positives = torch.tensor([[True], [False], [True], [False], [False]])
    for ties in ("grouped", "original"):
        ap, cap = average_precisions(scores, positives, ties)
        assert ap.item() == pytest.approx(5 / 6) and cap.item() == pytest.approx(7 / 8)


def test_tied_scores_grouped_and_in_the_originals_rank_order():
    # scores 0.8(neg) 0.5(pos) 0.5(neg) 0.3(neg) 0.2(pos): P = 2, N = 3, w = 1.5; at 0.5 a positive ties a negative
    # grouped: the tie is one threshold, after which TP 1, FP 2; then at 0.2 TP 2, FP 3
    #   AP  = (1/3 + 2/5) / 2 = 11/30;  cAP = (1.5/(1.5+2) + 3/(3+3)) / 2 = (3/7 + 1/2) / 2 = 13/28
    # original: np.argsort(-scores) keeps the positive (index 1) before the negative (index 2) here (numpy sorts
    # arrays this short by insertion, which is stable): ranks 2 and 5
    #   AP  = (1/2 + 2/5) / 2 = 9/20;   cAP = (1.5/(1.5+1) + 1/2) / 2 = (3/5 + 1/2) / 2 = 11/20
    scores = torch.tensor([[0.8], [0.5], [0.5], [0.3], [0.2]])
    positives = torch.tensor([[False], [True], [False], [False], [True]])
    ap, cap = average_precisions(scores, positives, "grouped")
    assert ap.item() == pytest.approx(11 / 30) and cap.item() == pytest.approx(13 / 28)
    ap, cap = average_precisions(scores, positives, "original")
    assert ap.item() == pytest.approx(9 / 20) and cap.item() == pytest.approx(11 / 20)
    probs, labels = scores.T.numpy(), positives.T.numpy().astype(np.float64)
    _, aps, _, caps = original_map_n_cap(np.concatenate([probs, probs]), np.concatenate([labels, labels]))
    assert aps[0] == pytest.approx(9 / 20) and caps[0] == pytest.approx(11 / 20)


def test_a_class_without_positives_is_nan_and_left_out_of_the_means():
    # class 1: positives at ranks 1 and 3 (AP 5/6, cAP 7/8, as above); class 2: no positive frame
    logits = torch.log(
        torch.tensor([[0.05, 0.9, 0.05], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1], [0.4, 0.5, 0.1]])
    )
    target = _one_hot(torch.tensor([1, 0, 1, 0, 0]), 3)
    metric = DetectionAP(3)
    metric.update(logits, target)
    out = metric.compute()
    assert out["AP"][0].item() == pytest.approx(5 / 6) and torch.isnan(out["AP"][1]) and torch.isnan(out["cAP"][1])
    assert out["mAP"].item() == pytest.approx(5 / 6) and out["mcAP"].item() == pytest.approx(7 / 8)
    assert out["positives"].tolist() == [2, 0]
    # the original divides 0 by 0 for that class, and its mean is NaN
    probs = torch.softmax(logits, 1).T.numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        map_, _, cap_, _ = original_map_n_cap(probs, target.T.numpy())
    assert np.isnan(map_) and np.isnan(cap_)


def test_a_class_without_negatives_has_calibrated_precision_one():
    ap, cap = average_precisions(torch.tensor([[0.3], [0.2]]), torch.tensor([[True], [True]]))
    assert ap.item() == 1.0 and cap.item() == 1.0


# --- against the original ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ties", ["grouped", "original"])
def test_equals_the_originals_map_and_mcap_on_thumos_shaped_data(ties):
    logits, target = _thumos_like()
    metric = DetectionAP(22, ignore_index=21, class_slice=21, ties=ties)
    for chunk in range(0, 400, 128):  # accumulating batches equals one pass
        metric.update(logits[chunk : chunk + 128], target[chunk : chunk + 128])
    out = metric.compute()
    probs = torch.softmax(logits[:, :21], dim=-1).T.numpy()  # train.evaluate
    map_, aps, cap_, caps = original_map_n_cap(probs, target[:, :21].T.numpy())
    assert out["mAP"].item() == pytest.approx(map_, abs=1e-6) and out["mcAP"].item() == pytest.approx(cap_, abs=1e-6)
    assert out["AP"].tolist() == pytest.approx(aps, abs=1e-6) and out["cAP"].tolist() == pytest.approx(caps, abs=1e-6)
    assert 0.0 < out["mAP"].item() < 1.0 and out["frames"].item() == 400 and out["ignored_frames"].item() == 0


def test_the_default_equals_the_slice_on_thumos_and_differs_on_tvseries():
    logits, target = _thumos_like()
    default, sliced = DetectionAP(22, ignore_index=21), DetectionAP(22, ignore_index=21, class_slice=21)
    for metric in (default, sliced):
        metric.update(logits, target)
    assert default.classes == sliced.classes == list(range(1, 21))
    assert default.compute()["mAP"].item() == pytest.approx(sliced.compute()["mAP"].item())
    # TVSeries: 31 classes, no ignore class; multi-hot rows; CoOadTR's slice scores 1..20 only
    g = torch.Generator().manual_seed(1)
    hot = torch.rand(600, 31, generator=g) < 0.05
    hot[:, 0] = ~hot[:, 1:].any(1)  # background where no action
    logits = torch.randn(600, 31, generator=g) + 2.0 * hot
    default, sliced = DetectionAP(31), DetectionAP(31, class_slice=21)
    for metric in (default, sliced):
        metric.update(logits, hot.float())
    assert default.classes == list(range(1, 31)) and sliced.classes == list(range(1, 21))
    full, quirk = default.compute(), sliced.compute()
    assert full["AP"].shape == (30,) and quirk["AP"].shape == (20,)
    assert (
        abs(full["mcAP"].item() - quirk["mcAP"].item()) > 1e-3 and abs(full["mAP"].item() - quirk["mAP"].item()) > 1e-3
    )
    # the slice also renormalises the softmax over 21 logits: even class 1..20 differ
    assert not torch.allclose(full["AP"][:20], quirk["AP"])


def test_ignore_class_frames_are_left_out_and_counted():
    logits, target = _thumos_like(frames=200)
    ambiguous = _one_hot(torch.full((30,), 21), 22)
    noisy = torch.randn(30, 22, generator=torch.Generator().manual_seed(3)) * 5
    metric, reference = DetectionAP(22, ignore_index=21), DetectionAP(22, ignore_index=21)
    metric.update(torch.cat([logits[:100], noisy, logits[100:]]), torch.cat([target[:100], ambiguous, target[100:]]))
    reference.update(logits, target)
    out, expected = metric.compute(), reference.compute()
    assert out["ignored_frames"].item() == 30 and out["frames"].item() == 200
    assert out["mAP"].item() == pytest.approx(expected["mAP"].item())
    assert out["mcAP"].item() == pytest.approx(expected["mcAP"].item())


def test_score_columns_and_their_errors():
    assert score_columns(22, ignore_index=21) == (list(range(21)), list(range(1, 21)))
    assert score_columns(31) == (list(range(31)), list(range(1, 31)))
    assert score_columns(31, class_slice=21) == (list(range(21)), list(range(1, 21)))
    with pytest.raises(ValueError, match="class_slice"):
        score_columns(22, class_slice=40)
    with pytest.raises(ValueError, match="ties"):
        DetectionAP(22, ties="random")
    with pytest.raises(ValueError, match=r"\(N, 22\)"):
        DetectionAP(22).update(torch.zeros(4, 21), torch.zeros(4, 21))


def test_the_states_gather_across_processes():
    metric = DetectionAP(22, ignore_index=21)
    assert {metric._reductions[k].__name__ for k in ("scores", "positives", "keep")} == {"dim_zero_cat"}
