"""Perturbed copies of a prepared eval split: `python -m data_prep.build ... --perturb=SPEC`
(docs/data.md, "Robustness copies").

Each (type, level) of `data_prep.perturb` becomes its own records folder
`OUT/robustness/<TYPE>-<level>/`, an ordinary build output: shards, the tfds description,
summary.json (its settings are the clean build's plus the perturbation, which also stands at
its top level as "perturbation"), report.tsv, and `.work/` while it runs. Resuming is thus
the clean build's: a video's marker in a copy's `.work` says that copy of it is done, and a
finished copy with the same settings is left as it is. One pass over a video makes all of
its pending copies (decoding and face geometry once), with one progress bar for them all.

The copies share the clean split's face tracks: a frame is perturbed whole, then cut with the
geometry of the clean record of the same (video_id, frame_index, track_id), so each perturbed crop is
its clean crop's twin (same landmarks and mask); a frame without a clean record is left out.
A record keeps its landmarks in crop pixels only, which do not determine the frame -> crop
transform, so the worker finds the face again on the clean frame with the clean settings
(deterministic: the same frames give the same detections, which predict relies on too) and
checks it against the record. Equal landmarks give the clean transform itself; otherwise a
similarity fit onto the record's landmarks is used if it reproduces them within
`REFIT_TOLERANCE` px, else the frame is left out (its reason goes to report.tsv). A type that
moves the face (`keeps_geometry=False`; none of the seven) has its faces found on the
perturbed frames instead.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from data_prep import perturb, report
from data_prep.results import VideoResult
from data_prep.run import run_jobs
from data_prep.shards import SettingsMismatch, WorkDir
from data_prep.sources import Video
from data_prep.worker import encode_record
from mat_jax.data import records
from mat_jax.faces import align as align_lib
from mat_jax.faces import frames as frames_lib
from mat_jax.faces.crops import encode_image, face_crops
from mat_jax.faces.settings import Settings

COPIES_DIR = "robustness"
EXACT = 1e-3  # px: landmarks found again equal the record's
REFIT_TOLERANCE = 0.5  # px: the most a refitted transform may miss the record's landmarks by
# Settings a copy may differ from its clean build in: it may take a subset of the splits.
_SPLIT_KEYS = ("splits", "landmark_reuse_splits")


@dataclasses.dataclass
class Task:
    """One video and the copies of it still to make; `faces`: its clean records,
    (frame index, track id) -> (landmarks in crop pixels, mask, label)."""

    video: Video
    faces: dict[tuple[int, int], tuple[np.ndarray, bytes, int]]
    copies: list[tuple[str, int]]
    out: str


def copy_folder(out: str, name: str, level: int) -> str:
    """`OUT/robustness/<TYPE>-<level>`."""
    return os.path.join(out, COPIES_DIR, perturb.copy_name(name, level))


def _check_clean(out: str, clean: dict, ident: dict) -> None:
    diff = {
        k: (clean.get(k), ident.get(k))
        for k in sorted(set(clean) | set(ident))
        if k not in _SPLIT_KEYS and clean.get(k) != ident.get(k)
    }
    if diff:
        raise SettingsMismatch(
            f"the clean build in {out} was made with other settings ({diff}, as (clean, now)): run --perturb "
            "with the options of the clean build"
        )
    missing = [s for s in ident["splits"] if s not in clean["splits"]]
    reused = [s for s in ident["splits"] if s in clean["landmark_reuse_splits"]]
    if missing or reused:
        raise ValueError(
            f"perturbed copies are made of the clean build's evaluation splits; {out} has "
            f"{[s for s in clean['splits'] if s not in clean['landmark_reuse_splits']]} "
            f"(asked for {list(ident['splits'])}): pass --splits=test, say"
        )


def _clean_faces(out: str, clean_summary: dict, splits) -> dict[str, dict[tuple[int, int], tuple]]:
    """video_id -> (frame_index, track_id) -> (crop landmarks, mask, label) of the clean records."""
    faces: dict[str, dict[tuple[int, int], tuple]] = {}
    for split in splits:
        for name in clean_summary["shards"].get(split, []):
            for raw in records.iter_serialized(os.path.join(out, name)):
                r = records.decode(raw)
                faces.setdefault(r.video_id, {})[(r.frame_index, r.track_id)] = (r.landmarks, r.mask, r.label)
    return faces


def prepare(
    dataset: str,
    out: str,
    ident: dict,
    settings: Settings,
    spec: str,
    videos: list[Video],
    *,
    workers: int = 1,
    num_shards: int = 0,
    progress: bool = True,
    keep_work: bool = False,
    log=print,
) -> dict:
    """Makes (or resumes, or confirms) the copies `spec` (`perturb.parse`) of the clean build
    in `out`, made with `ident` (`settings` plus tool version and limit) from `videos`;
    returns {copy name: its summary}."""
    wanted = perturb.parse(spec)
    clean = records.load_summary(out)
    if clean is None:
        raise ValueError(
            f"{out} holds no finished clean build: run the same command without --perturb first "
            "(the perturbed copies are cut with its faces)"
        )
    _check_clean(out, clean["settings"], ident)
    summaries, pending = {}, {}
    for name, level in wanted:
        folder = copy_folder(out, name, level)
        c_ident = {**ident, "perturbation": perturb.get(name).describe(level)}
        done = records.load_summary(folder)
        if done is not None and not WorkDir(folder).exists():
            if done.get("settings") != c_ident:
                raise SettingsMismatch(
                    f"{folder} holds a finished copy with other settings; delete it to remake it"
                )
            summaries[perturb.copy_name(name, level)] = done
        else:
            pending[(name, level)] = (folder, c_ident)
    if not pending:
        log(f"{len(wanted)} perturbed copies in {os.path.join(out, COPIES_DIR)} already prepared; nothing to do")
        return summaries

    faces = _clean_faces(out, clean, ident["splits"])
    works = {k: WorkDir(folder) for k, (folder, _) in pending.items()}
    for k, w in works.items():
        w.open(pending[k][1])
    tasks, done, new_keys = [], 0, {k: [] for k in works}
    for v in videos:
        todo = [k for k, w in works.items() if w.result(v.key) is None]
        done += len(works) - len(todo)
        for k in todo:
            new_keys[k].append(v.key)
        if todo and v.video_id in faces:
            tasks.append(Task(v, faces[v.video_id], todo, out))
        elif todo:  # no face in the clean build: nothing to cut
            for k in todo:
                r = VideoResult.of(v)
                r.reason = "no clean record (the clean build found no face in it; see its report.tsv)"
                works[k].write_result(r)
            done += len(todo)
    t0 = time.time()
    run_jobs(
        [tasks], _perturb_video, settings, out, workers, progress, done, len(videos) * len(works),
        f"{dataset} {len(works)} perturbed copies", unit="copy",
    )  # fmt: skip
    t1 = time.time()
    log(f"perturbed copies of {out} in {os.path.join(out, COPIES_DIR)}:")
    for k, (folder, c_ident) in pending.items():
        summaries[perturb.copy_name(*k)] = _finish(
            dataset, folder, c_ident, works[k], videos, new_keys[k], num_shards, keep_work, t1 - t0, log
        )
    return summaries


def _finish(dataset, folder, c_ident, work, videos, new_keys, num_shards, keep_work, seconds, log) -> dict:
    """Merges one copy, writes its metadata, report and summary; returns the summary."""
    results = [work.result(v.key) for v in videos]
    p = c_ident["perturbation"]
    summary = report.finish(
        folder, dataset, work, results, c_ident, [work.result(k) for k in new_keys], num_shards,
        process_seconds=seconds,  # shared by the copies made in this run
        keep_work=keep_work, extra={"perturbation": p},
        note=f" Perturbed with {p['type']} level {p['level']} ({p['title']}, {p['params']}) of {p['source']}.",
    )
    faces = sum(c["total"] for c in summary["counts"].values())
    v = {s: sum(x[s] for x in summary["videos"].values()) for s in ("ok", "partial", "skipped")}
    log(f"  {os.path.basename(folder)}: {faces} faces; videos: {v['ok']} ok, {v['partial']} partial, {v['skipped']} skipped")
    return summary


# --- in the worker processes ------------------------------------------------------------------


def _clean_geometry(indices, frames, faces, settings, finder) -> tuple[dict[int, np.ndarray], list[float]]:
    """The frame -> crop matrix of each clean face, found again on the clean frames; and, per
    clean face not reproduced, how far off it was (px; inf: no face found)."""
    crops = {(c.index, c.track_id): c for c in face_crops(indices, frames, settings, finder)}
    matrices, missed = {}, []
    for i, (lm, *_) in sorted(faces.items()):
        c = crops.get(i)
        if c is None or lm is None:
            missed.append(float("inf"))
        elif np.abs(c.landmarks - lm).max() <= EXACT:
            matrices[i] = c.matrix
        else:
            m = align_lib.fit_similarity(c.frame_landmarks, lm)
            err = float(np.abs(align_lib.transform_points(m, c.frame_landmarks) - lm).max())
            if err <= REFIT_TOLERANCE:
                matrices[i] = m
            else:
                missed.append(err)
    return matrices, missed


def _copy(task: Task, name: str, level: int, indices, frames, matrices, settings, finder) -> list[bytes]:
    """The serialised records of one perturbed copy of the task's video, in frame order."""
    p, v = perturb.get(name), task.video
    if not p.keeps_geometry:
        moved = p.apply_video(v.path, frames, level, v.key)
        return [
            encode_record(v, c.index, c.image, c.landmarks, b"", c.track_id,
                          task.faces.get((c.index, c.track_id), (None, b"", v.label))[2])
            for c in face_crops(sorted(moved), moved, settings, finder)
        ]
    if not matrices:
        return []
    perturbed = p.apply_video(v.path, {i: frames[i] for i, _ in matrices}, level, v.key)
    recipe = settings.crop_recipe()
    out = []
    for i, t in sorted(k for k in matrices if k[0] in perturbed):
        image = encode_image(align_lib.warp(perturbed[i], matrices[(i, t)], recipe), settings)
        lm, mask, label = task.faces[(i, t)]
        out.append(encode_record(v, i, image, lm, mask, t, label))
    return out


def _perturb_video(task: Task, state: dict) -> list[VideoResult]:
    """Makes every pending copy of one video: writes each copy's part and marker; never raises."""
    settings, finder, v = state["settings"], state["finder"], task.video
    results = {k: VideoResult.of(v) for k in task.copies}
    try:
        indices, frames = frames_lib.read_sampled(v.path, settings.sampling(v.split))
        matrices, missed = _clean_geometry(indices, frames, task.faces, settings, finder)
    except Exception as e:  # noqa: BLE001 - one bad video must not stop the copies
        for r in results.values():
            r.reason = (
                str(e) if isinstance(e, frames_lib.VideoError) else f"unexpected {type(e).__name__}: {e}"
            )
        indices = None
    for (name, level), r in results.items():
        work = WorkDir(copy_folder(task.out, name, level))
        if indices is not None:
            try:
                serialized = _copy(task, name, level, indices, frames, matrices, settings, finder)
            except Exception as e:  # noqa: BLE001
                serialized, r.reason = [], f"{type(e).__name__}: {e}"
            r.sampled, r.decoded_frames = len(indices), max(indices) + 1
            if serialized:
                r.part_bytes, r.written = work.write_part(v.key, serialized), len(serialized)
                r.status = "ok" if r.written == r.sampled else "partial"
            if r.written < r.sampled and not r.reason:
                r.reason = _why(len(indices), r.written, len(indices) - len(task.faces), missed)
        work.write_result(r)
    return list(results.values())


def _why(sampled: int, written: int, no_record: int, missed: list[float]) -> str:
    parts = []
    if no_record:
        parts.append(
            f"{no_record} of {sampled} sampled frames have no clean record (no face in the clean build)"
        )
    if missed:
        worst = max(missed)
        parts.append(
            f"{len(missed)} clean faces not found again on the clean frames "
            f"({'no face' if worst == float('inf') else f'landmarks {worst:.2f} px off'}: has the face "
            "library changed since the clean build? rebuild it)"
        )
    rest = sampled - written - no_record - len(missed)
    if rest > 0:
        parts.append(f"{rest} perturbed frames could not be decoded or had no face")
    return "; ".join(parts) + " (those frames are left out)"
