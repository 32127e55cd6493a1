"""Runs `worker.process` over a build's pending videos, in worker processes, with a progress bar.

Reals come before the fakes that reuse their landmarks (`first`, then `second`); each
worker process holds its own settings, face finder and work folder (`_STATE`).
"""

from __future__ import annotations

import multiprocessing
import os
import time

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


def _run_one(video: Video) -> VideoResult:
    return process(video, _STATE["settings"], _STATE["finder"], _STATE["work"])


def run_videos(
    first: list[Video],
    second: list[Video],
    settings: Settings,
    out: str,
    workers: int,
    progress: bool,
    done: int,
    total: int,
) -> list[VideoResult]:
    """Processes `first`, then `second` (which may reuse landmarks saved by `first`); returns
    the results in completion order. `done` of `total` videos were finished before."""
    results: list[VideoResult] = []
    bar = tqdm(
        total=total,
        initial=done,
        unit="video",
        disable=not progress,
        dynamic_ncols=True,
        desc=f"{settings.dataset} faces",
    )
    t0, frames = time.time(), 0

    def note(r: VideoResult) -> None:
        nonlocal frames
        results.append(r)
        frames += r.written
        bar.update(1)
        bar.set_postfix(
            faces=frames,
            fps=f"{frames / max(time.time() - t0, 1e-6):.1f}",
            skipped=sum(x.status == "skipped" for x in results),
            refresh=False,
        )

    try:
        if workers <= 1:
            _init_worker(settings, out)
            for v in first + second:  # reals before the fakes that reuse their landmarks
                note(_run_one(v))
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
            with ctx.Pool(workers, initializer=_init_worker, initargs=(settings, out)) as pool:
                for batch in (first, second):
                    for r in pool.imap_unordered(_run_one, batch, chunksize=1):
                        note(r)
    finally:
        bar.close()
    return results
