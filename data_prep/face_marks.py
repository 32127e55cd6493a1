"""Face-level labels: the boxes of the forged faces of a video (FFIW-10K), read from the
video's mark file, and the label of each face track from them.

A mark file is JSON, `{"frames": {"<frame index>": [[x1, y1, x2, y2], ...], ...}}`: per
video frame (0-based), the boxes of its forged faces in frame pixels (docs/data.md, FFIW-10K).
A frame may list no box, and frames may be sparse: a sampled frame takes the marks of the
nearest marked frame within `NEAR` frames, since annotators often box every few frames.
"""

from __future__ import annotations

import json
import math

from mat_jax.faces import track as track_lib

# Half a second at 25 fps: a face moves little more than its own width in that time.
NEAR = 12


class MarkError(ValueError):
    """A mark file that cannot be read; the message says what is wrong with it."""


def read(path: str) -> dict[int, list[tuple[float, float, float, float]]]:
    """Frame index -> forged-face boxes of the mark file `path`."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MarkError(f"unreadable face marks ({type(e).__name__}: {e})") from e
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, dict):
        raise MarkError('face marks must be {"frames": {"<frame index>": [[x1, y1, x2, y2], ...]}}')
    out = {}
    for key, boxes in frames.items():
        if not (isinstance(key, str) and key.isdigit()):
            raise MarkError(f"face marks: frame key {key!r} is not a frame index (0, 1, ...)")
        if not isinstance(boxes, list):
            raise MarkError(f"face marks: frame {key} holds {type(boxes).__name__}, not a list of boxes")
        out[int(key)] = [_box(b, key) for b in boxes]
    return out


def _box(b, frame: str) -> tuple[float, float, float, float]:
    ok = (
        isinstance(b, list) and len(b) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b)
    )  # fmt: skip
    if not ok or b[2] <= b[0] or b[3] <= b[1]:
        raise MarkError(f"face marks: frame {frame} has box {b!r}; expected [x1, y1, x2, y2] with x2 > x1, y2 > y1")
    return tuple(float(v) for v in b)


def at(marks: dict[int, list], indices) -> dict[int, list]:
    """The marks of each sampled frame in `indices`: its own, else the nearest marked frame's
    within NEAR frames (earlier first at equal distance); frames with none are left out."""
    marked = sorted(marks)
    out = {}
    for i in indices:
        near = [j for j in marked if abs(j - i) <= NEAR]
        if near:
            out[i] = marks[min(near, key=lambda j: (abs(j - i), j))]
    return out


def track_labels(tracks: dict[int, list], marks: dict[int, list], fake: int, real: int) -> dict[int, int]:
    """`fake` for each track (id -> its crops, each with `.index` and `.box`) that is a marked
    face (`mat_jax.faces.track.overlaps`), `real` for the others; every track `fake` when no
    sampled frame has marks near it (marks that say nothing about these frames must not turn a
    fake video's faces real)."""
    boxes = at(marks, sorted({c.index for cs in tracks.values() for c in cs}))
    if not boxes:
        return {t: fake for t in tracks}
    out = {}
    for t, crops in tracks.items():
        items = [(c.index, c) for c in crops if c.box is not None]
        out[t] = fake if track_lib.overlaps(track_lib.Track(items), boxes) else real
    return out
