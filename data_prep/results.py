"""What preparing one video gave (`VideoResult`), and its JSON form: the video's completion marker.

A worker fills one `VideoResult` per video; the work folder stores it as JSON
(`parts/<key>.json`, the marker that the video is done), and the merge, the summary and the
report read those markers back.
"""

from __future__ import annotations

import dataclasses

from data_prep.sources import Video

STATUSES = ("ok", "partial", "skipped")


@dataclasses.dataclass
class VideoResult:
    """One video's outcome.

    `status` is "ok", "partial" (some sampled frames had no face) or "skipped" (nothing
    written; `reason` says why).
    """

    key: str
    video_id: str
    path: str
    split: str
    label: int
    method: str
    status: str = "skipped"
    reason: str = ""
    sampled: int = 0  # frames sampled
    written: int = 0  # records written (faces found)
    decoded_frames: int = 0  # frames decoded to reach the last sampled one
    reused_landmarks: int = 0  # faces cut with another video's landmarks
    tracks: int = 0  # people (face tracks) kept
    # Records labelled fake: all `written` of a fake video, unless its faces are labelled one by
    # one (FFIW's face marks), when a real person in a fake video gives real records.
    fake_faces: int | None = None
    part_bytes: int | None = None  # size of the part file; None when none was written

    def faces(self) -> tuple[int, int]:
        """(real, fake) records written."""
        fake = self.fake_faces if self.fake_faces is not None else (self.written if self.label else 0)
        return self.written - fake, fake

    @classmethod
    def of(cls, video: Video) -> VideoResult:
        """A "skipped" result for `video`, to be filled in."""
        return cls(
            key=video.key,
            video_id=video.video_id,
            path=video.path,
            split=video.split,
            label=video.label,
            method=video.method,
        )

    def to_json(self) -> dict:
        """The marker's content; "bytes" (the part file's size) only once a part is written."""
        d = dataclasses.asdict(self)
        del d["part_bytes"]
        if self.part_bytes is not None:
            d["bytes"] = self.part_bytes
        return d

    @classmethod
    def from_json(cls, d: dict) -> VideoResult:
        names = {f.name for f in dataclasses.fields(cls)} - {"part_bytes"}
        return cls(**{k: v for k, v in d.items() if k in names}, part_bytes=d.get("bytes"))
