"""How sure a figure is: bootstrap confidence intervals and DeLong's test for two ROC AUCs.

numpy only (math.erfc for the normal tail). Scores are P(fake), labels 0 real / 1 fake,
checked as in `mat_jax.metrics`; the metrics are that module's, so an interval is around
exactly the figure metrics.json reports.

* Bootstrap: each draw resamples the samples given (videos, at video level) with
  replacement, n out of n, from `numpy.random.default_rng(seed)`: the same seed gives the
  same draws and so the same interval. The interval is the percentile one: the
  (1 - level)/2 and (1 + level)/2 quantiles of the metric over the draws, numpy's default
  linear interpolation between order statistics (Hyndman & Fan type 7). A draw holding one
  class only has no AUC or EER; it is skipped for every metric (so all intervals come from
  the same draws) and counted in "skipped". The paired bootstrap applies the same draws to
  two runs' scores of the same samples and takes the interval of the difference a - b.
* DeLong, DeLong & Clarke-Pearson (1988): the variance of the difference of two AUCs
  measured on the same samples, from the structural components (placement values) of
  each fake (fraction of reals scored below it, ties 1/2) and each real (fraction of fakes
  scored above it); computed with the midrank algorithm of Sun & Xu (2014). z = diff / se,
  two-sided p = erfc(|z| / sqrt 2). It assumes independent samples: frames of one video are
  not, so a frame-level p-value is optimistic (too small); the video level is the honest one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from mat_jax import metrics as metrics_lib

METRICS: dict[str, Callable] = {
    "auc": metrics_lib.roc_auc,
    "acc": metrics_lib.accuracy,
    "eer": metrics_lib.eer,
    "ap": metrics_lib.average_precision,
}
DRAWS = 1000
LEVEL = 0.95


def _metric_fns(names: Sequence[str]) -> dict[str, Callable]:
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}: choose from {sorted(METRICS)}")
    return {m: METRICS[m] for m in names}


def _each_draw(labels: np.ndarray, draws: int, seed: int, fn: Callable[[np.ndarray], None]) -> int:
    """Calls fn(indices) for each draw holding both classes; returns how many were skipped."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    rng = np.random.default_rng(seed)
    n, skipped = labels.size, 0
    for _ in range(draws):
        idx = rng.integers(0, n, size=n)
        y = labels[idx]
        if y.min() == y.max():
            skipped += 1
        else:
            fn(idx)
    return skipped


def _interval(values: list[float], level: float) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    low, high = np.quantile(np.asarray(values), [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def _run_info(draws: int, skipped: int, seed: int, level: float) -> dict:
    return {"draws": int(draws), "used": int(draws) - skipped, "skipped": skipped, "seed": int(seed),
            "level": float(level)}


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def bootstrap_ci(
    scores, labels, metrics: Sequence[str] = ("auc", "acc", "eer"), *,
    draws: int = DRAWS, seed: int = 0, level: float = LEVEL,
) -> dict:
    """Percentile bootstrap intervals of `metrics` (names of METRICS).

    Returns {metric: {"value", "low", "high"}, "draws", "used", "skipped", "seed", "level"}:
    "value" is the metric on all samples; low/high are NaN when every draw was skipped.
    """
    scores, labels = metrics_lib._check(scores, labels)
    _check_level(level)
    fns = _metric_fns(metrics)
    values: dict[str, list[float]] = {m: [] for m in fns}

    def one(idx):
        for m, fn in fns.items():
            values[m].append(fn(scores[idx], labels[idx]))

    skipped = _each_draw(labels, draws, seed, one)
    out: dict = {}
    for m, fn in fns.items():
        low, high = _interval(values[m], level)
        out[m] = {"value": fn(scores, labels), "low": low, "high": high}
    out.update(_run_info(draws, skipped, seed, level))
    return out


def paired_bootstrap(
    scores_a, scores_b, labels, metrics: Sequence[str] = ("acc", "eer"), *,
    draws: int = DRAWS, seed: int = 0, level: float = LEVEL,
) -> dict:
    """Percentile bootstrap interval of metric(a) - metric(b), both runs on the same draws.

    `scores_a` and `scores_b` score the same samples, in the same order, with `labels`.
    Returns {metric: {"a", "b", "diff", "low", "high"}, "draws", "used", "skipped", "seed",
    "level"}; "diff" = a - b on all samples, low/high bound the difference.
    """
    scores_a, labels = metrics_lib._check(scores_a, labels)
    scores_b, _ = metrics_lib._check(scores_b, labels)
    _check_level(level)
    fns = _metric_fns(metrics)
    diffs: dict[str, list[float]] = {m: [] for m in fns}

    def one(idx):
        y = labels[idx]
        for m, fn in fns.items():
            diffs[m].append(fn(scores_a[idx], y) - fn(scores_b[idx], y))

    skipped = _each_draw(labels, draws, seed, one)
    out: dict = {}
    for m, fn in fns.items():
        a, b = fn(scores_a, labels), fn(scores_b, labels)
        low, high = _interval(diffs[m], level)
        out[m] = {"a": a, "b": b, "diff": a - b, "low": low, "high": high}
    out.update(_run_info(draws, skipped, seed, level))
    return out


def midranks(x) -> np.ndarray:
    """1-based ranks of x, tied values sharing the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], x.size]
    out = np.empty(x.size)
    out[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return out


def placement_values(scores, labels) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, V10 per fake, V01 per real): the structural components, by midranks (Sun & Xu).

    V10 of a fake is the fraction of reals scored below it (ties 1/2); V01 of a real the
    fraction of fakes scored above it; the AUC is the mean of either. Needs both classes.
    """
    scores, labels = metrics_lib._check(scores, labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    m, n = pos.size, neg.size
    tz = midranks(np.r_[pos, neg])
    v10 = (tz[:m] - midranks(pos)) / n
    v01 = 1.0 - (tz[m:] - midranks(neg)) / m
    auc = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    return float(auc), v10, v01


def delong_test(scores_a, scores_b, labels) -> dict:
    """DeLong's test of AUC(a) = AUC(b) for two score vectors of the same samples.

    Returns {"auc_a", "auc_b", "diff" (a - b), "se" (of diff), "z", "p" (two-sided),
    "se_a", "se_b", "n_real", "n_fake"}. One class: NaN throughout. Fewer than two of a
    class: AUCs and diff, NaN se/z/p. se = 0 (e.g. identical scores): z = 0 and p = 1 when
    diff = 0, else z = +-inf and p = 0.
    """
    scores_a, labels = metrics_lib._check(scores_a, labels)
    scores_b, _ = metrics_lib._check(scores_b, labels)
    n_fake = int(labels.sum())
    n_real = int(labels.size) - n_fake
    nan = math.nan
    out = {"auc_a": nan, "auc_b": nan, "diff": nan, "se": nan, "z": nan, "p": nan,
           "se_a": nan, "se_b": nan, "n_real": n_real, "n_fake": n_fake}
    if n_fake == 0 or n_real == 0:
        return out
    auc_a, v10a, v01a = placement_values(scores_a, labels)
    auc_b, v10b, v01b = placement_values(scores_b, labels)
    out.update(auc_a=auc_a, auc_b=auc_b, diff=auc_a - auc_b)
    if n_fake < 2 or n_real < 2:
        return out

    def var(v10, v01):  # S10 / m + S01 / n, sample variances (denominators m - 1, n - 1)
        return float(np.var(v10, ddof=1) / n_fake + np.var(v01, ddof=1) / n_real)

    se = math.sqrt(max(var(v10a - v10b, v01a - v01b), 0.0))
    out.update(se=se, se_a=math.sqrt(var(v10a, v01a)), se_b=math.sqrt(var(v10b, v01b)))
    diff = out["diff"]
    if se > 0:
        z = diff / se
    else:
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    out.update(z=z, p=math.erfc(abs(z) / math.sqrt(2.0)))
    return out
