"""Frame scores -> one score per video, by a rule named with a string.

numpy only. Every mode returns the rows of `mat_jax.metrics.aggregate_videos` (sorted by
video id, with its label, method and frame-count checks, which it alone performs) with
"score" computed by the named rule:

* "mean": the mean of the frames' P(fake), the field's default and the protocol of the
  official evaluation; exactly `metrics.aggregate_videos`' own score (bit for bit).
* "mean_logit": sigmoid of the mean of logit(P(fake)), p clipped to [1e-7, 1 - 1e-7] (the
  mean of the logits a 2-class softmax saw, i.e. the geometric mean of the odds).
* "max": the largest frame score (one confident frame decides).
* "topk": the mean of the k largest frame scores, k given; a video with fewer than k
  frames gets the mean of all its frames.

Videos with several people (records with several `track_id`s) are scored per track by the
rule, then per video by `track_reduce`: "max" (the FFIW protocol: one forged face makes the
video fake; the video's label is the largest of its tracks') or "mean". A video with one track
gets exactly the single-face result.
"""

from __future__ import annotations

import numpy as np

from mat_jax import calibration
from mat_jax import metrics as metrics_lib

MODES = ("mean", "mean_logit", "max", "topk")
TRACK_REDUCTIONS = ("max", "mean")
_SEP = "\x1f"  # joins video id and track id into one unit id; never in a file-name-safe id


def video_scores(
    scores,
    labels,
    video_ids,
    mode: str = "mean",
    *,
    k: int | None = None,
    methods=None,
    tracks=None,
    track_reduce: str = "max",
) -> dict[str, np.ndarray]:
    """One row per video: {"video_id", "score", "label", "n_frames"} (+ "method" when given;
    + "n_tracks" when `tracks`, each frame's track id, puts several tracks in a video).

    Raises ValueError for an unknown mode, a k with any mode but "topk" (or none with it),
    and for everything `metrics.aggregate_videos` refuses.
    """
    if mode not in MODES:
        raise ValueError(f"unknown video aggregation {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "topk":
        if k is None or int(k) != k or k < 1:
            raise ValueError(f"aggregation 'topk' needs a whole k >= 1, got k={k!r}")
    elif k is not None:
        raise ValueError(f"k={k!r} is given but only aggregation 'topk' takes a k (mode is {mode!r})")
    if track_reduce not in TRACK_REDUCTIONS:
        raise ValueError(f"unknown track reduction {track_reduce!r}: choose one of {', '.join(TRACK_REDUCTIONS)}")
    if tracks is not None and _several_tracks(video_ids, tracks):
        return _over_tracks(scores, labels, video_ids, tracks, mode, k, methods, track_reduce)
    out = metrics_lib.aggregate_videos(scores, labels, video_ids, methods)
    if mode == "mean":
        return out
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    video_ids = np.asarray(video_ids).astype(str).reshape(-1)
    inverse = np.searchsorted(out["video_id"], video_ids)
    counts = out["n_frames"]
    if mode == "mean_logit":
        z = np.bincount(inverse, weights=calibration.logit(scores), minlength=counts.size) / counts
        out["score"] = calibration.sigmoid(z)
        return out
    # Frames grouped by video (videos in id order), each video's frames by decreasing score.
    order = np.lexsort((-scores, inverse))
    sorted_scores, sorted_video = scores[order], inverse[order]
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    if mode == "max":
        out["score"] = sorted_scores[starts]
        return out
    rank = np.arange(scores.size) - starts[sorted_video]
    keep = rank < k
    top = np.bincount(sorted_video[keep], weights=sorted_scores[keep], minlength=counts.size)
    out["score"] = top / np.minimum(counts, k)
    return out


def _several_tracks(video_ids, tracks) -> bool:
    pairs = np.unique(np.stack([np.asarray(video_ids).astype(str).reshape(-1),
                                np.asarray(tracks).astype(str).reshape(-1)]), axis=1)
    return pairs.shape[1] > np.unique(pairs[0]).size


def _over_tracks(scores, labels, video_ids, tracks, mode, k, methods, track_reduce) -> dict[str, np.ndarray]:
    video_ids = np.asarray(video_ids).astype(str).reshape(-1)
    units = np.char.add(np.char.add(video_ids, _SEP), np.asarray(tracks).astype(str).reshape(-1))
    per_track = video_scores(scores, labels, units, mode, k=k, methods=methods)
    owner = np.array([u.split(_SEP)[0] for u in per_track["video_id"]])
    ids, inverse = np.unique(owner, return_inverse=True)
    n = ids.size
    if track_reduce == "max":
        score = np.full(n, -np.inf)
        np.maximum.at(score, inverse, per_track["score"])
    else:
        score = np.bincount(inverse, weights=per_track["score"], minlength=n) / np.bincount(inverse, minlength=n)
    label = np.zeros(n, np.int64)
    np.maximum.at(label, inverse, per_track["label"])
    out = {"video_id": ids, "score": score, "label": label,
           "n_frames": np.bincount(inverse, weights=per_track["n_frames"], minlength=n).astype(np.int64),
           "n_tracks": np.bincount(inverse, minlength=n).astype(np.int64)}
    if methods is not None:
        first = np.unique(inverse, return_index=True)[1]
        out["method"] = per_track["method"][first]
    return out
