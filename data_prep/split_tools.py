"""Small pieces the video-file readers share (`dfdcp`, `deeperforensics`, `uadfv`, `ffiw`):
which files are videos, FF++'s quality folders, and which split wins when a video or a person
is listed in two."""

from __future__ import annotations

import os

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv")
# When one video (or one person) is listed in two splits it is kept in the first of these it
# has: a leak is fixed by keeping the evaluation clean, never by moving test videos into train.
EVAL_FIRST = ("test", "val", "train")


def videos_in(folder: str) -> list[str]:
    """The video file names directly in `folder`, sorted ([] if it does not exist)."""
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(VIDEO_EXTS))


def quality_dir(parent: str, quality: str) -> str:
    """`<parent>/<quality>`, accepting FF++'s two spellings of the lossless setting."""
    aliases = {"c0": ("c0", "raw"), "raw": ("raw", "c0")}.get(quality, (quality,))
    for q in aliases:
        if os.path.isdir(os.path.join(parent, q)):
            return os.path.join(parent, q)
    return os.path.join(parent, quality)


def eval_first(splits) -> str:
    """The split a video listed in all of `splits` is kept in."""
    return next(s for s in EVAL_FIRST if s in set(splits))


def stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name))[0]
