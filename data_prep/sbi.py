"""Self-blended images (Shiohara & Yamasaki, CVPR 2022): a pseudo-fake from one real face.

A real face is blended with a slightly altered copy of itself inside a soft, wobbly mask
around its landmarks, so the only cue left is the blending itself: a colour / sharpness
mismatch and a seam. Restated from the paper (numpy + OpenCV only):

1. two copies of the face, *source* and *target*; one of them gets colour changes (RGB
   shift, hue/saturation/value, brightness/contrast) and one frequency change (nearest
   down-scaling by 2 or 4 and back, or sharpening);
2. the source and the mask are shifted and scaled a little (a geometry mismatch);
3. the mask is the filled hull of the landmarks (all 68 points, the hull with the brows
   pushed up the forehead, or the inner face), deformed elastically, blurred, cut to its
   fully-inside part and blurred again, so its edge is soft and irregular;
4. fake = m * source + (1 - m) * target with m scaled by a random blend ratio.

Use `self_blend(image, landmarks, rng)` for a fresh draw (training augmentation), or
`draw_params(rng)` once and `blend(image, landmarks, params)` per frame for a temporally
stable fake video (the demo tree: one setting per video). All randomness comes from the
numpy Generator; the same params and input give the same output.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

HULLS = ("convex", "extended", "inner")

# Index of each 68-point landmark's mirror image (jaw, brows, nose wings, eyes, lips swap
# sides), so that a flipped face keeps the points' meaning.
MIRROR_68 = np.array(
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30]
    + list(range(35, 30, -1))
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)
FREQUENCY = ("downscale", "sharpen")


@dataclasses.dataclass(frozen=True)
class SbiParams:
    """One draw of every random choice of a self-blend."""

    transform_source: bool  # False: the target (and so the "real" half of a pair) is changed
    rgb_shift: tuple[float, float, float]  # added, in 0-255 units
    hue: float  # degrees
    saturation: float  # factor
    value: float  # factor
    brightness: float  # added, fraction of 255
    contrast: float  # factor around the mean
    frequency: str  # one of FREQUENCY
    downscale: int  # 2 or 4
    sharpen: float  # unsharp-mask amount
    shift: tuple[float, float]  # source/mask translation, fraction of the face region
    zoom: float  # source/mask scale about the region centre
    hull: str  # one of HULLS
    elastic_alpha: float  # px of the mask's working size
    elastic_sigma: float
    elastic_seed: int
    mask_size: tuple[int, int]  # (h, w) working size of the mask
    blur1: int  # odd kernel before the cut to the inside
    blur2: int  # odd kernel after it
    sigma2: float
    ratio: float  # blend ratio


def _odd(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.choice(np.arange(lo, hi + 1, 2)))


def draw_params(rng: np.random.Generator) -> SbiParams:
    """Draws the settings of one self-blend (ranges after the SBI paper and code)."""
    shift = rng.uniform(-20, 20, 3) if rng.random() < 0.3 else np.zeros(3)
    return SbiParams(
        transform_source=bool(rng.random() < 0.5),
        rgb_shift=tuple(float(v) for v in shift),
        hue=float(rng.uniform(-10, 10)),
        saturation=float(rng.uniform(0.85, 1.15)),
        value=float(rng.uniform(0.9, 1.1)),
        brightness=float(rng.uniform(-0.1, 0.1)),
        contrast=float(rng.uniform(0.9, 1.1)),
        frequency=str(rng.choice(FREQUENCY)),
        downscale=int(rng.choice([2, 4])),
        sharpen=float(rng.uniform(0.5, 1.5)),
        shift=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.015, 0.015))),
        zoom=float(rng.uniform(0.95, 1 / 0.95)),
        hull=str(rng.choice(HULLS, p=[0.5, 0.3, 0.2])),
        elastic_alpha=50.0,
        elastic_sigma=7.0,
        elastic_seed=int(rng.integers(2**31)),
        mask_size=(int(rng.integers(192, 257)), int(rng.integers(192, 257))),
        blur1=_odd(rng, 5, 25),
        blur2=_odd(rng, 5, 25),
        sigma2=float(rng.uniform(5, 45)),
        ratio=float(rng.choice([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])),
    )


def hull_points(lm68: np.ndarray, kind: str) -> np.ndarray:
    """The landmark polygon whose hull is the blend region."""
    lm = np.asarray(lm68, np.float32)
    if kind == "convex":
        return lm
    if kind == "inner":
        return lm[17:]  # brows, nose, eyes, mouth: no jaw line
    if kind == "extended":
        # Brows pushed away from the nose base, up the forehead, to cover it as the 81-point
        # model's forehead points would.
        brows = lm[17:27] + 0.4 * (lm[17:27] - lm[33])
        return np.concatenate([lm[:17], brows])
    raise ValueError(f"unknown hull {kind!r}; choose one of {HULLS}")


def _colour(img: np.ndarray, p: SbiParams) -> np.ndarray:
    """Colour change of a float32 RGB image in [0, 255]."""
    img = img + np.asarray(p.rgb_shift, np.float32)
    hsv = cv2.cvtColor(np.clip(img, 0, 255) / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in [0, 1]
    hsv[..., 0] = (hsv[..., 0] + p.hue) % 360
    hsv[..., 1] = np.clip(hsv[..., 1] * p.saturation, 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * p.value, 0, 1)
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    mean = img.mean(axis=(0, 1), keepdims=True)
    return (img - mean) * p.contrast + mean + p.brightness * 255.0


def _frequency(img: np.ndarray, p: SbiParams) -> np.ndarray:
    h, w = img.shape[:2]
    if p.frequency == "downscale":
        small = cv2.resize(
            img, (max(1, w // p.downscale), max(1, h // p.downscale)), interpolation=cv2.INTER_NEAREST
        )
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    blurred = cv2.GaussianBlur(img, (0, 0), 1.0)
    return img + p.sharpen * (img - blurred)


def _transform(img: np.ndarray, p: SbiParams) -> np.ndarray:
    return np.clip(_frequency(_colour(img, p), p), 0, 255)


def _soften(mask: np.ndarray, p: SbiParams) -> np.ndarray:
    """Elastic wobble, blur, cut to the fully-inside part, blur again; at the working size."""
    h, w = mask.shape
    mh, mw = p.mask_size
    m = cv2.resize(mask, (mw, mh), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(p.elastic_seed)
    dx = (
        cv2.GaussianBlur(rng.uniform(-1, 1, (mh, mw)).astype(np.float32), (0, 0), p.elastic_sigma)
        * p.elastic_alpha
    )
    dy = (
        cv2.GaussianBlur(rng.uniform(-1, 1, (mh, mw)).astype(np.float32), (0, 0), p.elastic_sigma)
        * p.elastic_alpha
    )
    gx, gy = np.meshgrid(np.arange(mw, dtype=np.float32), np.arange(mh, dtype=np.float32))
    m = cv2.remap(m, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    m = cv2.GaussianBlur(m, (p.blur1, p.blur1), 0)
    if m.max() <= 0:
        return np.zeros((h, w), np.float32)
    m = m / m.max()
    m = np.where(m >= 1 - 1e-3, 1.0, 0.0).astype(np.float32)  # keep only what the blur left whole
    m = cv2.GaussianBlur(m, (p.blur2, p.blur2), p.sigma2)
    if m.max() > 0:
        m = m / m.max()
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)


def _region(lm: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The face box with room for the shift, the wobble and the blur, clipped to the image."""
    lo, hi = lm.min(0), lm.max(0)
    w, h = hi - lo
    x0, y0 = lo - (0.35 * w, 0.6 * h)
    x1, y1 = hi + (0.35 * w, 0.25 * h)
    return (
        int(max(0, np.floor(x0))),
        int(max(0, np.floor(y0))),
        int(min(shape[1], np.ceil(x1))),
        int(min(shape[0], np.ceil(y1))),
    )


def blend(
    image: np.ndarray, landmarks: np.ndarray, p: SbiParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Self-blends `image` (H, W, 3 uint8 RGB) around its 68 `landmarks` with settings `p`.

    Returns:
      (real, fake, mask): `real` is the target copy (the input itself when the source was the
      one changed), `fake` the blend, `mask` the (H, W) float32 blend weight in [0, 1].
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    lm = np.asarray(landmarks, np.float32).reshape(-1, 2)
    if len(lm) != 68:
        raise ValueError(f"expected 68 landmarks, got {len(lm)}")
    h, w = image.shape[:2]
    x0, y0, x1, y1 = _region(lm, (h, w))
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise ValueError(f"landmarks {lm.min(0)}..{lm.max(0)} leave no face region inside the {w}x{h} image")

    target = image.astype(np.float32)
    if not p.transform_source:
        target = _transform(target, p)
    src = image[y0:y1, x0:x1].astype(np.float32)
    if p.transform_source:
        src = _transform(src, p)

    rh, rw = y1 - y0, x1 - x0
    mask = np.zeros((rh, rw), np.float32)
    pts = hull_points(lm, p.hull) - (x0, y0)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 1.0)
    # The same small shift/zoom of source and mask, so the blended patch sits slightly off.
    m = cv2.getRotationMatrix2D((rw / 2, rh / 2), 0.0, p.zoom)
    m[:, 2] += (p.shift[0] * rw, p.shift[1] * rh)
    src = cv2.warpAffine(src, m, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(mask, m, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = _soften(mask, p) * p.ratio

    fake = target.copy()
    tgt = target[y0:y1, x0:x1]
    fake[y0:y1, x0:x1] = mask[..., None] * src + (1 - mask[..., None]) * tgt
    full = np.zeros((h, w), np.float32)
    full[y0:y1, x0:x1] = mask
    to8 = lambda a: np.clip(np.round(a), 0, 255).astype(np.uint8)
    return (image.copy() if p.transform_source else to8(target)), to8(fake), full


def flip(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip of an image and its 68 landmarks (points re-indexed by `MIRROR_68`)."""
    lm = np.asarray(landmarks, np.float32).reshape(68, 2)
    flipped = lm[MIRROR_68].copy()
    flipped[:, 0] = image.shape[1] - 1 - flipped[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), flipped


def self_blend(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator):
    """`blend` with a fresh draw of settings: (real, fake, mask)."""
    return blend(image, landmarks, draw_params(rng))
