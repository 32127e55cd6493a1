"""The demo's synthetic face videos: identities from shipped portraits, moving renders, fakes.

Real videos: each is its own "identity", a variant of a shipped portrait (scikit-image's
astronaut, matplotlib's Grace Hopper when matplotlib is installed) with its own colour,
mirroring and face shape, moving smoothly (shift, rotation, zoom) over the frame. Fakes:
every frame of a real video self-blended (`data_prep.sbi`) with one setting per video, the
source copy changed, so outside the blend mask the fake equals its real video, as an FF++
fake shares its target's background; settings whose blend is nearly invisible at low
resolution, or glaring, are drawn again (`fake_params`), so the demo is learnable by a small
CPU model but not trivial. `data_prep.demo` lays these videos out as an FF++ tree.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from data_prep import sbi
from mat_jax.faces.detect import FaceFinder


def face_photos() -> dict[str, np.ndarray]:
    """Real face photos shipped inside installed pip packages (RGB uint8)."""
    import skimage.data  # deferred: scikit-image takes a while to import and only the demo needs it

    photos = {"astronaut": skimage.data.astronaut()}
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            data = np.frombuffer(f.read(), np.uint8)
        photos["grace_hopper"] = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    except (ImportError, OSError, ValueError):
        pass  # matplotlib is optional: the astronaut alone still gives varied identities
    return photos


@dataclasses.dataclass
class Identity:
    """A portrait variant: the image and its 68 landmarks."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    info: dict


def photo_landmarks(photo: np.ndarray, finder: FaceFinder) -> np.ndarray:
    """68 landmarks of a shipped portrait (HOG at full resolution, the one clear face)."""
    finder.reset()
    face = finder.find(photo)
    if face is None:
        raise RuntimeError("no face found in a shipped portrait; is the dlib model intact?")
    return face.landmarks


def make_identity(
    photo_name: str, photo: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
) -> Identity:
    """A new-looking person from a photo: mirroring, skin/hair colour, contrast, face shape.

    Landmarks follow the geometric changes analytically (detecting again on a recoloured
    portrait can pick a badge or patch instead of the face).
    """
    info = {
        "photo": photo_name,
        "mirror": bool(rng.random() < 0.5),
        "hue": float(rng.uniform(-12, 12)),
        "saturation": float(rng.uniform(0.75, 1.25)),
        "gamma": float(rng.uniform(0.8, 1.25)),
        "tint": [float(v) for v in rng.uniform(0.92, 1.08, 3)],
        "stretch": float(rng.uniform(0.9, 1.1)),
    }
    img, lm = photo, np.asarray(landmarks, np.float32)
    if info["mirror"]:
        img, lm = sbi.flip(img, lm)
    f = img.astype(np.float32) / 255.0
    hsv = cv2.cvtColor(f, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + info["hue"]) % 360
    hsv[..., 1] = np.clip(hsv[..., 1] * info["saturation"], 0, 1)
    f = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) ** info["gamma"] * np.asarray(info["tint"], np.float32)
    img = np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    new_w = round(w * info["stretch"])
    img = cv2.resize(img, (new_w, h), interpolation=cv2.INTER_AREA)
    lm = lm.copy()
    lm[:, 0] = (lm[:, 0] + 0.5) * new_w / w - 0.5
    return Identity(photo_name, np.ascontiguousarray(img), lm, info)


def render(
    ident: Identity,
    n_frames: int,
    size: tuple[int, int],
    rng: np.random.Generator,
    face_frac: tuple[float, float] = (0.36, 0.46),
    background: int | None = None,
):
    """Frames of `ident` moving smoothly, and the 68 landmarks of every frame.

    Args:
      size: (width, height) of the frames.
      face_frac: range of the face width (jaw to jaw) as a fraction of the frame height.
      background: grey level around the portrait; None mirrors the portrait at its edges,
        which at small scales repeats the face (fine for big faces, not for small ones).
    """
    w, h = size
    lm = ident.landmarks
    centre = lm.mean(0)
    face_w = float(lm[:, 0].max() - lm[:, 0].min())
    base = rng.uniform(*face_frac) * h / face_w
    t = np.linspace(0, 1, n_frames)
    cyc = rng.uniform(0.5, 1.5, 4)
    ph = rng.uniform(0, 2 * np.pi, 4)
    amp = (
        rng.uniform(0.03, 0.07) * w,
        rng.uniform(0.02, 0.05) * h,
        rng.uniform(2, 7),
        rng.uniform(0.02, 0.06),
    )
    offset = (rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.05, 0.05) * h)
    frames, lms = [], []
    for k in range(n_frames):
        wave = np.sin(2 * np.pi * cyc * t[k] + ph)
        tx, ty = offset[0] + amp[0] * wave[0], offset[1] + amp[1] * wave[1]
        angle, zoom = amp[2] * wave[2], base * (1 + amp[3] * wave[3])
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, zoom)
        m[:, 2] += (w / 2 + tx - centre[0], h / 2 + ty - centre[1])
        border = (cv2.BORDER_REFLECT, 0) if background is None else (cv2.BORDER_CONSTANT, (background,) * 3)
        frames.append(
            cv2.warpAffine(
                ident.image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border[0], borderValue=border[1]
            )
        )
        lms.append((lm @ m[:, :2].T + m[:, 2]).astype(np.float32))
    return frames, np.stack(lms)


def sbi_video(frames, lms, params: sbi.SbiParams):
    """Fake frames and blend masks (uint8) of a real video under one SBI setting."""
    fakes, masks = [], []
    for f, lm in zip(frames, lms):
        _, fake, mask = sbi.blend(f, lm, params)
        fakes.append(fake)
        masks.append(np.repeat((mask * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2))
    return fakes, masks


VISIBILITY = (8.0, 30.0)  # accepted range of `visibility`, grey levels


def visibility(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> float:
    """How visible a blend is at low resolution: the mask-weighted mean absolute difference
    (grey levels per channel) between fake and real at a quarter of the size."""

    def small(a):
        return cv2.resize(a, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA).astype(np.float32)

    m = small(mask)
    return float((np.abs(small(fake) - small(real)).mean(-1) * m).sum() / max(m.sum(), 1e-6))


def fake_params(
    rng: np.random.Generator, frame: np.ndarray, landmarks: np.ndarray
) -> tuple[sbi.SbiParams, float]:
    """An SBI setting for a demo fake video, and its visibility on the video's first frame.

    The source copy is the changed one, so the fake's outside equals its real video. Draws
    whose blend would be nearly invisible once downscaled and compressed (the 0.25 blend
    ratio, faint colour changes), or glaring, are drawn again, so that a small detector at
    64-128 px can learn the demo yet has to look at the face.
    """
    for _ in range(100):
        p = dataclasses.replace(
            sbi.draw_params(rng), transform_source=True, ratio=float(rng.choice([0.5, 0.75, 1.0]))
        )
        _, fake, mask = sbi.blend(frame, landmarks, p)
        v = visibility(frame, fake, mask)
        if VISIBILITY[0] <= v <= VISIBILITY[1]:
            return p, v
    raise RuntimeError(f"no SBI draw within visibility {VISIBILITY} in 100 tries; is the face tiny?")
