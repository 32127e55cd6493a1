"""Tests of mat_jax.operating (TPR at FPR, thresholds) and mat_jax.aggregation, against hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mat_jax import aggregation, metrics
from mat_jax import operating as O

# 10 reals and 6 fakes; one real and one fake tie at 0.3.
REALS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.95]
FAKES = [0.3, 0.75, 0.9, 0.92, 0.97, 0.99]
SCORES = np.array(REALS + FAKES)
LABELS = np.array([0] * 10 + [1] * 6)
# Its ROC curve as (false positives, true positives), by decreasing threshold:
#   +inf (0,0)  .99 (0,1)  .97 (0,2)  .95 (1,2)  .92 (1,3)  .90 (1,4)  .85 (2,4)  .80 (3,4)
#   .75 (3,5)  .70 (4,5)  .60 (5,5)  .50 (6,5)  .40 (7,5)  .30 (8,6)  .20 (9,6)  .10 (10,6)


def test_tpr_at_fpr_takes_the_highest_tpr_of_a_vertical_run():
    # FPR 0.1 is reached at (1,2), (1,3) and (1,4): the best of them, 4/6.
    assert O.tpr_at_fpr(SCORES, LABELS, 0.1) == pytest.approx(4 / 6)
    # FPR 0.15 lies on the flat segment (1,4) -> (2,4).
    assert O.tpr_at_fpr(SCORES, LABELS, 0.15) == pytest.approx(4 / 6)


def test_tpr_at_fpr_interpolates_like_the_eer():
    # FPR 0.75 lies half way along the tie's diagonal (7,5) -> (8,6): TPR 5/6 + 1/12.
    assert O.tpr_at_fpr(SCORES, LABELS, 0.75) == pytest.approx(11 / 12)
    assert O.tpr_at_fpr(SCORES, LABELS, 1.0) == 1.0
    point = O.operating_point(SCORES, LABELS, 0.75)
    assert point["resolved"] and point["fpr"] == 0.75 and point["n_real"] == 10 and point["n_fake"] == 6


def test_an_fpr_below_the_resolution_is_reported_as_what_is_reachable():
    # 10 reals: the smallest non-zero FPR is 0.1, so 1% cannot be measured.
    assert math.isnan(O.tpr_at_fpr(SCORES, LABELS, 0.01))
    point = O.operating_point(SCORES, LABELS, 0.01)
    assert point["resolved"] is False
    # What is reachable: FPR 0 with the two fakes above every real, threshold between .97 and .95.
    assert point["tpr"] == pytest.approx(2 / 6) and point["fpr"] == 0.0
    assert point["threshold"] == pytest.approx(0.96)
    keys = O.tpr_at_fprs(SCORES, LABELS)
    assert set(keys) == {"tpr_at_fpr_0.01", "tpr_at_fpr_0.001"} and all(math.isnan(v) for v in keys.values())
    # With 1000 reals 0.1% is resolved.
    rng = np.random.default_rng(0)
    s = np.r_[rng.random(1000), rng.random(50) + 0.5]
    y = np.r_[np.zeros(1000, int), np.ones(50, int)]
    assert O.operating_point(s, y, 0.001)["resolved"]


def test_threshold_at_fpr_realises_the_point_on_its_own_split():
    thr = O.threshold_at_fpr(SCORES, LABELS, 0.1)
    assert thr == pytest.approx(0.875)  # between .90 (the point (1,4)) and the next score .85
    r = O.apply_threshold(SCORES, LABELS, thr)
    assert r["tpr"] == pytest.approx(4 / 6) and r["fpr"] == pytest.approx(0.1)
    assert r["acc"] == pytest.approx(13 / 16) and r["threshold"] == thr and r["n"] == 16
    # At most the FPR asked for: 0.15 picks the same point.
    assert O.threshold_at_fpr(SCORES, LABELS, 0.15) == thr
    # FPR 0: the point (0,2); the lowest score: everything called fake.
    assert O.threshold_at_fpr(SCORES, LABELS, 0.0) == pytest.approx(0.96)
    everything = O.apply_threshold(SCORES, LABELS, O.threshold_at_fpr(SCORES, LABELS, 1.0))
    assert everything["tpr"] == 1.0 and everything["fpr"] == 1.0


def test_threshold_at_fpr_zero_when_a_real_scores_highest_calls_nothing_fake():
    s, y = [0.9, 0.8, 0.1], [0, 1, 0]
    thr = O.threshold_at_fpr(s, y, 0.0)
    assert thr == 0.9
    r = O.apply_threshold(s, y, thr)
    assert r["tpr"] == 0.0 and r["fpr"] == 0.0


def test_threshold_at_eer_picks_the_point_nearest_the_crossing():
    # FNR - FPR: (2,4) 1/3 - .2, (3,4) 1/3 - .3 = .033, (3,5) 1/6 - .3 = -.133: nearer (3,4).
    assert metrics.eer(SCORES, LABELS) == pytest.approx(0.3)
    thr = O.threshold_at_eer(SCORES, LABELS)
    assert thr == pytest.approx(0.775)  # between .80 and .75
    r = O.apply_threshold(SCORES, LABELS, thr)
    assert r["fpr"] == pytest.approx(0.3) and r["tpr"] == pytest.approx(4 / 6)
    # An exact crossing: the sklearn example's (0.5, 0.5) point, threshold between .4 and .35.
    assert O.threshold_at_eer([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.375)


def test_a_threshold_from_one_split_applied_to_another():
    thr = O.threshold_at_eer(SCORES, LABELS)  # 0.775
    other = O.apply_threshold([0.7, 0.78, 0.2, 0.9, 0.5], [0, 0, 0, 1, 1], thr)
    assert other == {"threshold": thr, "acc": pytest.approx(3 / 5), "tpr": 0.5, "fpr": pytest.approx(1 / 3),
                     "n": 5, "n_real": 3, "n_fake": 2}


def test_one_class_gives_nan_never_an_exception():
    reals = [0.1, 0.7, 0.3]
    assert math.isnan(O.tpr_at_fpr(reals, [0, 0, 0], 0.1))
    assert math.isnan(O.threshold_at_fpr(reals, [0, 0, 0], 0.1))
    assert math.isnan(O.threshold_at_eer(reals, [1, 1, 1]))
    point = O.operating_point(reals, [1, 1, 1], 0.5)
    assert math.isnan(point["tpr"]) and point["resolved"] is False
    r = O.apply_threshold(reals, [0, 0, 0], 0.5)
    assert r["acc"] == pytest.approx(2 / 3) and r["fpr"] == pytest.approx(1 / 3) and math.isnan(r["tpr"])
    r = O.apply_threshold(reals, [0, 0, 0], math.nan)
    assert all(math.isnan(r[k]) for k in ("acc", "tpr", "fpr"))
    with pytest.raises(ValueError):
        O.operating_point(reals, [0, 1, 0], 0.0)


# --------------------------------------------------------------------------- video aggregation

FRAME_SCORES = [0.2, 0.4, 0.9, 0.99, 0.6, 0.4]
FRAME_LABELS = [1, 0, 1, 1, 1, 0]
FRAME_VIDEOS = ["b", "a", "b", "c", "b", "a"]
FRAME_METHODS = ["DF", "original", "DF", "NT", "DF", "original"]


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def _logit(p):
    return math.log(p / (1 - p))


def test_mean_is_exactly_metrics_aggregate_videos():
    ref = metrics.aggregate_videos(FRAME_SCORES, FRAME_LABELS, FRAME_VIDEOS, FRAME_METHODS)
    out = aggregation.video_scores(FRAME_SCORES, FRAME_LABELS, FRAME_VIDEOS, "mean", methods=FRAME_METHODS)
    assert set(out) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])
    rng = np.random.default_rng(1)
    s, v = rng.random(500), rng.integers(0, 37, 500).astype(str)
    y = (np.char.str_len(v) % 2).astype(int)  # one label per video
    ours, ref = aggregation.video_scores(s, y, v)["score"], metrics.aggregate_videos(s, y, v)["score"]
    assert ours.tobytes() == ref.tobytes()


@pytest.mark.parametrize("mode,k,expected", [
    ("mean", None, [0.4, (0.2 + 0.9 + 0.6) / 3, 0.99]),
    ("mean_logit", None, [0.4, _sig((_logit(0.2) + _logit(0.9) + _logit(0.6)) / 3), 0.99]),
    ("max", None, [0.4, 0.9, 0.99]),
    ("topk", 2, [0.4, (0.9 + 0.6) / 2, 0.99]),  # c has one frame: the mean of all it has
    ("topk", 1, [0.4, 0.9, 0.99]),
    ("topk", 5, [0.4, (0.2 + 0.9 + 0.6) / 3, 0.99]),
])
def test_aggregation_modes_on_a_tiny_table(mode, k, expected):
    out = aggregation.video_scores(FRAME_SCORES, FRAME_LABELS, FRAME_VIDEOS, mode, k=k, methods=FRAME_METHODS)
    assert out["video_id"].tolist() == ["a", "b", "c"]
    assert out["label"].tolist() == [0, 1, 1] and out["n_frames"].tolist() == [2, 3, 1]
    assert out["method"].tolist() == ["original", "DF", "NT"]
    np.testing.assert_allclose(out["score"], expected, rtol=1e-12)


def test_aggregation_refuses_bad_requests_and_keeps_metrics_checks():
    args = (FRAME_SCORES, FRAME_LABELS, FRAME_VIDEOS)
    with pytest.raises(ValueError, match="unknown video aggregation 'median'"):
        aggregation.video_scores(*args, "median")
    with pytest.raises(ValueError, match="needs a whole k"):
        aggregation.video_scores(*args, "topk")
    with pytest.raises(ValueError, match="only aggregation 'topk' takes a k"):
        aggregation.video_scores(*args, "max", k=3)
    with pytest.raises(ValueError, match="different labels"):
        aggregation.video_scores(FRAME_SCORES, [1, 0, 0, 1, 1, 0], FRAME_VIDEOS, "max")
