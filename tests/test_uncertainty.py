"""Tests of mat_jax.uncertainty: DeLong's test against a hand computation, bootstrap intervals."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from mat_jax import metrics
from mat_jax import uncertainty as U

# 4 reals and 3 fakes, with ties within and across classes in both runs.
LABELS = [0, 0, 0, 0, 1, 1, 1]
A = [0.1, 0.4, 0.4, 0.7, 0.4, 0.8, 0.9]
B = [0.2, 0.3, 0.6, 0.5, 0.6, 0.5, 0.45]


def _psi(x, y):
    return Fraction(1) if x > y else Fraction(1, 2) if x == y else Fraction(0)


def _delong_by_definition(a, b, labels):
    """DeLong et al. (1988) with exact fractions: structural components, S10, S01, var(diff)."""
    def components(s):
        fakes = [v for v, y in zip(s, labels) if y == 1]
        reals = [v for v, y in zip(s, labels) if y == 0]
        v10 = [sum(_psi(x, y) for y in reals) / len(reals) for x in fakes]
        v01 = [sum(_psi(x, y) for x in fakes) / len(fakes) for y in reals]
        return sum(v10) / len(v10), v10, v01

    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = components(a), components(b)
    m, n = len(v10a), len(v01a)

    def cov(u, v, mu, mv):
        return sum((x - mu) * (y - mv) for x, y in zip(u, v)) / (len(u) - 1)

    rows10, rows01 = ((v10a, auc_a), (v10b, auc_b)), ((v01a, auc_a), (v01b, auc_b))
    s10 = [[cov(p, q, mp, mq) for q, mq in rows10] for p, mp in rows10]
    s01 = [[cov(p, q, mp, mq) for q, mq in rows01] for p, mp in rows01]
    var = (s10[0][0] + s10[1][1] - 2 * s10[0][1]) / m + (s01[0][0] + s01[1][1] - 2 * s01[0][1]) / n
    return auc_a, auc_b, var


def test_delong_matches_the_hand_computation():
    # By hand. Run A: V10 (per fake, reals below, ties 1/2) = [1/2, 1, 1], AUC 5/6;
    # V01 (per real, fakes above) = [1, 5/6, 5/6, 2/3]. Run B: V10 = [7/8, 5/8, 1/2], AUC 2/3;
    # V01 = [1, 1, 1/6, 1/2]. Differences: V10 [-3/8, 3/8, 1/2] (mean 1/6), V01 [0, -1/6, 2/3,
    # 1/6] (mean 1/6). Sample variances 129/576 and 7/54; var(diff) = 129/576/3 + 7/54/4 = 185/1728.
    auc_a, auc_b, var = _delong_by_definition(A, B, LABELS)
    assert (auc_a, auc_b, var) == (Fraction(5, 6), Fraction(2, 3), Fraction(185, 1728))
    r = U.delong_test(A, B, LABELS)
    assert r["auc_a"] == pytest.approx(5 / 6) and r["auc_b"] == pytest.approx(2 / 3)
    assert r["diff"] == pytest.approx(1 / 6)
    assert r["se"] == pytest.approx(math.sqrt(185 / 1728))
    z = (1 / 6) / math.sqrt(185 / 1728)
    assert r["z"] == pytest.approx(z) and r["p"] == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert r["p"] == pytest.approx(0.6105, abs=1e-4)
    # Run A alone: V10 variance 1/12, V01 variance 1/54 -> var(AUC_A) = 1/36 + 1/216 = 7/216.
    assert r["se_a"] == pytest.approx(math.sqrt(7 / 216))
    assert (r["n_real"], r["n_fake"]) == (4, 3)


def test_delong_agrees_with_the_definition_and_metrics_on_random_tied_data():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 40)
    a = np.round(rng.random(40) * 10) / 10 + 0.3 * labels  # many ties
    b = np.round(rng.random(40) * 10) / 10 + 0.1 * labels
    r = U.delong_test(a, b, labels)
    auc_a, auc_b, var = _delong_by_definition(a, b, labels)
    assert r["auc_a"] == pytest.approx(float(auc_a)) == pytest.approx(metrics.roc_auc(a, labels))
    assert r["auc_b"] == pytest.approx(float(auc_b))
    assert r["se"] ** 2 == pytest.approx(float(var))
    # Swapping the runs flips the sign only.
    s = U.delong_test(b, a, labels)
    assert s["diff"] == pytest.approx(-r["diff"]) and s["p"] == pytest.approx(r["p"])


def test_identical_scores_give_no_difference():
    r = U.delong_test(A, A, LABELS)
    assert r["diff"] == 0.0 and r["se"] == 0.0 and r["z"] == 0.0 and r["p"] == 1.0
    assert r["se_a"] == r["se_b"] > 0


def test_delong_edge_cases():
    r = U.delong_test([0.1, 0.2], [0.3, 0.4], [1, 1])
    assert all(math.isnan(r[k]) for k in ("auc_a", "auc_b", "diff", "se", "z", "p"))
    r = U.delong_test([0.1, 0.2, 0.9], [0.3, 0.4, 0.2], [0, 0, 1])  # one fake: no variance
    assert r["auc_a"] == 1.0 and r["auc_b"] == 0.0 and math.isnan(r["se"]) and math.isnan(r["p"])
    with pytest.raises(ValueError):
        U.delong_test([0.1, 0.2], [0.3], [0, 1])


def test_midranks():
    np.testing.assert_array_equal(U.midranks([3, 1, 3, 2, 3]), [4, 1, 4, 2, 4])
    np.testing.assert_array_equal(U.midranks([0.5, 0.5]), [1.5, 1.5])


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
    return rng.random(n) * 0.7 + 0.3 * labels, labels


def test_bootstrap_is_seeded_and_brackets_the_value():
    s, y = _data()
    r = U.bootstrap_ci(s, y, draws=300, seed=5)
    assert r == U.bootstrap_ci(s, y, draws=300, seed=5)
    assert r != U.bootstrap_ci(s, y, draws=300, seed=6)
    assert set(r) == {"auc", "acc", "eer", "draws", "used", "skipped", "seed", "level"}
    for m in ("auc", "acc", "eer"):
        assert r[m]["low"] <= r[m]["value"] <= r[m]["high"]
        assert r[m]["high"] - r[m]["low"] > 0.01
    assert r["auc"]["value"] == metrics.roc_auc(s, y)
    assert (r["draws"], r["used"], r["skipped"], r["level"]) == (300, 300, 0, 0.95)


def test_bootstrap_percentiles_of_the_draws():
    # Rebuild the draws with the documented generator and check the percentile rule.
    s, y = _data(20, seed=2)
    rng = np.random.default_rng(7)
    aucs = []
    for _ in range(200):
        idx = rng.integers(0, 20, 20)
        if y[idx].min() != y[idx].max():
            aucs.append(metrics.roc_auc(s[idx], y[idx]))
    r = U.bootstrap_ci(s, y, ("auc",), draws=200, seed=7, level=0.9)
    assert r["auc"]["low"] == pytest.approx(np.quantile(aucs, 0.05), abs=1e-12)
    assert r["auc"]["high"] == pytest.approx(np.quantile(aucs, 0.95), abs=1e-12)
    assert r["used"] == len(aucs)


def test_one_class_draws_are_skipped_and_counted():
    s, y = [0.2, 0.3, 0.1, 0.9], [0, 0, 0, 1]  # a draw misses the fake with probability (3/4)^4
    r = U.bootstrap_ci(s, y, draws=1000, seed=0)
    assert 250 < r["skipped"] < 390 and r["used"] + r["skipped"] == 1000
    assert r["auc"]["high"] == 1.0
    none = U.bootstrap_ci([0.2, 0.3], [1, 1], draws=50)
    assert none["skipped"] == 50 and math.isnan(none["auc"]["value"]) and math.isnan(none["acc"]["low"])


def test_paired_bootstrap_uses_the_same_draws_for_both_runs():
    s, y = _data()
    same = U.paired_bootstrap(s, s, y, draws=200, seed=1)
    assert same["acc"]["diff"] == 0.0 and same["acc"]["low"] == same["acc"]["high"] == 0.0
    assert same["eer"]["low"] == same["eer"]["high"] == 0.0
    worse = np.where(np.arange(y.size) % 3 == 0, 1.0 - s, s)  # a third of the scores flipped
    r = U.paired_bootstrap(s, worse, y, draws=200, seed=1)
    assert set(r["acc"]) == {"a", "b", "diff", "low", "high"}
    assert r["acc"]["a"] == metrics.accuracy(s, y) and r["eer"]["b"] == metrics.eer(worse, y)
    assert r["acc"]["diff"] > 0 and r["acc"]["low"] <= r["acc"]["diff"] <= r["acc"]["high"]
    assert r["eer"]["diff"] < 0
    assert r == U.paired_bootstrap(s, worse, y, draws=200, seed=1)
    with pytest.raises(ValueError, match="unknown metrics"):
        U.paired_bootstrap(s, s, y, ("f1",))
