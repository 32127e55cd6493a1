"""Build jobs that fail on purpose, for test_beam: a module of their own, so the child processes
that run them (which import a job's module) do not import a test module and all its imports."""

from __future__ import annotations

import ctypes

from data_prep import run

CRASHING_VIDEO = "original/c23/001"


def crash_on_one(video, state):
    """`run.process_video`, except that it dies on CRASHING_VIDEO as a segfaulting decoder would."""
    if video.video_id == CRASHING_VIDEO:
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return run.process_video(video, state)
