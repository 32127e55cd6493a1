"""The DeeperForensics-1.0 robustness perturbations of whole video frames (docs/data.md,
"Robustness copies").

Seven types at five levels each, applied to the whole frame before its face is cropped, as
the benchmark does: colour saturation (CS), colour contrast (CC), local block-wise grey
blocks (BW), white Gaussian noise in the colour components (GNC), Gaussian blur (GB),
pixelation (JPEG, the benchmark's name for it) and H.264 video compression (VC). `LEVELS`
is the one table of their level parameters; `REGISTRY` maps a type's name to a
`Perturbation` (its levels, parameter per level, and a frame-wise or a video-wise function);
`register` adds a type, `parse` reads a command line's `--perturb` spec.

The behaviour follows the benchmark's released script (`SOURCE`), reimplemented here with
numpy, OpenCV and imageio-ffmpeg's ffmpeg; comments marked "Differs:" say where this code
knowingly departs from it. Frames are RGB uint8 (the benchmark's are BGR; every type
treats the channels alike or converts through luma/chroma, so the order does not matter).
Randomness (GNC's noise, BW's block positions) comes from `frame_rng`, a pure function of
(video key, type, level, frame index): a rebuild gives the same bytes, another video other
noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable

import cv2
import imageio_ffmpeg
import numpy as np

from mat_jax.faces import frames as frames_lib

SOURCE = (
    "EndlessSora/DeeperForensics-1.0: perturbation/add_distortion_to_video.py "
    "(get_distortion_parameter) and perturbation/distortions.py"
)

# The level parameters, levels 1 (mildest) to 5, as get_distortion_parameter() of SOURCE
# gives them: (parameter name, its value per level).
LEVELS: dict[str, tuple[str, tuple]] = {
    "CS": ("chroma_factor", (0.4, 0.3, 0.2, 0.1, 0.0)),  # chroma scaled by it; 0: grey
    "CC": ("intensity_factor", (0.85, 0.725, 0.6, 0.475, 0.35)),  # every channel scaled by it
    "BW": ("blocks_per_256px", (16, 32, 48, 64, 80)),  # 8x8 grey blocks per 256 px of the short side
    "GNC": ("variance", (0.001, 0.002, 0.005, 0.01, 0.05)),  # in [0, 1]-scaled studio-range YCbCr
    "GB": ("kernel_size", (7, 9, 13, 17, 21)),  # square kernel; sigma = size / 6
    "JPEG": ("downscale", (2, 3, 4, 5, 6)),  # bilinear down by it, then back up
    "VC": ("crf", (30, 32, 35, 38, 40)),  # libx264 constant rate factor
}

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, OpenCV's YCrCb
BLOCK, BLOCK_VALUE = 8, 128
# 8-bit luma / chroma units per unit of [0, 1]-scaled studio-range YCbCr (Y 16..235, C 16..240).
_STUDIO_SD = np.array([255 * 255 / 219, 255 * 255 / 224, 255 * 255 / 224], np.float32)
# Frames encoded past the last sampled one in VC, so x264's look-ahead (40 frames at preset
# medium, plus B-frames) sees what it would in a whole-video encode.
VC_MARGIN = 100


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """One perturbation type: a frame-wise `frame_fn(rgb, param, rng) -> rgb` or a video-wise
    `video_fn(path, indices, param) -> {index: rgb}` (exactly one of the two).

    `keeps_geometry`: the face stays where it was, so a perturbed frame can be cropped with
    the clean frame's face (all seven types); otherwise faces are found on the perturbed frames.
    """

    name: str
    title: str
    param_name: str
    params: tuple
    frame_fn: Callable | None = None
    video_fn: Callable | None = None
    keeps_geometry: bool = True
    source: str = SOURCE

    def __post_init__(self):
        if (self.frame_fn is None) == (self.video_fn is None):
            raise ValueError(f"perturbation {self.name!r} needs exactly one of frame_fn and video_fn")

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(range(1, len(self.params) + 1))

    def param(self, level: int):
        if level not in self.levels:
            raise ValueError(f"level {level} of {self.name} is outside {self.levels[0]}..{self.levels[-1]}")
        return self.params[level - 1]

    def describe(self, level: int) -> dict:
        """What a perturbed copy's summary.json records as its "perturbation"."""
        return {
            "type": self.name,
            "level": level,
            "title": self.title,
            "params": {self.param_name: self.param(level)},
            "source": self.source,
        }

    def apply(self, rgb: np.ndarray, level: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """The perturbed copy of one RGB uint8 frame (frame-wise types); `rng` for random ones."""
        if self.frame_fn is None:
            raise ValueError(f"{self.name} works on whole videos: use apply_video")
        return self.frame_fn(rgb, self.param(level), rng if rng is not None else np.random.default_rng(0))

    def apply_video(
        self, path: str, frames: dict[int, np.ndarray], level: int, video_key: str
    ) -> dict[int, np.ndarray]:
        """The perturbed frames at the indices of `frames` (decoded frames of the video at
        `path`): frame-wise types perturb each with `frame_rng`; video-wise ones re-read `path`."""
        if self.video_fn is not None:
            return self.video_fn(path, sorted(frames), self.param(level))
        return {i: self.apply(f, level, frame_rng(video_key, self.name, level, i)) for i, f in frames.items()}


def seed(video_key: str, name: str, level: int) -> int:
    """The seed of one (video, type, level): a hash, so equal on every machine and run."""
    digest = hashlib.sha256(f"{video_key}\0{name}\0{level}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def frame_rng(video_key: str, name: str, level: int, index: int) -> np.random.Generator:
    """The random stream of frame `index` of a video under one (type, level)."""
    return np.random.default_rng([seed(video_key, name, level), index])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    # The benchmark casts float results with astype(np.uint8), which truncates: so do we.
    return np.floor(np.clip(x, 0, 255)).astype(np.uint8)


def _saturation(rgb, factor, rng):
    # The benchmark scales Cb and Cr about neutral grey, keeping luma; that is each pixel's
    # interpolation towards its luma (the transform is linear), done here directly. Differs:
    # its round trip through OpenCV's YCrCb (rounded coefficients, an offset of
    # 0.5 * (factor - 1) / 224 levels) moves colours by well under one level; left out.
    x = rgb.astype(np.float32)
    y = x @ _LUMA
    return _to_uint8(y[..., None] + factor * (x - y[..., None]))


def _contrast(rgb, factor, rng):
    # Every channel times the factor (towards black, not towards the mean), truncated.
    return _to_uint8(rgb.astype(np.float32) * factor)


def block_positions(height: int, width: int, per_256px: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) top-left (x, y) of BW's blocks: n = short side // 256 * per_256px (none under
    256 px, as in the benchmark), uniform over positions whose block ends before the last
    row and column; blocks may overlap."""
    n = min(height, width) // 256 * per_256px
    if n == 0:
        return np.zeros((0, 2), np.int64)
    return rng.integers(0, [width - BLOCK, height - BLOCK], size=(n, 2))


def _blocks(rgb, per_256px, rng):
    out = rgb.copy()
    for x, y in block_positions(rgb.shape[0], rgb.shape[1], per_256px, rng):
        out[y : y + BLOCK, x : x + BLOCK] = BLOCK_VALUE
    return out


def _noise(rgb, variance, rng):
    # The benchmark adds N(0, variance) to YCbCr scaled to [0, 1] over the studio range; on
    # 8-bit full-range YCrCb that is sd sqrt(variance) * 255^2/219 on luma and * 255^2/224
    # on chroma (its extra /255 and *255 cancel), which is added here. Differs: its noise
    # comes from numpy's global generator, ours from frame_rng.
    ycc = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2YCrCb)
    ycc += rng.standard_normal(ycc.shape, dtype=np.float32) * (np.sqrt(variance) * _STUDIO_SD)
    return _to_uint8(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB))


def _blur(rgb, size, rng):
    return cv2.GaussianBlur(rgb, (size, size), size / 6)


def _pixelate(rgb, factor, rng):
    # Bilinear down to (w // factor, h // factor) and back: blur and aliasing, not the
    # constant k x k blocks of a nearest-neighbour enlargement. Differs: at least 1 px.
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _compress(path: str, indices: list[int], crf: int) -> dict[int, np.ndarray]:
    """The frames at `indices` after re-encoding the video at `path` with libx264 at `crf`.

    As the benchmark's `ffmpeg -i IN -crf CRF OUT.mp4` (libx264, its default preset medium,
    the input's pixel format), from the file itself rather than from decoded frames. Differs:
    only the first max(indices) + 1 + VC_MARGIN frames are encoded, without audio, with one
    encoder thread (x264's output depends on its thread count) and frames passed through
    one for one (no frame-rate conversion), so frame i of the result is frame i of the video.
    """
    with tempfile.TemporaryDirectory(prefix="vc") as tmp:
        out = os.path.join(tmp, "vc.mp4")
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
               "-i", path, "-map", "0:v:0", "-frames:v", str(max(indices) + 1 + VC_MARGIN),
               "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf),
               "-threads", "1", "-an", "-sn", "-dn", "-map_metadata", "-1", "-y", out]  # fmt: skip
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise frames_lib.VideoError(
                f"ffmpeg could not re-encode it at CRF {crf}: {done.stderr.strip()[-300:]}"
            )
        return frames_lib.read_at(out, indices)


_FUNCTIONS = {
    "CS": ("colour saturation change", _saturation, None),
    "CC": ("colour contrast change", _contrast, None),
    "BW": ("local block-wise distortion", _blocks, None),
    "GNC": ("white Gaussian noise in colour components", _noise, None),
    "GB": ("Gaussian blur", _blur, None),
    "JPEG": ("pixelation (bilinear down- and up-scaling)", _pixelate, None),
    "VC": ("video compression (H.264)", None, _compress),
}

REGISTRY: dict[str, Perturbation] = {}


def register(p: Perturbation) -> Perturbation:
    """Adds a perturbation type (its name must be new, and free of ',', ':' and '-')."""
    if p.name.upper() in {n.upper() for n in REGISTRY} or p.name.lower() == "all":
        raise ValueError(f"a perturbation named {p.name!r} exists already")
    if any(c in p.name for c in ",:- /"):
        raise ValueError(f"perturbation name {p.name!r} may not contain ',', ':', '-', ' ' or '/'")
    REGISTRY[p.name] = p
    return p


for _name, (_param_name, _params) in LEVELS.items():
    _title, _frame_fn, _video_fn = _FUNCTIONS[_name]
    register(Perturbation(_name, _title, _param_name, _params, _frame_fn, _video_fn))


def get(name: str) -> Perturbation:
    """The registered type named `name` (any case)."""
    for n, p in REGISTRY.items():
        if n.upper() == name.strip().upper():
            return p
    raise ValueError(f"unknown perturbation {name.strip()!r}; accepted: {', '.join(REGISTRY)} (or 'all')")


def parse(spec: str) -> list[tuple[str, int]]:
    """(type, level) pairs of a spec: "all", a type ("GB": its five levels), "GB:3", or a
    comma list of these; in registry order, each once. Raises ValueError naming what is accepted."""
    wanted: set[tuple[str, int]] = set()
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise ValueError(
            f"empty perturbation spec; give 'all', a type of {', '.join(REGISTRY)}, or TYPE:LEVEL"
        )
    for item in items:
        if item.lower() == "all":
            wanted |= {(n, lv) for n, p in REGISTRY.items() for lv in p.levels}
            continue
        name, colon, level = item.partition(":")
        p = get(name)
        if not colon:
            wanted |= {(p.name, lv) for lv in p.levels}
            continue
        try:
            lv = int(level)
        except ValueError:
            raise ValueError(f"level {level!r} of {p.name} is not a number; accepted: {p.levels}") from None
        p.param(lv)  # raises for a level outside the type's
        wanted.add((p.name, lv))
    order = list(REGISTRY)
    return sorted(wanted, key=lambda t: (order.index(t[0]), t[1]))


def copy_name(name: str, level: int) -> str:
    """The folder name of a perturbed copy: "GB-5"."""
    return f"{name}-{level}"
