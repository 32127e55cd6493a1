"""Runs a build's pending work in worker processes, with a progress bar.

`run_jobs` runs any module-level `job(item, state) -> [VideoResult, ...]` over batches of
items, a batch finished before the next begins: the clean build passes `process_video` with
its reals before the fakes that reuse their landmarks, `data_prep.robustness` its perturbed
copies. Each worker process holds its own settings, face finder and work folder (`_STATE`).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence

import cv2
from tqdm import tqdm

from data_prep.results import VideoResult
from data_prep.shards import WorkDir
from data_prep.sources import Video
from data_prep.worker import process
from mat_jax.faces.detect import FaceFinder
from mat_jax.faces.settings import Settings

_STATE: dict = {}  # per worker process: settings, face finder, work folder


def _init_worker(settings: Settings, out: str) -> None:
    cv2.setNumThreads(1)  # parallelism comes from the processes
    # Broken videos are expected and land in the report; FFmpeg's and OpenCV's own console
    # messages about them would only garble the progress bar.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    _STATE["settings"] = settings
    _STATE["finder"] = FaceFinder(settings.detector, settings.detect_size, settings.min_face)
    _STATE["work"] = WorkDir(out)


def process_video(video: Video, state: dict) -> list[VideoResult]:
    """The build's job: one video through `worker.process` (reals first, then the fakes that reuse
    their landmarks, as two batches)."""
    return [process(video, state["settings"], state["finder"], state["work"])]


def _call(job: Callable, item) -> list[VideoResult]:
    return job(item, _STATE)


def run_jobs(
    batches: Sequence[list],
    job: Callable,
    settings: Settings,
    out: str,
    workers: int,
    progress: bool,
    done: int,
    total: int,
    desc: str,
    unit: str = "video",
) -> list[VideoResult]:
    """`job(item, state)` for every item, a batch finished before the next begins; `state` is
    the worker's (settings, face finder, work folder of `out`). Returns the results in
    completion order; the bar counts results, `done` of `total` finished before."""
    results: list[VideoResult] = []
    bar = tqdm(total=total, initial=done, unit=unit, disable=not progress, dynamic_ncols=True, desc=desc)
    t0, frames = time.time(), 0

    def note(rs: list[VideoResult]) -> None:
        nonlocal frames
        results.extend(rs)
        frames += sum(r.written for r in rs)
        bar.update(len(rs))
        bar.set_postfix(
            faces=frames,
            fps=f"{frames / max(time.time() - t0, 1e-6):.1f}",
            skipped=sum(x.status == "skipped" for x in results),
            refresh=False,
        )

    try:
        if workers <= 1:
            _init_worker(settings, out)
            for batch in batches:  # reals before the fakes that reuse their landmarks
                for item in batch:
                    note(job(item, _STATE))
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
            with ctx.Pool(workers, initializer=_init_worker, initargs=(settings, out)) as pool:
                for batch in batches:
                    for rs in pool.imap_unordered(functools.partial(_call, job), batch, chunksize=1):
                        note(rs)
    finally:
        bar.close()
    return results
