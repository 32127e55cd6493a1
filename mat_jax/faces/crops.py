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
    """The faces of one video's sampled frames, in order; frames without a face are left out.

    Landmarks come from `reused` where it has the frame, else from `finder`, which is reset
    first: it tracks the face size from frame to frame, so the same frames in the same order
    give the same detections in `build` and in `predict`.
    """
    reused = reused or {}
    finder.reset()
    out = []
    for i in indices:
        lm, box = reused.get(i), None
        if lm is None:
            face = finder.find(frames[i])
            if face is None:
                continue
            lm, box = face.landmarks, face.box
        image, lm_crop, m = face_crop(frames[i], lm, settings)
        out.append(FaceCrop(i, image, lm_crop, np.asarray(lm, np.float32), m, box))
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
