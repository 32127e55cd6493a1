"""Tests of mat_jax.calibration (ECE, Brier, reliability bins, temperature scaling) and its plot."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mat_jax import calibration as C
from mat_jax import plots


def test_ece_top_label_by_hand():
    # Top-label confidence max(p, 1 - p), prediction fake iff p > 0.5:
    #   0.90 (fake, right) and 0.88 (fake, wrong) share bin (13/15, 14/15]: conf .89, acc .5 -> .39
    #   0.30 -> conf .70 (real, right), bin (10/15, 11/15]: |1 - .7| = .3
    #   0.62 -> conf .62 (fake, right), bin (9/15, 10/15]: |1 - .62| = .38
    scores, labels = [0.9, 0.88, 0.3, 0.62], [1, 0, 0, 1]
    assert C.ece(scores, labels) == pytest.approx(0.5 * 0.39 + 0.25 * 0.3 + 0.25 * 0.38)
    bins = C.reliability_bins(scores, labels)
    assert bins["count"].tolist() == [0] * 9 + [1, 1, 0, 0, 2, 0]
    assert bins["confidence"][13] == pytest.approx(0.89) and bins["accuracy"][13] == 0.5
    assert np.isnan(bins["accuracy"][0]) and np.isnan(bins["confidence"][14])
    assert bins["edges"].shape == (16,) and bins["n_bins"] == 15 and bins["convention"] == "top_label"


def test_the_two_conventions_differ_where_p_and_1_minus_p_share_a_bin():
    # Two fakes at p = .9 and p = .1. Top-label: both confidence .9, one right: |.5 - .9| = .4.
    # P(fake): bin of .9 holds one fake (|1 - .9|), bin of .1 one fake (|1 - .1|): (.1 + .9) / 2.
    assert C.ece([0.9, 0.1], [1, 1]) == pytest.approx(0.4)
    assert C.ece([0.9, 0.1], [1, 1], confidence="p_fake") == pytest.approx(0.5)
    assert C.brier([0.9, 0.1], [1, 1]) == pytest.approx((0.01 + 0.81) / 2)
    with pytest.raises(ValueError, match="top_label"):
        C.ece([0.9], [1], confidence="max")


def test_bin_edges_are_upper_inclusive():
    # p = .5 is called real with confidence .5: bin (7/15, 8/15]. p = 0 and 1 under P(fake).
    assert C.reliability_bins([0.5], [0])["count"][7] == 1
    bins = C.reliability_bins([0.0, 1.0, 0.2], [0, 1, 0], confidence="p_fake")
    assert bins["count"][0] == 1 and bins["count"][14] == 1 and bins["count"][2] == 1
    assert C.ece([0.0, 1.0], [0, 1]) == 0.0 and C.brier([0.0, 1.0], [0, 1]) == 0.0


def _sharpened(t_true: float, n: int = 20000, seed: int = 0):
    """Labels drawn from a calibrated model sigmoid(z), scores sigmoid(t_true * z): logit / t_true = z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    labels = (rng.random(n) < C.sigmoid(z)).astype(int)
    return C.sigmoid(t_true * z), labels


@pytest.mark.parametrize("t_true", [2.5, 0.4])  # sharpened (over-confident), softened (under-)
def test_temperature_scaling_recovers_a_known_temperature(t_true):
    scores, labels = _sharpened(t_true)
    t = C.fit_temperature(scores, labels)
    assert t == pytest.approx(t_true, rel=0.05)
    assert C.fit_temperature(scores, labels) == t  # deterministic
    fixed = C.apply_temperature(scores, t)
    assert C.ece(fixed, labels) < C.ece(scores, labels)
    assert C.calibration_metrics(fixed, labels)["nll"] < C.calibration_metrics(scores, labels)["nll"]
    # T is the NLL minimum: nudging it either way costs.
    nll = [C.calibration_metrics(C.apply_temperature(scores, t * f), labels)["nll"]
           for f in (0.98, 1.0, 1.02)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_temperature_edge_cases():
    assert math.isnan(C.fit_temperature([0.2, 0.9], [1, 1]))  # one class
    # Perfectly separated at any confidence: the NLL keeps falling as T shrinks -> the low bound.
    assert C.fit_temperature([0.4, 0.6], [0, 1]) == C.T_BOUNDS[0]
    # Anti-informative scores: the optimum is T = infinity -> the high bound.
    assert C.fit_temperature([0.9, 0.1], [0, 1]) == C.T_BOUNDS[1]
    # Saturated scores (a float32 softmax's 0 and 1) are clipped, not infinite.
    out = C.apply_temperature([0.0, 1.0, 0.5], 2.0)
    assert np.all(np.isfinite(out)) and out[2] == 0.5 and 0 < out[0] < 1e-3
    np.testing.assert_allclose(C.apply_temperature([0.1, 0.7], 1.0), [0.1, 0.7], rtol=1e-12)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        C.apply_temperature([0.5], 0.0)


def test_calibration_metrics_keys():
    m = C.calibration_metrics([0.9, 0.2, 0.6], [1, 0, 0])
    assert set(m) == {"ece", "ece_p_fake", "brier", "nll", "n"} and m["n"] == 3
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.36) / 3)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)


def test_reliability_plot_writes_a_png(tmp_path):
    scores, labels = _sharpened(2.0, n=500)
    for convention in ("top_label", "p_fake"):
        path = tmp_path / f"reliability_{convention}.png"
        plots.reliability_plot(path, C.reliability_bins(scores, labels, confidence=convention), "test")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
