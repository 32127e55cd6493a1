"""Faces of a video's sampled frames -> tracks, one per person: what becomes records.

A detection that no neighbouring frame confirms is far more often a false positive (a cup,
a pattern on a shirt) than a face, so a face enters the records only as part of a track that
holds it in enough of the sampled frames. Linking is greedy against each open track's last
box: by box overlap (IoU) first, then, for boxes that do not overlap enough, by how near
they are (sampled frames can be half a second apart, and a small face moves more than its
own width in that time); a track stays open across `max_gap` sampled frames without a match
(a blink of the detector, a hand over the face). Kept tracks are
numbered by first appearance, then left to right, so the same frames give the same ids in
`data_prep` and in `mat_jax.predict`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

Box = tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class TrackRules:
    """When detections form a track and when a track becomes records.

    min_fraction: a track must hold a face in at least this fraction of the sampled frames
      (at least `min_frames`; a single sampled frame, an image, needs just itself).
    min_iou: smallest overlap of a face with a track's last box to continue that track.
    max_gap: sampled frames a track may go without a face and still be continued.
    max_shift: farthest a face of similar size (within 2x) may move between a track's faces
      and still continue it, in face sizes (centre distance / the larger box's longer side).
    min_size: smallest median face size (px, the box's longer side) of a kept track.
    """

    min_fraction: float = 0.4
    min_frames: int = 2
    min_iou: float = 0.2
    max_gap: int = 2
    max_shift: float = 1.5
    min_size: float = 0.0

    def min_length(self, sampled: int) -> int:
        return min(max(sampled, 1), max(self.min_frames, math.ceil(self.min_fraction * sampled)))


@dataclasses.dataclass
class Track:
    """One person's faces: (frame index, face) pairs in frame order; `track_id` once kept."""

    items: list[tuple[int, object]]
    track_id: int = -1
    last_position: int = 0  # position in the sampled frames of the last face

    @property
    def boxes(self) -> list[Box]:
        return [face.box for _, face in self.items]

    @property
    def indices(self) -> list[int]:
        return [i for i, _ in self.items]

    def median_size(self) -> float:
        return float(np.median([max(b[2] - b[0], b[3] - b[1]) for b in self.boxes]))


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def affinity(a: Box, b: Box, rules: TrackRules) -> float:
    """How well box `b` continues a track ending in box `a`: 1 + IoU above `min_iou`, else in
    (0, 1] as the boxes are near (`max_shift`), 0 when `b` cannot continue it."""
    overlap = iou(a, b)
    if overlap >= rules.min_iou:
        return 1.0 + overlap
    sa, sb = max(a[2] - a[0], a[3] - a[1]), max(b[2] - b[0], b[3] - b[1])
    if min(sa, sb) <= 0 or max(sa, sb) > 2 * min(sa, sb):
        return 0.0
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    shift = math.hypot(dx, dy) / max(sa, sb)
    return max(0.0, 1.0 - shift / rules.max_shift) if shift < rules.max_shift else 0.0


def link(per_frame: list[tuple[int, list]], rules: TrackRules = TrackRules()) -> list[Track]:
    """All tracks of a video from its sampled frames' faces (each with a `.box`), in order of
    creation. `per_frame` lists every sampled frame, faces or none, in frame order."""
    tracks: list[Track] = []
    for position, (index, faces) in enumerate(per_frame):
        open_tracks = [t for t in tracks if position - t.last_position <= rules.max_gap + 1]
        pairs = sorted(
            ((affinity(t.items[-1][1].box, f.box, rules), ti, fi)
             for ti, t in enumerate(open_tracks) for fi, f in enumerate(faces)),
            key=lambda p: (-p[0], p[1], p[2]),
        )
        used_t, used_f = set(), set()
        for score, ti, fi in pairs:
            if score <= 0:
                break
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            open_tracks[ti].items.append((index, faces[fi]))
            open_tracks[ti].last_position = position
        for fi, f in enumerate(faces):
            if fi not in used_f:
                tracks.append(Track([(index, f)], last_position=position))
    return tracks


def keep(tracks: list[Track], sampled: int, rules: TrackRules = TrackRules()) -> list[Track]:
    """The tracks long and large enough, numbered 0.. by (first frame, left edge)."""
    need = rules.min_length(sampled)
    kept = [t for t in tracks if len(t.items) >= need and t.median_size() >= rules.min_size]
    kept.sort(key=lambda t: (t.items[0][0], t.items[0][1].box[0]))
    for n, t in enumerate(kept):
        t.track_id = n
    return kept


def overlaps(track: Track, boxes_by_frame: dict[int, list[Box]], min_iou: float = 0.5) -> bool:
    """Whether `track` is the face marked by `boxes_by_frame` (frame index -> boxes) in at least
    half of the track's frames that have marks (face-level labels, e.g. FFIW's)."""
    marked = [(i, face.box) for i, face in track.items if i in boxes_by_frame]
    if not marked:
        return False
    hits = sum(any(iou(box, b) >= min_iou for b in boxes_by_frame[i]) for i, box in marked)
    return 2 * hits >= len(marked)
