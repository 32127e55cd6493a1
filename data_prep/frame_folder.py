"""A video that is a folder of frame images (DeepfakeBench's `frames/<video>/`, WildDeepfake's
face sequences): its sampled frames, the landmarks and masks given beside them, and what was
wrong with any of them.

The frames are what the dataset kept of a video (DeepfakeBench: 32 aligned face crops), so the
sampling picks among the listed images, and a record's `frame_index` is the frame number the
file is named after (`017.png` -> 17) when every name is a number, else its position.
"""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np

from data_prep.rows import Video
from data_prep.split_tools import stem
from mat_jax.faces import frames as frames_lib

# dlib's 81-point model (DeepfakeBench's) extends the 68-point one: its first 68 are the same.
LANDMARK_COUNTS = (68, 81)
# Face crops fill their image, and detectors miss a face that touches the image border (on
# crops a little narrower than the face: dlib HOG about half, BlazeFace all; both find every
# one inside this border, and BlazeFace not yet inside a quarter of it): detection runs on the
# frame inside a black border this fraction of its longer side wide. The crop is unchanged by
# it, since the aligner's own border outside the frame is black too.
DETECT_PAD = 0.75


@dataclasses.dataclass
class FolderFrames:
    """The usable sampled frames of a frame-folder video (index -> RGB), their given landmarks
    (index -> (68, 2); empty when the video has none, so faces are detected), masks (index ->
    RGB) and the problems met, each "<path>: <why>"."""

    sampled: int
    frames: dict[int, np.ndarray]
    landmarks: dict[int, np.ndarray]
    masks: dict[int, np.ndarray]
    problems: list[str]

    @property
    def indices(self) -> list[int]:
        return sorted(self.frames)


def frame_numbers(paths: tuple[str, ...]) -> list[int]:
    """Each frame's index: the number its file is named after, else its position."""
    stems = [stem(p) for p in paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(len(paths)))


def _image(path: str) -> np.ndarray | None:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _landmarks(path: str) -> tuple[np.ndarray | None, str]:
    if not os.path.isfile(path):
        return None, "no landmark file"
    try:
        lm = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        return None, f"unreadable landmark file ({e})"
    lm = np.asarray(lm)
    if lm.ndim != 2 or lm.shape[1] != 2 or lm.shape[0] not in LANDMARK_COUNTS or not np.isfinite(lm).all():
        return None, f"landmarks of shape {lm.shape} (expected 81x2 or 68x2, finite)"
    lm = lm[:68].astype(np.float32)
    if np.ptp(lm, axis=0).min() < 2:  # all points on one spot: no face to align to
        return None, "degenerate landmarks (all points within 2 px)"
    return lm, ""


def read(video: Video, sampling: frames_lib.Sampling) -> FolderFrames:
    """The sampled frames of `video` (a folder video: `video.frames` non-empty); a frame whose
    image or landmarks cannot be used is left out and named in `problems`."""
    numbers = frame_numbers(video.frames)
    positions = sampling.indices(len(video.frames))
    out = FolderFrames(len(positions), {}, {}, {}, [])
    for pos in positions:
        path, index = video.frames[pos], numbers[pos]
        image = _image(path)
        if image is None:
            why = "missing frame" if not os.path.exists(path) else "unreadable image"
            out.problems.append(f"{path}: {why}")
            continue
        if video.landmarks:
            lm, why = _landmarks(video.landmarks[pos])
            if lm is None:
                out.problems.append(f"{video.landmarks[pos]}: {why}")
                continue
            out.landmarks[index] = lm
        out.frames[index] = image
        mask = _image(video.masks[pos]) if video.masks and video.masks[pos] else None
        if mask is not None:
            out.masks[index] = mask
    return out


def padded(image: np.ndarray) -> tuple[np.ndarray, int]:
    """`image` inside a black border of `DETECT_PAD` of its longer side, and the border width."""
    pad = round(DETECT_PAD * max(image.shape[:2]))
    return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0), pad


def describe(problems: list[str], limit: int = 3) -> str:
    """The first `limit` problems, and how many more."""
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more
