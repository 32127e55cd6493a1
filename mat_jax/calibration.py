"""Calibration of P(fake): expected calibration error, Brier score, reliability bins, temperature scaling.

numpy only. Scores are P(fake) in [0, 1], labels 0 real / 1 fake, validated as in
`mat_jax.metrics` (empty input, NaN scores or labels other than 0/1 raise ValueError).

Conventions:

* ECE follows Guo et al. (2017, "On calibration of modern neural networks"), the standard
  for classifiers and the one a 2-class softmax detector gets from any multi-class code:
  the confidence of a sample is P(predicted class) = max(p, 1 - p), with the prediction
  fake iff p > 0.5 (the ACC rule of `mat_jax.metrics`, so p = 0.5 is a confident-0.5
  "real"); a bin's accuracy is the fraction of its samples whose prediction is right.
  ECE = sum over bins of (n_bin / n) * |accuracy_bin - mean confidence_bin|, with 15
  equal-width bins over [0, 1], bin i = (i/15, (i+1)/15] and 0 in the first bin. With this
  convention only the bins above 0.5 can hold samples. `confidence="p_fake"` gives the
  other common reading (sklearn's `calibration_curve`, torchmetrics' binary ECE): the
  confidence is p itself and a bin's "accuracy" is its fraction of fakes.
* Brier score: mean (p - y)^2 over samples, on P(fake) (the binary form; the 2-class
  multi-class form is twice this).
* Temperature scaling: a 2-class softmax with logits divided by T gives
  P_T = sigmoid(logit(p) / T), so T is fitted from p alone. p is clipped to
  [1e-7, 1 - 1e-7] first (float32 softmax outputs of 0 or 1, and 6-decimal CSV scores, have
  no finite logit). T minimises the mean negative log-likelihood; NLL is convex in 1/T, so
  its derivative is monotone and a bisection on it over log(1/T), within [0.01, 100] for
  T, finds the minimum deterministically (a T at a bound means the optimum lies beyond).
  A one-class split gives T = NaN (never an exception), as one-class metrics do.
"""

from __future__ import annotations

import math

import numpy as np

from mat_jax import metrics as metrics_lib

N_BINS = 15
LOGIT_EPS = 1e-7
T_BOUNDS = (0.01, 100.0)


def logit(p, eps: float = LOGIT_EPS) -> np.ndarray:
    """log(p / (1 - p)) of p clipped to [eps, 1 - eps] (float64)."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def sigmoid(z) -> np.ndarray:
    """1 / (1 + exp(-z)), without overflow for large |z|."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _confidence(scores: np.ndarray, labels: np.ndarray, confidence: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) per sample under the named convention."""
    if confidence == "top_label":
        predicted = (scores > 0.5).astype(np.int64)
        return np.where(predicted == 1, scores, 1.0 - scores), (predicted == labels).astype(np.float64)
    if confidence == "p_fake":
        return scores, labels.astype(np.float64)
    raise ValueError(f"confidence must be 'top_label' or 'p_fake', got {confidence!r}")


def reliability_bins(scores, labels, n_bins: int = N_BINS, confidence: str = "top_label") -> dict:
    """The reliability-diagram data of equal-width bins over [0, 1].

    Returns {"edges" (n_bins + 1,), "count" (n_bins,) int, "confidence" (mean confidence
    per bin, NaN where empty), "accuracy" (fraction correct per bin, NaN where empty;
    fraction of fakes with confidence="p_fake"), "n_bins", "convention"}.
    """
    scores, labels = metrics_lib._check(scores, labels)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf, correct = _confidence(scores, labels, confidence)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin i holds edges[i] < c <= edges[i + 1]; c = 0 falls in bin 0.
    index = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    return {
        "edges": edges,
        "count": count.astype(np.int64),
        "confidence": np.where(count > 0, mean_conf, np.nan),
        "accuracy": np.where(count > 0, accuracy, np.nan),
        "n_bins": int(n_bins),
        "convention": confidence,
    }


def ece(scores, labels, n_bins: int = N_BINS, confidence: str = "top_label") -> float:
    """Expected calibration error (see the module docstring for the convention)."""
    bins = reliability_bins(scores, labels, n_bins, confidence)
    filled = bins["count"] > 0
    weights = bins["count"][filled] / bins["count"].sum()
    return float(np.sum(weights * np.abs(bins["accuracy"][filled] - bins["confidence"][filled])))


def brier(scores, labels) -> float:
    """Mean squared difference between P(fake) and the label."""
    scores, labels = metrics_lib._check(scores, labels)
    return float(np.mean((scores - labels) ** 2))


def _nll(z: np.ndarray, sign: np.ndarray, a: float) -> float:
    """Mean -log P(label) of sigmoid(a * z): mean softplus(-sign * a * z)."""
    return float(np.mean(np.logaddexp(0.0, -sign * a * z)))


def _nll_slope(z: np.ndarray, sign: np.ndarray, a: float) -> float:
    """d/da of `_nll`: mean of -sign * z * sigmoid(-sign * a * z)."""
    return float(np.mean(-sign * z * sigmoid(-sign * a * z)))


def fit_temperature(scores, labels, bounds: tuple[float, float] = T_BOUNDS, eps: float = LOGIT_EPS) -> float:
    """The T > 0 minimising the NLL of sigmoid(logit(p) / T) on this split; NaN with one class."""
    scores, labels = metrics_lib._check(scores, labels)
    if metrics_lib._one_class(labels):
        return float("nan")
    t_lo, t_hi = float(bounds[0]), float(bounds[1])
    if not 0.0 < t_lo < t_hi:
        raise ValueError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
    z, sign = logit(scores, eps), 2.0 * labels - 1.0
    lo, hi = math.log(1.0 / t_hi), math.log(1.0 / t_lo)  # over u = log(1 / T)
    if _nll_slope(z, sign, math.exp(lo)) >= 0.0:
        return t_hi
    if _nll_slope(z, sign, math.exp(hi)) <= 0.0:
        return t_lo
    for _ in range(100):  # the bracket shrinks from ~9.2 to below 1e-29: float64 resolution
        mid = 0.5 * (lo + hi)
        if _nll_slope(z, sign, math.exp(mid)) > 0.0:
            hi = mid
        else:
            lo = mid
    return float(1.0 / math.exp(0.5 * (lo + hi)))


def apply_temperature(scores, temperature: float, eps: float = LOGIT_EPS) -> np.ndarray:
    """sigmoid(logit(p) / T) for every score (float64); T = NaN gives NaN scores."""
    if not temperature > 0.0 and not math.isnan(temperature):
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return sigmoid(logit(scores, eps) / temperature)


def calibration_metrics(scores, labels, n_bins: int = N_BINS) -> dict[str, float]:
    """{"ece" (top-label), "ece_p_fake", "brier", "nll", "n"} of one set of samples.

    "nll" is the quantity temperature scaling minimises: p clipped to [1e-7, 1 - 1e-7]
    (`metrics.log_loss` clips at 1e-15, so the two differ only for saturated scores).
    """
    scores, labels = metrics_lib._check(scores, labels)
    z, sign = logit(scores), 2.0 * labels - 1.0
    return {
        "ece": ece(scores, labels, n_bins, "top_label"),
        "ece_p_fake": ece(scores, labels, n_bins, "p_fake"),
        "brier": brier(scores, labels),
        "nll": _nll(z, sign, 1.0),
        "n": int(labels.size),
    }
