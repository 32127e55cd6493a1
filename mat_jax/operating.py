"""Operating points: TPR at a fixed FPR, decision thresholds chosen on one split, applied to another.

numpy only, on `mat_jax.metrics.roc_curve` (one point per distinct score; FPR = reals
called fake, TPR = fakes caught). Scores are P(fake), labels 0 real / 1 fake, checked as in
`mat_jax.metrics`; a one-class set gives NaN, never an exception.

Rules:

* TPR at FPR f is read off the ROC curve with the interpolation `metrics.eer` uses: linear
  between the two curve points that straddle FPR f (the expected rate of a detector that
  picks between their two thresholds at random); where the curve has points at exactly FPR
  f (a vertical run), the highest TPR among them.
* Resolution: with n reals the smallest non-zero FPR a split can measure is 1/n. Below it
  (f < 1/n, e.g. 0.1% with fewer than 1000 reals) the value would come from the straight
  line between (0, TPR at FPR 0) and the next point alone, so `tpr_at_fpr` reports NaN and
  `operating_point` says so ("resolved": False) and reports what is reachable instead: the
  TPR at FPR 0 (the most fakes caught with no real called fake), its FPR and threshold.
* Thresholds follow the ACC rule of `mat_jax.metrics`: fake iff score > threshold. The
  threshold of the curve point that calls fake every score >= s is half way between s and
  the next lower distinct score (just below the lowest score for the last point; the
  highest score itself for the point that calls nothing fake), so that it realises that
  point on the split it was chosen on and sits in the gap for another split.
* `threshold_at_fpr(f)` is the threshold of the curve point with the highest TPR whose FPR
  is at most f (never more false positives than asked on the split it is chosen on).
* `threshold_at_eer` is the threshold of the curve point nearest the EER crossing: of the two
  points straddling it, the one nearer along the segment (the first on a tie); at an exact
  crossing, that point.
"""

from __future__ import annotations

import math

import numpy as np

from mat_jax import metrics as metrics_lib

REPORTED_FPRS = (0.01, 0.001)


def _curve(scores, labels):
    """(fpr, tpr, thresholds, n_real, n_fake) with `thresholds[i]` realising point i under '>'."""
    scores, labels = metrics_lib._check(scores, labels)
    fpr, tpr, at = metrics_lib.roc_curve(scores, labels)
    # at = [inf, s_1 > s_2 > ... > s_m]: point i calls fake every score >= at[i].
    lower = np.r_[at[2:], np.nextafter(at[-1], -np.inf)]  # the next lower distinct score
    mid = 0.5 * at[1:] + 0.5 * lower
    # lower <= threshold < s; the midpoint can round up to s when the two are adjacent floats.
    thresholds = np.r_[at[1], np.where(mid < at[1:], mid, lower)]
    n_fake = int(labels.sum())
    return fpr, tpr, thresholds, int(labels.size) - n_fake, n_fake


def operating_point(scores, labels, fpr: float) -> dict:
    """TPR at FPR `fpr`, with what the split can resolve.

    Returns {"fpr_target", "tpr", "fpr", "threshold", "resolved", "n_real", "n_fake"}:
    resolved (fpr >= 1/n_real): "tpr" interpolated at "fpr" = fpr_target and "threshold"
    that of `threshold_at_fpr` (its own FPR may be lower); not resolved: "tpr", "fpr" and
    "threshold" of the reachable point at FPR 0. One class: NaN values, resolved False.
    """
    if not 0.0 < fpr <= 1.0:
        raise ValueError(f"a target FPR must be in (0, 1], got {fpr}")
    f, t, thr, n_real, n_fake = _curve(scores, labels)
    out = {"fpr_target": float(fpr), "tpr": math.nan, "fpr": math.nan, "threshold": math.nan,
           "resolved": False, "n_real": n_real, "n_fake": n_fake}
    if n_real == 0 or n_fake == 0:
        return out
    resolved = fpr * n_real >= 1.0 - 1e-9
    k = int(np.flatnonzero(f <= (fpr if resolved else 0.0))[-1])  # the highest TPR at FPR <= target
    out["threshold"] = float(thr[k])
    out["resolved"] = bool(resolved)
    if not resolved or f[k] == fpr or k == f.size - 1:
        out["tpr"], out["fpr"] = float(t[k]), float(f[k])
        return out
    w = (fpr - f[k]) / (f[k + 1] - f[k])
    out["tpr"], out["fpr"] = float(t[k] + w * (t[k + 1] - t[k])), float(fpr)
    return out


def tpr_at_fpr(scores, labels, fpr: float) -> float:
    """TPR at FPR `fpr` (interpolated on the ROC curve); NaN with one class or fewer than 1/fpr reals."""
    point = operating_point(scores, labels, fpr)
    return point["tpr"] if point["resolved"] else math.nan


def tpr_at_fprs(scores, labels, fprs=REPORTED_FPRS) -> dict[str, float]:
    """{"tpr_at_fpr_0.01": ..., "tpr_at_fpr_0.001": ...}: `tpr_at_fpr` at each FPR (key '%g')."""
    return {f"tpr_at_fpr_{f:g}": tpr_at_fpr(scores, labels, f) for f in fprs}


def threshold_at_fpr(scores, labels, fpr: float) -> float:
    """Threshold (fake iff score > it) of the best-TPR curve point with FPR <= `fpr`; NaN with one class."""
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"a target FPR must be in [0, 1], got {fpr}")
    f, _, thr, n_real, n_fake = _curve(scores, labels)
    if n_real == 0 or n_fake == 0:
        return math.nan
    return float(thr[int(np.flatnonzero(f <= fpr)[-1])])


def threshold_at_eer(scores, labels) -> float:
    """Threshold (fake iff score > it) of the curve point nearest the EER crossing; NaN with one class."""
    f, t, thr, n_real, n_fake = _curve(scores, labels)
    if n_real == 0 or n_fake == 0:
        return math.nan
    gap = (1.0 - t) - f  # falls from 1 at (0, 0) to -1 at (1, 1), as in metrics.eer
    k = int(np.argmax(gap <= 0))  # >= 1: gap[0] = 1
    if gap[k] < 0 and gap[k - 1] <= -gap[k]:  # the crossing is nearer point k - 1 (or half way)
        k -= 1
    return float(thr[k])


def apply_threshold(scores, labels, threshold: float) -> dict:
    """Calls fake every score > `threshold` (typically chosen on another split).

    Returns {"threshold", "acc", "tpr", "fpr", "n", "n_real", "n_fake"}; "tpr" is NaN
    without fakes and "fpr" without reals; a NaN threshold gives NaN acc, tpr and fpr.
    """
    scores, labels = metrics_lib._check(scores, labels)
    n_fake = int(labels.sum())
    n_real = int(labels.size) - n_fake
    out = {"threshold": float(threshold), "acc": math.nan, "tpr": math.nan, "fpr": math.nan,
           "n": int(labels.size), "n_real": n_real, "n_fake": n_fake}
    if math.isnan(threshold):
        return out
    called = scores > threshold
    out["acc"] = float(np.mean(called == (labels == 1)))
    if n_fake:
        out["tpr"] = float(np.sum(called & (labels == 1)) / n_fake)
    if n_real:
        out["fpr"] = float(np.sum(called & (labels == 0)) / n_real)
    return out
