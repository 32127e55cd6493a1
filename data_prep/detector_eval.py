"""Face detectors compared on videos whose true faces are known: recall, false positives,
alignment agreement and speed, per backend of `mat_jax.faces.detect`.

`python -m data_prep.bench --detectors` runs `compare` and prints `table`. Inputs: the
awkward cases of `data_prep.awkward` and the real and fake videos of a demo tree (truth: its
landmarks.npz), all H.264 at 640x480 and decoded as `data_prep.build` decodes them. Each
video goes through one `FaceFinder.find_all` per frame, in order, after `reset()`, as a build
runs it.

* recall: true faces matched by a found face (boxes IoU >= 0.5, one-to-one, greedy by IoU);
* false positives per frame: found faces matched to no true face;
* alignment error: over matched faces, the mean distance of the five alignment points
  (`five_points`: eye centres, nose tip, mouth corners) from the true ones, divided by the
  true inter-ocular distance;
* frames/s on 2 cores: two worker processes, one OpenCV thread each, detecting frames of
  different videos at once; frames over the detection seconds of the busiest worker.

Boxes are compared as the bounding boxes of the 68 landmarks, found and true: each backend's
own box follows its own convention (Haar's is ~1.3x HOG's), while the landmarks are what a
record is cut from.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time

import cv2
import numpy as np

from data_prep import awkward, demo
from mat_jax.faces import frames as frames_lib
from mat_jax.faces.detect import BACKENDS, FaceFinder, five_points
from mat_jax.faces.track import iou


def match(found: list[np.ndarray], truth: list[np.ndarray], min_iou: float = 0.5) -> list[tuple[int, int]]:
    """(found index, true index) pairs of landmark sets whose boxes overlap by `min_iou`,
    each face used once, best overlaps first."""
    fb, tb = [awkward.landmark_box(lm) for lm in found], [awkward.landmark_box(lm) for lm in truth]
    pairs = sorted(((iou(f, t), i, j) for i, f in enumerate(fb) for j, t in enumerate(tb)), reverse=True)
    used_f, used_t, out = set(), set(), []
    for v, i, j in pairs:
        if v >= min_iou and i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


def alignment_error(lm: np.ndarray, truth: np.ndarray) -> float:
    """Mean five-point distance over the true inter-ocular distance."""
    a, b = five_points(lm), five_points(truth)
    return float(np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(b[0] - b[1]))


def videos(work: str, frames: int = 16, demo_videos: tuple[int, int, int] = (2, 2, 2)) -> list[tuple[str, str, str]]:
    """Writes the awkward cases and a 640x480 demo tree under `work` (kept if already there);
    returns (group, video path, truth path) for every video. Truth files are .json (awkward)
    or NAME@landmarks.npz (a demo video's key in the tree's landmarks.npz)."""
    out = []
    adir = os.path.join(work, "awkward")
    if not all(os.path.exists(os.path.join(adir, f"{c}.json")) for c in awkward.CASES):
        awkward.write(adir, n_frames=frames)
    for c in awkward.CASES:
        out.append((c, os.path.join(adir, f"{c}.mp4"), os.path.join(adir, f"{c}.json")))
    tree = os.path.join(work, "demo")
    if demo.existing_tree(tree) is None:
        demo.make_demo_tree(tree, videos_per_split=demo_videos, frames=frames, size=awkward.SIZE,
                            qualities=("c23",), celebdf=(0, 0, 0), log=lambda *_: None)
    ff = os.path.join(tree, "ffpp")
    with np.load(os.path.join(tree, "landmarks.npz")) as z:
        keys = sorted(z.files)
    for key in keys:
        kind, name = key.split("/")
        sub = "original_sequences/youtube" if kind == "original" else f"manipulated_sequences/{kind}"
        out.append(("demo", os.path.join(ff, sub, "c23", "videos", f"{name}.mp4"),
                    os.path.join(tree, "landmarks.npz") + "@" + key))
    return out


def _truth(path: str) -> list[list[np.ndarray]]:
    if "@" in path:
        file, key = path.split("@")
        with np.load(file) as z:
            return [[lm] for lm in z[key]]
    return awkward.read_truth(path)


_FINDERS: dict[str, FaceFinder] = {}


def _worker_init(backend: str) -> None:
    cv2.setNumThreads(1)  # one core per worker: the measurement is of two cores
    _FINDERS[backend] = FaceFinder(backend)  # loaded before the clock runs


def _run_video(backend: str, video: str, truth_path: str) -> dict:
    """Detects every frame of one video; returns its counts, errors and detection seconds."""
    finder = _FINDERS.get(backend) or _FINDERS.setdefault(backend, FaceFinder(backend))
    n = frames_lib.count_frames(video)
    decoded = frames_lib.read_at(video, list(range(n)))
    truth = _truth(truth_path)
    finder.reset()
    seconds, tp, fp, faces, errors = 0.0, 0, 0, 0, []
    for i in sorted(decoded):
        t0 = time.perf_counter()
        found = finder.find_all(decoded[i])
        seconds += time.perf_counter() - t0
        true = truth[i] if i < len(truth) else []
        pairs = match([f.landmarks for f in found], true)
        tp, fp, faces = tp + len(pairs), fp + len(found) - len(pairs), faces + len(true)
        errors += [alignment_error(found[a].landmarks, true[b]) for a, b in pairs]
    return {"frames": len(decoded), "faces": faces, "tp": tp, "fp": fp, "errors": errors,
            "seconds": seconds, "pid": os.getpid()}


def compare(work: str, backends=BACKENDS, frames: int = 16, workers: int = 2, log=print) -> dict:
    """{backend: {group: metrics}} over the videos of `videos(work, frames)`; groups are the
    awkward cases, "demo", and "all awkward" (the faces of every awkward case together)."""
    vids = videos(work, frames)
    ctx = multiprocessing.get_context("spawn")  # no dlib/OpenCV state inherited across fork
    result = {}
    for backend in backends:
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_init, initargs=(backend,)
        ) as pool:
            runs = list(pool.map(_run_video, [backend] * len(vids), [v[1] for v in vids], [v[2] for v in vids]))
        groups: dict[str, list[dict]] = {}
        for (group, _, _), r in zip(vids, runs):
            groups.setdefault(group, []).append(r)
            if group != "demo":
                groups.setdefault("all awkward", []).append(r)
        per_pid: dict[int, float] = {}
        for r in runs:
            per_pid[r["pid"]] = per_pid.get(r["pid"], 0.0) + r["seconds"]
        total = sum(r["frames"] for r in runs)
        result[backend] = {g: _summary(rs) for g, rs in groups.items()}
        result[backend]["frames_per_second"] = round(total / max(per_pid.values()), 1)
        log(f"{backend}: {result[backend]['frames_per_second']} frames/s on {workers} workers; "
            + "; ".join(f"{g} recall {m['recall']}" for g, m in result[backend].items() if isinstance(m, dict)))
    return result


def _summary(runs: list[dict]) -> dict:
    frames = sum(r["frames"] for r in runs)
    faces, tp, fp = (sum(r[k] for r in runs) for k in ("faces", "tp", "fp"))
    errors = [e for r in runs for e in r["errors"]]
    return {
        "frames": frames,
        "faces": faces,
        "recall": round(tp / faces, 3) if faces else None,
        "false_positives_per_frame": round(fp / frames, 3),
        "alignment_error": round(float(np.mean(errors)), 4) if errors else None,
    }


def _cell(metrics: dict, group: str, key: str) -> str:
    v = metrics.get(group, {}).get(key)
    return "-" if v is None else f"{v:g}"


def table(result: dict) -> str:
    """A Markdown table of `compare`'s result: recall per case, false positives, alignment, speed."""
    groups = [c for c in awkward.CASES if c != "none"] + ["demo"]
    head = (["detector"] + [f"recall {g}" for g in groups] + ["FP/frame none", "FP/frame demo"]
            + ["align err awkward", "align err demo", "frames/s (2 cores)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for backend, r in result.items():
        row = ([backend] + [_cell(r, g, "recall") for g in groups]
               + [_cell(r, "none", "false_positives_per_frame"), _cell(r, "demo", "false_positives_per_frame")]
               + [_cell(r, "all awkward", "alignment_error"), _cell(r, "demo", "alignment_error"),
                  f"{r['frames_per_second']:g}"])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
