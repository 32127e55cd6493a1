"""What an evaluation reports beyond ACC / AUC / EER / AP at 0.5, from a split's frame scores.

* `fit(s, config)`: the choices made on a validation split, to be applied unchanged to test:
  decision thresholds at the EER and at `config.eval.target_fpr` (frame and video level) and,
  with `config.eval.temperature_scaling`, the temperature that calibrates P(fake) there.
* `assess(s, config, fitted)`: for any split, TPR at FPR 1% and 0.1% (`operating`); ECE (15
  bins), Brier and NLL (`calibration`); video metrics under every aggregation rule side by side
  (`aggregation`, the configured one also being the headline "video" level); 95% bootstrap
  intervals of video AUC / ACC / EER (`uncertainty`); and, given `fitted`, the val thresholds'
  ACC / TPR / FPR here and ECE / Brier before and after the val temperature.

`s` is the Evaluator's per-frame dict (score, label, video_id, method). Everything is keyed
for metrics.json; NaN where a quantity is undefined (one class, too few reals for 0.1%).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from mat_jax import aggregation, calibration, metrics as metrics_lib, operating, uncertainty


def aggregator(config, mode: str | None = None, tracks=None) -> Callable:
    """`metrics.aggregate_videos`-compatible function of a video aggregation rule (default: the
    configured one; "topk" takes `config.eval.topk`); `tracks` (each frame's track id) scores
    several people of a video per track first, then by `config.eval.track_reduce`."""
    mode = str(config.eval.aggregation) if mode is None else mode
    return functools.partial(aggregation.video_scores, mode=mode,
                             k=int(config.eval.topk) if mode == "topk" else None,
                             tracks=tracks, track_reduce=str(config.eval.track_reduce))


def _levels(s, config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    v = aggregator(config, tracks=s.get("track_id"))(s["score"], s["label"], s["video_id"])
    return {"frame": (np.asarray(s["score"], np.float64), np.asarray(s["label"])),
            "video": (np.asarray(v["score"], np.float64), np.asarray(v["label"]))}


def _fpr_key(fpr: float) -> str:
    return f"fpr_{fpr:g}"


def fit(s, config) -> dict[str, Any]:
    """Thresholds (and temperature) chosen on this split; JSON-ready."""
    target = float(config.eval.target_fpr)
    out: dict[str, Any] = {"target_fpr": target, "aggregation": str(config.eval.aggregation)}
    levels = _levels(s, config)
    for level, (scores, labels) in levels.items():
        out[level] = {"eer": operating.threshold_at_eer(scores, labels),
                      _fpr_key(target): operating.threshold_at_fpr(scores, labels, target)}
    out["temperature"] = (calibration.fit_temperature(*levels["frame"])
                          if config.eval.temperature_scaling else None)
    return out


def assess(s, config, fitted: dict[str, Any] | None = None) -> dict[str, Any]:
    levels = _levels(s, config)
    bins = int(config.eval.calibration_bins)
    out: dict[str, Any] = {
        "operating": {lv: operating.tpr_at_fprs(*sl) for lv, sl in levels.items()},
        "calibration": {lv: calibration.calibration_metrics(*sl, n_bins=bins) for lv, sl in levels.items()},
    }
    aggregations = {}
    for mode in aggregation.MODES:
        v = aggregator(config, mode, s.get("track_id"))(s["score"], s["label"], s["video_id"])
        aggregations[mode] = metrics_lib.binary_metrics(v["score"], v["label"])
    out["aggregations"] = aggregations
    scores, labels = levels["video"]
    out["video_ci95"] = uncertainty.bootstrap_ci(scores, labels, ("auc", "acc", "eer"),
                                                 draws=int(config.eval.bootstrap_draws), seed=int(config.eval.seed))
    if fitted is not None:
        out["val_thresholds"] = {
            lv: {name: operating.apply_threshold(*levels[lv], t) for name, t in fitted[lv].items()}
            for lv in ("frame", "video")
        }
        t = fitted.get("temperature")
        if t is not None and np.isfinite(t):
            after = calibration.apply_temperature(levels["frame"][0], t)
            out["temperature"] = {"T": t, "frame_before": out["calibration"]["frame"],
                                  "frame_after": calibration.calibration_metrics(after, levels["frame"][1], n_bins=bins)}
    return out


def reliability(s, config) -> dict[str, Any]:
    """The frame-level reliability-diagram data (`calibration.reliability_bins`)."""
    return calibration.reliability_bins(np.asarray(s["score"], np.float64), np.asarray(s["label"]),
                                        n_bins=int(config.eval.calibration_bins))
