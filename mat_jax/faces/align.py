"""Similarity alignment of a face to a 5-point template (docs/data.md, "Face detection and alignment").

Recipes:
* "mat": the official MAT crops: template at 320 px scaled to an aligned 384 px image, then
  the loader's centre crop to 380; bicubic; black border.
* "bench": DeepfakeBench-comparable: ArcFace 112 px template, margin scale 1.3, 256 px.

The margin scale s shrinks the template towards the centre: template point t (in [0, 1]) goes
to (t*A + A*(s-1)/2)/s in an A-pixel aligned image, so s = 1.3 shows 30 % more context.
An output size other than the recipe's keeps the recipe's A/out ratio (384/380 for "mat").
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from mat_jax.faces.detect import five_points

_MAT_320 = (
    np.array([[122.5, 141.25], [197.5, 141.25], [160.0, 178.75], [137.5, 225.25], [182.5, 225.25]]) / 320
)
_ARCFACE_112 = (
    np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
    )
    / 112
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to cut an aligned crop: template (5x2 in [0,1]), margin scale, sizes, interpolation."""

    name: str
    template: tuple[tuple[float, float], ...]
    size: int  # output side
    scale: float = 1.0
    align_ratio: float = 1.0  # aligned image side / output side (then centre-cropped)
    interpolation: int = cv2.INTER_LINEAR

    def with_overrides(self, size: int | None = None, scale: float | None = None) -> Recipe:
        return dataclasses.replace(self, size=size or self.size, scale=scale or self.scale)

    def destination(self) -> np.ndarray:
        """The 5 template points in output-crop pixels."""
        a = round(self.size * self.align_ratio)
        t = np.asarray(self.template, np.float64)
        return (t * a + a * (self.scale - 1) / 2) / self.scale - (a - self.size) / 2


RECIPES = {
    "mat": Recipe("mat", tuple(map(tuple, _MAT_320)), 380, 1.0, 384 / 380, cv2.INTER_CUBIC),
    "bench": Recipe("bench", tuple(map(tuple, _ARCFACE_112)), 256, 1.3, 1.0, cv2.INTER_LINEAR),
}


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst.

    Umeyama's closed form; returns the 2x3 matrix for `cv2.warpAffine`.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # no reflections
        e[1, 1] = -1
    rot = u @ e @ vt
    var = (s**2).sum() / len(src)
    c = float(np.trace(np.diag(sig) @ e) / var) if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = c * rot
    m[:, 2] = mu_d - c * rot @ mu_s
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Applies a 2x3 affine matrix to (K, 2) points."""
    pts = np.asarray(pts, np.float64)
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


def alignment_matrix(lm68: np.ndarray, recipe: Recipe) -> np.ndarray:
    """The frame -> crop matrix that puts the face's 5 points on the recipe's template."""
    return fit_similarity(five_points(lm68), recipe.destination())


def warp(image: np.ndarray, m: np.ndarray, recipe: Recipe, interpolation: int | None = None) -> np.ndarray:
    """The `recipe.size` square crop of `image` under matrix `m` (black outside the frame)."""
    flags = recipe.interpolation if interpolation is None else interpolation
    return cv2.warpAffine(
        image, m, (recipe.size, recipe.size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def align(image: np.ndarray, lm68: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crop, landmarks in crop pixels, 2x3 matrix) of the face with landmarks `lm68`."""
    m = alignment_matrix(lm68, recipe)
    return warp(image, m, recipe), transform_points(m, lm68), m
