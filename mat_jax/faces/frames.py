"""Video files in and out: decoding, choosing which frames to keep, and H.264 writing.

Two sampling modes:
* evenly spaced ("linspace"): `num` indices spread over the whole video, as DeepfakeBench
  and SBI do (`np.linspace(0, n - 1, num)`), without DeepfakeBench's first-N bug;
* strided: `num` frames `stride` apart from frame 0, as the official MAT loader does
  (50 frames stride 10 for training, 20 frames stride 5 for evaluation; `PRESETS`).

Frames are read sequentially (`grab` for skipped frames): seeking in H.264 is unreliable,
and the container's frame count can be wrong, so a short read is detected and the sample
recomputed from the frames actually decoded.

`write_video` encodes frames with imageio-ffmpeg's ffmpeg (the demo tree's videos, predict's
annotated videos).
"""

from __future__ import annotations

import dataclasses
import os

import cv2
import imageio_ffmpeg
import numpy as np


@dataclasses.dataclass(frozen=True)
class Sampling:
    """`num` frames per video; `stride` 0 = evenly spaced over the video, else every `stride`."""

    num: int = 32
    stride: int = 0

    def __post_init__(self):
        if self.num < 1 or self.stride < 0:
            raise ValueError(f"frames must be >= 1 and stride >= 0, got {self.num} and {self.stride}")

    def indices(self, n_frames: int) -> list[int]:
        """The frame indices to keep from a video of `n_frames` frames."""
        if n_frames <= 0:
            return []
        if self.stride:
            return [k * self.stride for k in range(self.num) if k * self.stride < n_frames]
        if n_frames <= self.num:
            return list(range(n_frames))
        return sorted(set(np.linspace(0, n_frames - 1, self.num).round().astype(int).tolist()))


# The official MAT recipe (docs/data.md, "Frame sampling").
PRESETS = {"mat_train": Sampling(50, 10), "mat_eval": Sampling(20, 5)}


class VideoError(Exception):
    """A video that cannot be used; the message is the reason written to the report."""


def _open(path: str) -> cv2.VideoCapture:
    if not os.path.exists(path):
        raise VideoError("missing file: listed by the dataset but not on disk (re-download it)")
    if os.path.getsize(path) == 0:
        raise VideoError("empty file (0 bytes): the download or copy was interrupted (re-download it)")
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError("unreadable: not a video FFmpeg can open (corrupt or truncated; re-download it)")
    return cap


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:  # some backends hand grayscale videos over as one channel
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _read(path: str, wanted: list[int]) -> tuple[dict[int, np.ndarray], int, bool]:
    """Decodes up to max(wanted); returns (frames, frames decoded, whether it ran out early)."""
    cap = _open(path)
    want = set(wanted)
    last = max(wanted) if wanted else -1
    frames: dict[int, np.ndarray] = {}
    i = 0
    try:
        while i <= last:
            if i in want:
                ok, frame = cap.read()
                if ok and frame is not None and frame.size:
                    frames[i] = _to_rgb(frame)
            else:
                ok = cap.grab()
            if not ok:
                break
            i += 1
    finally:
        cap.release()
    return frames, i, i <= last


def count_frames(path: str) -> int:
    """Frames in the container header, or counted by decoding when the header has none."""
    cap = _open(path)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n > 0:
            return n
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def read_sampled(path: str, sampling: Sampling) -> tuple[list[int], dict[int, np.ndarray]]:
    """The sampled frame indices of `path` and their RGB frames.

    Raises:
      VideoError: missing, empty or unreadable file, or no decodable frame.
    """
    n = count_frames(path)
    wanted = sampling.indices(n)
    frames, decoded, short = _read(path, wanted)
    if short and decoded > 0:
        # The header promised more frames than the stream holds: resample over what exists.
        wanted = sampling.indices(decoded)
        frames, decoded, _ = _read(path, wanted)
    if not frames:
        raise VideoError(f"no decodable frame (header says {n} frames; corrupt stream? re-download it)")
    return [i for i in wanted if i in frames], frames


def read_at(path: str, indices: list[int]) -> dict[int, np.ndarray]:
    """RGB frames at exactly `indices` (for mask videos); missing ones are left out."""
    return _read(path, sorted(indices))[0] if indices else {}


def write_video(path: str, frames, crf: int = 23, fps: int = 25, gray: bool = False) -> None:
    """H.264 mp4 of RGB (or, with `gray`, single-channel) uint8 frames via imageio-ffmpeg's ffmpeg."""
    frames = list(frames)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    h, w = frames[0].shape[:2]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        path,
        (w, h),
        pix_fmt_in="gray" if gray else "rgb24",
        pix_fmt_out="gray" if gray else "yuv420p",
        fps=fps,
        codec="libx264",
        quality=None,
        macro_block_size=2,
        ffmpeg_log_level="error",
        output_params=["-crf", str(crf), "-preset", "veryfast"],
    )
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
