"""What a dataset reader lists: one `Video` row per video, the `Note`s of what it fixed on the
way, and the `LayoutError` it raises for a tree it cannot read.

Its own module so that the readers kept outside `sources` (`deepfakebench`, `wilddeepfake`,
`df40`) and `sources`' dispatcher can both use these types without importing each other.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Video:
    """One video to prepare.

    `landmark_source` is the `video_id` of a frame-aligned real video whose landmarks this
    video may reuse (FF++ fake `a_b` -> real `a`, as the official MAT crops do), or "".

    A video that is a folder of frames instead of a video file (DeepfakeBench's `frames/`,
    WildDeepfake's face sequences) lists its images in `frames`, in frame order, and `path`
    is the folder; `landmarks` (the same length, or empty: detect) holds a `.npy` file of
    each frame's landmarks (68 or 81 points, frame pixels), and `masks` (the same length,
    or empty) a mask image of each frame ("" where it has none).

    `marks_path` is the file marking which faces of a fake video are forged (FFIW-10K,
    `data_prep.face_marks`); "" gives every face the video's label.
    """

    path: str
    label: int
    split: str
    method: str
    video_id: str
    dataset: str
    mask_path: str = ""
    landmark_source: str = ""
    frames: tuple[str, ...] = ()
    landmarks: tuple[str, ...] = ()
    masks: tuple[str, ...] = ()
    marks_path: str = ""

    def __post_init__(self):
        # Tuples even when read back from JSON (the Beam runner's listing), which gives lists.
        for name in ("frames", "landmarks", "masks"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def key(self) -> str:
        """A file-name-safe form of `video_id` (unique, since ids are)."""
        return self.video_id.replace("/", "__")


@dataclasses.dataclass(frozen=True)
class Note:
    """Something a reader found in the dataset's own files and fixed or dropped while listing
    (a split leak, a split file naming an absent video, a landmark file of the wrong shape):
    a `listing` row of report.tsv naming `path` and what was done."""

    path: str
    reason: str
    split: str = ""
    video_id: str = ""


class Listing(list):
    """A reader's `Video` rows, with the `Note`s of what it fixed or dropped on the way."""

    def __init__(self, rows=(), notes=()):
        super().__init__(rows)
        self.notes: list[Note] = list(notes)


class LayoutError(ValueError):
    """The raw tree does not look like the dataset asked for; the message says what to fix."""
