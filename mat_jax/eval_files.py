"""The files of one evaluation, under `<workdir>/eval/<name>/`: metrics.json, videos.csv,
frames.csv, history.jsonl and the ROC and score figures (`mat_jax.evaluate` decides what is
scored; this module writes it down)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Mapping

import numpy as np
from etils import epath

from mat_jax import metrics as metrics_lib, plots


def video_rows(s: Mapping[str, np.ndarray], aggregate=None) -> list[dict[str, Any]]:
    """One row per video (sorted by id): its score (mean frame score, or `aggregate`'s), label,
    method, frame count, prediction."""
    v = (aggregate or metrics_lib.aggregate_videos)(s["score"], s["label"], s["video_id"], methods=s["method"])
    tracks = v.get("n_tracks", np.ones(len(v["video_id"]), np.int64))
    return [
        {"video_id": str(v["video_id"][i]), "method": str(v["method"][i]), "label": int(v["label"][i]),
         "num_frames": int(v["n_frames"][i]), "num_tracks": int(tracks[i]), "score": float(v["score"][i]),
         # The ACC convention of mat_jax.metrics: fake iff the score is above 0.5.
         "prediction": int(v["score"][i] > 0.5)}
        for i in range(len(v["video_id"]))
    ]


def _csv(rows: list[Mapping[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        # Shortest round-trip form: `mat_jax.compare` recomputes AUCs from these files, and six
        # decimals tie the scores of a barely trained model.
        w.writerow({k: (repr(r[k]) if isinstance(r[k], float) else r[k]) for k in fields})
    return buf.getvalue()


def jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if np.isfinite(v) else None  # JSON has no NaN: an undefined metric is null
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_results(out_dir: epath.Path, s: Mapping[str, np.ndarray], results: Mapping[str, Any], info, *,
                  aggregate=None, reliability: Mapping[str, Any] | None = None) -> None:
    """metrics.json, videos.csv, frames.csv, roc.png, scores.png and a history line under `out_dir`.

    `aggregate` makes the video scores (default: the mean of the frames'); `reliability`
    (`calibration.reliability_bins` data) adds reliability.png.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**jsonable(dict(info)), "metrics": jsonable(results)}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    with (out_dir / "history.jsonl").open("a") as f:
        f.write(json.dumps(payload, sort_keys=True) + "\n")

    videos = video_rows(s, aggregate)
    fields = ["video_id", "method", "label", "num_frames", "num_tracks", "score", "prediction"]
    (out_dir / "videos.csv").write_text(_csv(videos, fields))
    track = s.get("track_id", np.zeros(len(s["score"]), np.int64))
    order = np.lexsort((s["frame_index"], track, s["video_id"]))
    frames = [
        {"video_id": str(s["video_id"][i]), "track_id": int(track[i]), "frame_index": int(s["frame_index"][i]),
         "method": str(s["method"][i]), "label": int(s["label"][i]), "score": float(s["score"][i])}
        for i in order
    ]
    (out_dir / "frames.csv").write_text(
        _csv(frames, ["video_id", "track_id", "frame_index", "method", "label", "score"]))

    split = info.get("split", "")
    v_scores = np.array([v["score"] for v in videos])
    v_labels = np.array([v["label"] for v in videos])
    v_methods = np.array([v["method"] for v in videos])
    methods = s["method"] if np.any(s["method"] != "") else None
    frame_curves = plots.roc_curves(s["score"], s["label"], methods)
    video_curves = plots.roc_curves(v_scores, v_labels, v_methods if methods is not None else None)
    curves = {f"{level} {name}": c for level, group in (("frame", frame_curves), ("video", video_curves))
              for name, c in group.items() if name == "all"}
    plots.roc_plot(out_dir / "roc.png", curves, title=f"ROC, {split}")
    if len(frame_curves) > 2:  # several methods: one figure per level with a curve each
        plots.roc_plot(out_dir / "roc_methods_frame.png", frame_curves, title=f"ROC per method (frames), {split}")
        plots.roc_plot(out_dir / "roc_methods_video.png", video_curves, title=f"ROC per method (videos), {split}")
    plots.score_histogram(out_dir / "scores.png", s["score"], s["label"], title=f"P(fake) per frame, {split}")
    if reliability is not None:
        plots.reliability_plot(out_dir / "reliability.png", reliability, title=f"reliability (frames), {split}")


# --------------------------------------------------------------------------- checkpoint evaluation
