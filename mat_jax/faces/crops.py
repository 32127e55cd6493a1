"""Sampled frames -> detected, aligned and encoded face crops: the bytes a record's `image` holds.

`data_prep` runs `face_crops` on every video it prepares, and `mat_jax.predict` on a new
video with the `Settings` read back from the records' summary, so a deployed detector sees
exactly the pixels evaluation saw.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from mat_jax.faces import align as align_lib
from mat_jax.faces import track as track_lib
from mat_jax.faces.detect import FaceFinder
from mat_jax.faces.settings import Settings


@dataclasses.dataclass
class FaceCrop:
    """One sampled frame's face as it goes into a record."""

    index: int  # frame index in the video
    image: bytes  # the encoded aligned crop, the record's `image`
    landmarks: np.ndarray  # (68, 2) in crop pixels
    frame_landmarks: np.ndarray  # (68, 2) in frame pixels
    matrix: np.ndarray  # 2x3 frame -> crop
    box: tuple[float, float, float, float] | None  # detector box; None when landmarks were reused
    track_id: int = 0  # the person (mat_jax.faces.track) within the video


def face_crop(
    frame: np.ndarray, lm68: np.ndarray, settings: Settings
) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(encoded crop, landmarks in crop pixels, 2x3 matrix): a whole RGB frame and its face's
    68 landmarks -> the bytes a record stores, under the recipe and encoding of `settings`."""
    crop, lm_crop, m = align_lib.align(frame, lm68, settings.crop_recipe())
    return encode_image(crop, settings), lm_crop, m


def face_crops(
    indices: list[int],
    frames: dict[int, np.ndarray],
    settings: Settings,
    finder: FaceFinder,
    reused: dict[int, np.ndarray] | None = None,
) -> list[FaceCrop]:
    """The faces of one video's sampled frames that belong to a kept track, in (frame, track)
    order; frames without such a face are left out.

    Every face `finder` finds is linked into tracks (`mat_jax.faces.track`, under
    `settings.track_rules()`); faces of tracks too short or too small are dropped. Where
    `reused` has a frame's landmarks (a fake taking its source real video's), that face is the
    video's one track, 0, with no detection. `finder` is reset first: it carries the face size
    from frame to frame, so the same frames in the same order give the same detections in
    `build` and in `predict`.
    """
    reused = reused or {}
    finder.reset()
    per_frame, found = [], {}
    for i in indices:
        if i in reused:
            continue
        faces = finder.find_all(frames[i])
        per_frame.append((i, faces))
    rules = settings.track_rules()
    for t in track_lib.keep(track_lib.link(per_frame, rules), len(per_frame), rules):
        for i, face in t.items:
            found[(i, t.track_id)] = (face.landmarks, face.box)
    for i, lm in reused.items():
        if i in frames:
            found[(i, 0)] = (lm, None)
    out = []
    for (i, track_id) in sorted(found):
        lm, box = found[(i, track_id)]
        image, lm_crop, m = face_crop(frames[i], lm, settings)
        out.append(FaceCrop(i, image, lm_crop, np.asarray(lm, np.float32), m, box, track_id))
    return out


def tracks_of(crops: list[FaceCrop]) -> dict[int, list[FaceCrop]]:
    """A video's crops by track id, each track in frame order."""
    out: dict[int, list[FaceCrop]] = {}
    for c in crops:
        out.setdefault(c.track_id, []).append(c)
    return out


def encode_image(rgb: np.ndarray, settings: Settings) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if settings.image_format == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
    if not ok:
        raise RuntimeError("image encoding failed")
    return buf.tobytes()
