"""Awkward videos for measuring face detectors, with the true faces of every frame.

    CASES: gray, tiny, profile, two, none

Each case is a short 640x480 H.264 video made from photos shipped in pip packages, moving a
little from frame to frame (shift, zoom, tilt), as the held-out videos that defeated the
default detector did:
* "gray": scikit-image's camera man (a grayscale photo, his face turned to the viewfinder),
  zoomed so the face is ~30% of the frame height, written as a gray H.264 stream;
* "tiny": the astronaut with a ~40 px wide face on a plain grey, slightly noisy background;
* "profile": the astronaut's photo turned ~60 degrees about the vertical axis through her
  face by a perspective warp. It approximates a yaw by the foreshortening and perspective of a
  flat picture turned away; a real profile also hides the far cheek and shows the nose's
  outline, which no warp of a frontal photo gives;
* "two": the astronaut and Grace Hopper side by side, faces ~110 px wide;
* "none": scikit-image's coffee cup, no face at all.

Truth: the 68 dlib landmarks found once on the source photo (HOG; the camera man, whom HOG
misses at its default threshold, by dlib's CNN detector), carried through the same warps as
the pixels. A face's true box is the bounding box of its landmarks; `data_prep.bench`
compares detectors with it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import cv2
import numpy as np

from data_prep.demo_faces import face_photos
from mat_jax.faces import frames as frames_lib
from mat_jax.faces.detect import FaceFinder

CASES = ("gray", "tiny", "profile", "two", "none")
SIZE = (640, 480)


@dataclasses.dataclass
class Case:
    """One awkward video: frames (RGB uint8, or gray for "gray") and the true 68 landmarks
    of each frame's faces (a list of (68, 2) arrays per frame; empty for "none")."""

    name: str
    frames: list[np.ndarray]
    truth: list[list[np.ndarray]]
    gray: bool = False

    def boxes(self, i: int) -> list[tuple[float, float, float, float]]:
        """True boxes of frame `i`: the bounding boxes of its faces' landmarks."""
        return [landmark_box(lm) for lm in self.truth[i]]


def landmark_box(lm: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = np.min(lm, 0), np.max(lm, 0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


@functools.lru_cache(maxsize=1)
def sources() -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The source photos (RGB, except the gray camera man) and their 68 landmarks."""
    import skimage.data  # deferred: scikit-image is slow to import and only this needs it here

    photos = face_photos()
    if "grace_hopper" not in photos:
        raise RuntimeError("the 'two' case needs matplotlib's grace_hopper.jpg sample: pip install matplotlib")
    out = {}
    hog = FaceFinder("dlib")
    for name in ("astronaut", "grace_hopper"):
        hog.reset()
        out[name] = (photos[name], hog.find(photos[name]).landmarks)
    camera = skimage.data.camera()
    face = FaceFinder("cnn").find(camera)
    if face is None:
        raise RuntimeError("dlib's CNN detector found no face on skimage's camera photo; is its model intact?")
    out["camera"] = (camera, face.landmarks)
    out["coffee"] = (skimage.data.coffee(), None)
    return out


def _motion(k: int, n: int, seed: int) -> tuple[float, float, float, float]:
    """(dx, dy, degrees, zoom factor) of frame k of n: a slow, smooth wander."""
    rng = np.random.default_rng(seed)
    ph = rng.uniform(0, 2 * np.pi, 4)
    t = 2 * np.pi * k / max(n, 1)
    return 8 * np.sin(t + ph[0]), 5 * np.sin(t + ph[1]), 2 * np.sin(t + ph[2]), 1 + 0.03 * np.sin(t + ph[3])


def _placement(lm: np.ndarray, width: float, centre, k: int, n: int, seed: int) -> np.ndarray:
    """3x3 matrix putting the face of `lm` at `centre` (frame px) with jaw width `width`."""
    dx, dy, deg, zoom = _motion(k, n, seed)
    c = lm.mean(0)
    scale = width * zoom / float(np.ptp(lm[:, 0]))
    m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), float(deg), scale)
    m[:, 2] += (centre[0] + dx - c[0], centre[1] + dy - c[1])
    return np.vstack([m, [0, 0, 1]])


def _warp(img: np.ndarray, m: np.ndarray, border=cv2.BORDER_REFLECT, value=0) -> np.ndarray:
    return cv2.warpPerspective(img, m, SIZE, flags=cv2.INTER_LINEAR, borderMode=border, borderValue=value)


def _apply(m: np.ndarray, lm: np.ndarray) -> np.ndarray:
    p = np.concatenate([lm, np.ones((len(lm), 1), np.float32)], 1) @ m.T
    return (p[:, :2] / p[:, 2:]).astype(np.float32)


def _yaw(lm: np.ndarray, degrees: float) -> np.ndarray:
    """3x3 perspective matrix turning a flat photo about the vertical line through the face
    centre by `degrees`, as seen by a camera ~1.5 face widths away."""
    c = lm.mean(0)
    half = float(np.ptp(lm[:, 0])) / 2
    f = 3 * half  # focal distance in photo pixels
    a = np.radians(degrees)
    src = np.float32([[c[0] - half, c[1] - half], [c[0] + half, c[1] - half],
                      [c[0] + half, c[1] + half], [c[0] - half, c[1] + half]])
    dst = []
    for x, y in src:
        u = x - c[0]
        z = f + u * np.sin(a)  # depth of the turned point
        dst.append([c[0] + f * u * np.cos(a) / z, c[1] + f * (y - c[1]) / z])
    return cv2.getPerspectiveTransform(src, np.float32(dst))


def make(name: str, n_frames: int = 8, seed: int = 0) -> Case:
    """The frames and truth of one case of CASES."""
    if name not in CASES:
        raise ValueError(f"unknown awkward case {name!r}; choose one of {CASES}")
    src = sources()
    w, h = SIZE
    frames, truth = [], []
    for k in range(n_frames):
        faces = []
        if name == "gray":
            img, lm = src["camera"]
            m = _placement(lm, 0.30 * h * 1.15, (w / 2, h / 2), k, n_frames, seed)
            frame = _warp(img, m)
            faces.append(_apply(m, lm))
        elif name == "tiny":
            img, lm = src["astronaut"]
            m = _placement(lm, 40, (w * 0.4, h * 0.45), k, n_frames, seed)
            frame = _warp(img, m, cv2.BORDER_CONSTANT, (118, 118, 118))
            noise = np.random.default_rng(seed + k).normal(0, 4, frame.shape)
            frame = np.clip(frame + noise, 0, 255).astype(np.uint8)
            faces.append(_apply(m, lm))
        elif name == "profile":
            img, lm = src["astronaut"]
            turn = _yaw(lm, 60)
            turned = _apply(turn, lm)
            m = _placement(turned, 0.30 * h * 0.55, (w / 2, h / 2), k, n_frames, seed) @ turn
            frame = _warp(img, m, cv2.BORDER_CONSTANT, (118, 118, 118))
            faces.append(_apply(m, lm))
        elif name == "two":
            halves = []
            for photo, cx in (("astronaut", 0.27), ("grace_hopper", 0.73)):
                img, lm = src[photo]
                m = _placement(lm, 110, (w * cx, h * 0.5), k, n_frames, seed + len(halves))
                halves.append(_warp(img, m))
                faces.append(_apply(m, lm))
            frame = np.concatenate([halves[0][:, : w // 2], halves[1][:, w // 2 :]], 1)
        else:
            img, _ = src["coffee"]
            cover = max(w / img.shape[1], h / img.shape[0]) * 1.1
            dx, dy, deg, zoom = _motion(k, n_frames, seed)
            m = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), float(deg), cover * zoom)
            m[:, 2] += (w / 2 + dx - img.shape[1] / 2, h / 2 + dy - img.shape[0] / 2)
            frame = _warp(img, np.vstack([m, [0, 0, 1]]))
        frames.append(np.ascontiguousarray(frame))
        truth.append(faces)
    return Case(name, frames, truth, gray=name == "gray")


def write(out: str, cases=CASES, n_frames: int = 8, seed: int = 0, crf: int = 23) -> dict[str, str]:
    """Writes each case as out/NAME.mp4 with out/NAME.json (true landmarks per frame);
    returns {name: video path}."""
    paths = {}
    for name in cases:
        case = make(name, n_frames, seed)
        path = os.path.join(out, f"{name}.mp4")
        frames_lib.write_video(path, case.frames, crf=crf, gray=case.gray)
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"truth": [[lm.tolist() for lm in faces] for faces in case.truth]}, f)
        paths[name] = path
    return paths


def read(out: str, name: str) -> Case:
    """A case written by `write`, decoded from its video (compression artefacts included)."""
    path = os.path.join(out, f"{name}.mp4")
    n = frames_lib.count_frames(path)
    decoded = frames_lib.read_at(path, list(range(n)))
    truth = read_truth(os.path.join(out, f"{name}.json"))
    return Case(name, [decoded[i] for i in sorted(decoded)], truth[: len(decoded)], gray=name == "gray")


def read_truth(path: str) -> list[list[np.ndarray]]:
    """The true landmarks per frame from a case's .json written by `write`."""
    with open(path) as f:
        return [[np.asarray(lm, np.float32) for lm in faces] for faces in json.load(f)["truth"]]
