"""Tests of mat_jax.metrics against values worked out by hand (and brute-force definitions)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mat_jax import metrics as M

# sklearn's documented example: roc_auc_score = 0.75, average_precision_score = 0.8333...
SK_SCORES = [0.1, 0.4, 0.35, 0.8]
SK_LABELS = [0, 0, 1, 1]
# With a tie across classes at 0.6.
TIE_SCORES = [0.2, 0.6, 0.6, 0.9]
TIE_LABELS = [0, 0, 1, 1]


def test_sklearn_documented_example():
    fpr, tpr, thr = M.roc_curve(SK_SCORES, SK_LABELS)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    assert M.roc_auc(SK_SCORES, SK_LABELS) == pytest.approx(0.75)
    assert M.average_precision(SK_SCORES, SK_LABELS) == pytest.approx(5 / 6)
    # FNR - FPR along the curve: 1, 0.5, 0 -> crossing exactly at the point (0.5, 0.5).
    assert M.eer(SK_SCORES, SK_LABELS) == pytest.approx(0.5)
    assert M.accuracy(SK_SCORES, SK_LABELS) == pytest.approx(0.75)


def test_ties_count_one_half():
    # Pairs (real, fake): (0.2, 0.6) 1, (0.2, 0.9) 1, (0.6, 0.6) 1/2, (0.6, 0.9) 1 -> 3.5 / 4.
    assert M.roc_auc(TIE_SCORES, TIE_LABELS) == pytest.approx(0.875)
    # Thresholds 0.9: P 1, R 1/2; 0.6: P 2/3, R 1; 0.2: R unchanged -> 1/2 + 1/2 * 2/3.
    assert M.average_precision(TIE_SCORES, TIE_LABELS) == pytest.approx(0.5 + 1 / 3)
    # ROC (0,0) (0,.5) (.5,1) (1,1): FNR - FPR = .5 at (0,.5), -.5 at (.5,1) -> halfway, FPR .25.
    assert M.eer(TIE_SCORES, TIE_LABELS) == pytest.approx(0.25)
    # The tie collapses into one ROC point: 4 points plus the origin would be wrong.
    fpr, tpr, _ = M.roc_curve(TIE_SCORES, TIE_LABELS)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    expected_loss = -(math.log(0.8) + math.log(0.4) + math.log(0.6) + math.log(0.9)) / 4
    assert M.log_loss(TIE_SCORES, TIE_LABELS) == pytest.approx(expected_loss)


def test_all_scores_tied_is_a_coin_flip():
    scores, labels = [0.5] * 4, [0, 1, 0, 1]
    assert M.roc_auc(scores, labels) == pytest.approx(0.5)
    assert M.average_precision(scores, labels) == pytest.approx(0.5)
    assert M.eer(scores, labels) == pytest.approx(0.5)
    assert M.accuracy(scores, labels) == pytest.approx(0.5)  # 0.5 is called real


def test_accuracy_threshold_is_strict():
    assert M.accuracy([0.5, 0.5000001], [0, 1]) == 1.0


def _mann_whitney(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _ap_by_thresholds(scores, labels):
    scores, labels = np.asarray(scores), np.asarray(labels)
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        called = scores >= t
        tp = np.sum(called & (labels == 1))
        precision, recall = tp / np.sum(called), tp / np.sum(labels == 1)
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_random_scores_with_many_ties_match_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, 60)
        labels[:2] = (0, 1)
        scores = np.round(np.clip(rng.normal(0.4 + 0.2 * labels, 0.25), 0, 1), 1)  # 11 values
        assert M.roc_auc(scores, labels) == pytest.approx(_mann_whitney(scores, labels), abs=1e-12)
        assert M.average_precision(scores, labels) == pytest.approx(
            _ap_by_thresholds(scores, labels), abs=1e-12
        )
        e = M.eer(scores, labels)
        fpr, tpr, _ = M.roc_curve(scores, labels)
        # The EER lies between the FPRs of the two ROC points that straddle FNR = FPR.
        gap = 1 - tpr - fpr
        k = int(np.argmax(gap <= 0))
        assert min(fpr[k - 1], fpr[k]) - 1e-12 <= e <= max(fpr[k - 1], fpr[k]) + 1e-12
        # Order of the input does not matter.
        perm = rng.permutation(60)
        assert M.roc_auc(scores[perm], labels[perm]) == pytest.approx(M.roc_auc(scores, labels), abs=1e-12)


def test_one_class_gives_nan_not_an_error():
    out = M.binary_metrics([0.2, 0.7, 0.4], [0, 0, 0])
    assert math.isnan(out["auc"]) and math.isnan(out["eer"]) and math.isnan(out["ap"])
    assert out["acc"] == pytest.approx(2 / 3)
    assert (out["n"], out["n_real"], out["n_fake"]) == (3, 3, 0)
    fpr, tpr, _ = M.roc_curve([0.2, 0.7], [1, 1])
    assert np.all(np.isnan(fpr)) and not np.any(np.isnan(tpr))
    # At video level too: two real videos only.
    res = M.compute_metrics([0.2, 0.4, 0.9], [0, 0, 0], ["a", "a", "b"])
    assert math.isnan(res["video"]["auc"]) and res["video"]["n"] == 2
    assert res["video"]["acc"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "args, match",
    [
        (([], [], []), "empty"),
        (([0.1], [0, 1], None), "labels"),
        (([0.1, float("nan")], [0, 1], None), "NaN"),
        (([0.1, 0.2], [0, 2], None), "0 \\(real\\) or 1"),
        (([0.1, 0.2], [0, 1], ["a"]), "video ids"),
    ],
)
def test_bad_input_raises(args, match):
    with pytest.raises(ValueError, match=match):
        M.compute_metrics(*args)


def test_empty_video_list_raises():
    with pytest.raises(ValueError, match="empty"):
        M.aggregate_videos(np.zeros(0), np.zeros(0, int), np.zeros(0, str))


def test_video_with_mixed_labels_raises_naming_it():
    with pytest.raises(ValueError, match="different labels.*'v2'"):
        M.aggregate_videos([0.1, 0.2, 0.3], [0, 1, 1], ["v1", "v2", "v2"][::-1])
    with pytest.raises(ValueError, match="different methods"):
        M.aggregate_videos([0.1, 0.2], [1, 1], ["v", "v"], ["Deepfakes", "FaceSwap"])


def test_video_aggregation_is_mean_frame_score():
    scores = [0.2, 0.9, 0.4, 0.7, 0.6, 0.8, 0.55]
    labels = [0, 1, 0, 1, 0, 1, 1]
    vids = ["a", "b", "a", "b", "c", "b", "d"]
    v = M.aggregate_videos(scores, labels, vids)
    assert list(v["video_id"]) == ["a", "b", "c", "d"]
    np.testing.assert_allclose(v["score"], [0.3, 0.8, 0.6, 0.55])
    assert list(v["label"]) == [0, 1, 0, 1]
    assert list(v["n_frames"]) == [2, 3, 1, 1]
    res = M.compute_metrics(scores, labels, vids)
    # Real videos 0.3, 0.6; fake 0.8, 0.55: pairs won 1, 1, 1, 0 -> 0.75.
    assert res["video"]["auc"] == pytest.approx(0.75)
    assert res["video"]["acc"] == pytest.approx(0.75)  # c (0.6) is called fake
    assert res["video"]["n"] == 4 and res["frame"]["n"] == 7


def test_per_method_breakdown_is_each_method_against_all_reals():
    # Reals: video r1 (0.1, 0.3 -> 0.2), r2 (0.5). Deepfakes: d1 (0.9), d2 (0.4, 0.2 -> 0.3).
    # FaceSwap: f1 (0.6).
    scores = [0.1, 0.3, 0.5, 0.9, 0.4, 0.2, 0.6]
    labels = [0, 0, 0, 1, 1, 1, 1]
    vids = ["r1", "r1", "r2", "d1", "d2", "d2", "f1"]
    methods = ["original"] * 3 + ["Deepfakes"] * 3 + ["FaceSwap"]
    res = M.compute_metrics(scores, labels, vids, methods)
    assert set(res["per_method"]) == {"Deepfakes", "FaceSwap"}
    df, fs = res["per_method"]["Deepfakes"], res["per_method"]["FaceSwap"]
    # Frame, Deepfakes: reals {.1,.3,.5} vs fakes {.9,.4,.2}: .9 beats 3, .4 beats 2, .2 beats 1 -> 6/9.
    assert df["frame"]["auc"] == pytest.approx(6 / 9)
    assert (df["frame"]["n_real"], df["frame"]["n_fake"]) == (3, 3)
    # Frame, FaceSwap: .6 beats all 3 reals.
    assert fs["frame"]["auc"] == pytest.approx(1.0)
    assert fs["frame"]["ap"] == pytest.approx(1.0)
    # Video, Deepfakes: reals {.2, .5} vs fakes {.9, .3}: .9 beats 2, .3 beats 1 -> 3/4.
    assert df["video"]["auc"] == pytest.approx(0.75)
    assert (df["video"]["n_real"], df["video"]["n_fake"]) == (2, 2)
    assert fs["video"]["n"] == 3
    # "All": reals {.2, .5} vs fakes {.9, .3, .6} at video level: 2 + 1 + 2 = 5 of 6.
    assert res["video"]["auc"] == pytest.approx(5 / 6)
