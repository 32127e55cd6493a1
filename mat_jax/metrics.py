"""Deepfake-detection metrics at frame and video level (numpy only, host side).

Scores are P(fake) in [0, 1]; labels are 0 real, 1 fake (`mat_jax.data.records`). Definitions
follow the field's usual code (sklearn as used by DeepfakeBench and the official MAT):

* ACC at threshold 0.5: a sample is called fake iff its score is > 0.5 (a softmax tie goes
  to "real", as `argmax` over (real, fake) does).
* ROC-AUC: area under the ROC curve by the trapezoid rule over distinct thresholds, so tied
  scores count one half, i.e. the Mann-Whitney statistic (= sklearn's `roc_auc_score`).
* EER: the rate where FNR = 1 - TPR and FPR are equal on the ROC curve, linearly
  interpolated between its two points that straddle the crossing. DeepfakeBench instead
  takes the FPR of the point nearest the crossing; on a dense frame-level curve the two
  agree to within one step, but on a sparse one (few videos, many ties) the nearest-point
  rule can be far off: it gives 0 for a detector that scores everything 0.5.
* AP: sum over distinct thresholds, in decreasing order, of (R_k - R_{k-1}) * P_k (sklearn's
  `average_precision_score`: step-wise, no interpolation).
* log loss: binary cross-entropy of the scores clipped to [1e-15, 1 - 1e-15] (the DFDC metric).

With one class only, AUC, EER and AP are undefined and reported as NaN (never an exception),
so a one-class subset (e.g. a Celeb-DF shard with only reals) still yields ACC and n.
Empty input raises ValueError, and so do NaN scores, labels other than 0/1, mismatched
lengths, and a video whose frames carry different labels or methods.

Video level: a video's score is the mean of its frames' scores; its label (and method) is
the one all its frames share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_EPS = 1e-15


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.size == 0:
        raise ValueError("no scores to evaluate (empty input)")
    if labels.shape != scores.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{np.sum(~np.isfinite(scores))} scores are NaN or infinite")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got values {np.unique(labels)[:10]}")
    return scores, labels.astype(np.int64)


def _one_class(labels: np.ndarray) -> bool:
    return labels.min() == labels.max()


def accuracy(scores, labels, threshold: float = 0.5) -> float:
    """Fraction of samples whose call (fake iff score > threshold) matches the label."""
    scores, labels = _check(scores, labels)
    return float(np.mean((scores > threshold).astype(np.int64) == labels))


def _binary_curve(scores: np.ndarray, labels: np.ndarray):
    """False and true positives when calling fake every score >= t, for each distinct t (decreasing)."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # The last index of each run of equal scores: tied samples enter the curve together.
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    return fps, tps, s[last]


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf, one point per distinct score.

    Unlike sklearn's default, collinear points are kept. With one class only, the rate of
    the missing class is NaN.
    """
    scores, labels = _check(scores, labels)
    fps, tps, thresholds = _binary_curve(scores, labels)
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, np.r_[np.inf, thresholds]


def roc_auc(scores, labels) -> float:
    """ROC-AUC (ties count 1/2); NaN with one class only."""
    scores, labels = _check(scores, labels)
    if _one_class(labels):
        return float("nan")
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr))


def eer(scores, labels) -> float:
    """Equal error rate (FNR = FPR, interpolated on the ROC curve); NaN with one class."""
    scores, labels = _check(scores, labels)
    if _one_class(labels):
        return float("nan")
    fpr, tpr, _ = roc_curve(scores, labels)
    # FNR - FPR falls from 1 at (0, 0) to -1 at (1, 1), never rising: find where it crosses 0.
    gap = (1.0 - tpr) - fpr
    k = int(np.argmax(gap <= 0))
    if gap[k] == 0:
        return float(fpr[k])
    t = gap[k - 1] / (gap[k - 1] - gap[k])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def average_precision(scores, labels) -> float:
    """Average precision with fakes as the positive class (sklearn's definition); NaN with one class."""
    scores, labels = _check(scores, labels)
    if _one_class(labels):
        return float("nan")
    fps, tps, _ = _binary_curve(scores, labels)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(scores, labels) -> float:
    """Mean binary cross-entropy of P(fake), scores clipped to [1e-15, 1 - 1e-15]."""
    scores, labels = _check(scores, labels)
    p = np.clip(scores, _EPS, 1.0 - _EPS)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


def binary_metrics(scores, labels) -> dict[str, float]:
    """{acc, auc, eer, ap, logloss, n, n_real, n_fake} of one set of samples."""
    scores, labels = _check(scores, labels)
    n_fake = int(labels.sum())
    return {
        "acc": accuracy(scores, labels),
        "auc": roc_auc(scores, labels),
        "eer": eer(scores, labels),
        "ap": average_precision(scores, labels),
        "logloss": log_loss(scores, labels),
        "n": int(labels.size),
        "n_real": int(labels.size) - n_fake,
        "n_fake": n_fake,
    }


def _per_video_unique(name: str, values: np.ndarray, inverse: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The value each video's frames share; raises naming the videos where they differ."""
    codes_of, codes = np.unique(values, return_inverse=True)
    pairs = np.unique(np.stack([inverse, codes.reshape(-1)]), axis=1)
    per_video = np.bincount(pairs[0], minlength=ids.size)
    if np.any(per_video > 1):
        bad = ids[per_video > 1]
        raise ValueError(
            f"{bad.size} videos have frames with different {name}s (a video has one {name}), "
            f"e.g. {list(bad[:5])}: check the records' video ids"
        )
    out = np.empty(ids.size, dtype=codes_of.dtype)
    out[pairs[0]] = codes_of[pairs[1]]
    return out


def aggregate_videos(scores, labels, video_ids, methods=None) -> dict[str, np.ndarray]:
    """Frame scores -> one row per video, sorted by video id.

    Returns {"video_id", "score" (mean frame score), "label", "n_frames"} and "method" when
    `methods` is given. Raises ValueError if a video's frames have different labels (or
    methods).
    """
    scores, labels = _check(scores, labels)
    video_ids = np.asarray(video_ids).astype(str).reshape(-1)
    if video_ids.shape != scores.shape:
        raise ValueError(f"{scores.size} scores but {video_ids.size} video ids")
    ids, inverse, counts = np.unique(video_ids, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    out = {
        "video_id": ids,
        "score": np.bincount(inverse, weights=scores) / counts,
        "label": _per_video_unique("label", labels, inverse, ids).astype(np.int64),
        "n_frames": counts.astype(np.int64),
    }
    if methods is not None:
        methods = np.asarray(methods).astype(str).reshape(-1)
        if methods.shape != scores.shape:
            raise ValueError(f"{scores.size} scores but {methods.size} methods")
        out["method"] = _per_video_unique("method", methods, inverse, ids)
    return out


def _per_method(scores: np.ndarray, labels: np.ndarray, methods: np.ndarray) -> dict[str, dict]:
    """Each manipulation method's fakes against all reals (the FF++ per-method protocol)."""
    out = {}
    for method in np.unique(methods[labels == 1]):
        keep = (labels == 0) | (methods == method)
        out[str(method)] = binary_metrics(scores[keep], labels[keep])
    return out


def compute_metrics(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    video_ids: Sequence[str] | np.ndarray | None,
    methods: Sequence[str] | np.ndarray | None = None,
    *,
    aggregate=None,
) -> dict:
    """All metrics of one evaluation.

    Args:
      scores: P(fake) per frame.
      labels: 0 real / 1 fake per frame.
      video_ids: the video of each frame; None skips the video level.
      methods: the manipulation method of each frame ("original" for reals); adds the
        per-method breakdown, each method's fakes against all reals (label 0).
      aggregate: frame scores -> video rows, called like `aggregate_videos` (the default:
        the mean of the frames' scores); `mat_jax.aggregation` has the other rules.

    Returns:
      {"frame": m, "video": m, "per_method": {method: {"frame": m, "video": m}}}, where m is
      `binary_metrics`' dict {acc, auc, eer, ap, logloss, n, n_real, n_fake}; "video" and
      "per_method" (and a method's "video") appear only when their inputs are given.
      One-class sets give NaN for auc/eer/ap.
    """
    scores, labels = _check(scores, labels)
    result: dict = {"frame": binary_metrics(scores, labels)}
    if methods is not None:
        methods = np.asarray(methods).astype(str).reshape(-1)
        if methods.shape != scores.shape:
            raise ValueError(f"{scores.size} scores but {methods.size} methods")
    videos = None
    if video_ids is not None:
        videos = (aggregate or aggregate_videos)(scores, labels, video_ids, methods=methods)
        result["video"] = binary_metrics(videos["score"], videos["label"])
    if methods is not None:
        per_method = {m: {"frame": v} for m, v in _per_method(scores, labels, methods).items()}
        if videos is not None:
            for m, v in _per_method(videos["score"], videos["label"], videos["method"]).items():
                per_method[m]["video"] = v
        result["per_method"] = per_method
    return result
