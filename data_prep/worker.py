"""One video -> its face records: sample frames, find (or reuse) landmarks, align, encode.

Runs inside the worker processes of `build`; never imports TensorFlow (records are
serialised by `mat_jax.data.records.encode`, which writes the protobuf bytes itself). The
frames -> face crops step is `mat_jax.faces.crops.face_crops`, the one `mat_jax.predict`
runs on a new video. Landmark reuse (FF++ fakes taking their source real video's landmarks,
the official recipe) is for the train split only: a deployed detector only ever has the
landmarks it finds on the video itself, and val/test must measure that.
"""

from __future__ import annotations

import traceback

import cv2
import numpy as np

from data_prep import face_marks, frame_folder
from data_prep.results import VideoResult
from data_prep.shards import WorkDir
from data_prep.sources import Video
from mat_jax.data import records
from mat_jax.faces import align as align_lib
from mat_jax.faces import frames as frames_lib
from mat_jax.faces.crops import face_crops, tracks_of
from mat_jax.faces.detect import FaceFinder
from mat_jax.faces.settings import REUSE_SPLITS, Settings


def reuses_landmarks(settings: Settings, video: Video) -> bool:
    """Whether `video` takes its landmarks from `video.landmark_source` instead of detecting."""
    return settings.reuse_landmarks and video.split in REUSE_SPLITS and bool(video.landmark_source)


def _mask_png(mask_rgb: np.ndarray, m: np.ndarray, recipe: align_lib.Recipe) -> bytes:
    gray = cv2.cvtColor(mask_rgb, cv2.COLOR_RGB2GRAY)
    warped = align_lib.warp(gray, m, recipe, cv2.INTER_LINEAR)
    # Compressed mask videos are noisy near 0; DeepfakeBench thresholds at > 1 as well.
    return cv2.imencode(".png", np.where(warped > 1, 255, 0).astype(np.uint8))[1].tobytes()


def process(video: Video, settings: Settings, finder: FaceFinder, work: WorkDir) -> VideoResult:
    """Prepares one video: writes its part file, then its result marker; returns the result.

    The result's status is "ok", "partial" (some sampled frames had no face) or "skipped"
    (nothing written; `reason` says why). Never raises for a bad video.
    """
    result = VideoResult.of(video)
    try:
        _process(video, settings, finder, work, result)
    except frames_lib.VideoError as e:
        result.status, result.reason = "skipped", str(e)
    except Exception as e:  # noqa: BLE001 - one bad video must not stop a day-long run
        result.status = "skipped"
        result.reason = f"unexpected {type(e).__name__}: {e} ({traceback.format_exc(limit=-1).strip()})"
    work.write_result(result)
    return result


def encode_record(video: Video, index: int, image: bytes, landmarks, mask: bytes, track_id: int = 0,
                  label: int | None = None) -> bytes:
    """The serialised record of one face crop of `video`: labels from the video listing, or
    `label` for a face labelled on its own (a real person in a fake FFIW video)."""
    return records.encode(
        records.FaceRecord(
            image=image, label=video.label if label is None else label, dataset=video.dataset,
            split=video.split, method=video.method, video_id=video.video_id, frame_index=index,
            landmarks=landmarks, mask=mask, track_id=track_id,
        )
    )  # fmt: skip


def track_labels(video: Video, crops) -> dict[int, int]:
    """The label of each track of `video`: the video's, or, for a fake video with face marks
    (FFIW), fake for the tracks of the marked faces and real for the others.

    Raises:
      frames_lib.VideoError: the mark file cannot be read (the video is skipped with the reason).
    """
    tracks = tracks_of(crops)
    if not video.marks_path or video.label != records.LABEL_FAKE:
        return {t: video.label for t in tracks}
    try:
        marks = face_marks.read(video.marks_path)
    except face_marks.MarkError as e:
        raise frames_lib.VideoError(f"{video.marks_path}: {e}") from e
    return face_marks.track_labels(tracks, marks, records.LABEL_FAKE, records.LABEL_REAL)


def _process(
    video: Video, settings: Settings, finder: FaceFinder, work: WorkDir, result: VideoResult
) -> None:
    recipe = settings.crop_recipe()
    if video.frames:
        indices, frames, reused, masks, problems = _folder(video, settings, result)
        if not frames:
            return
    else:
        problems = []
        indices, frames = frames_lib.read_sampled(video.path, settings.sampling(video.split))
        result.sampled = len(indices)
        result.decoded_frames = max(indices) + 1
        shape = next(iter(frames.values())).shape

        reused: dict[int, np.ndarray] = {}
        if reuses_landmarks(settings, video):
            cached = work.load_landmarks(video.landmark_source.replace("/", "__"))
            if cached is not None and tuple(cached["shape"]) == shape:
                reused = dict(zip(cached["indices"].tolist(), cached["landmarks"]))

        masks = frames_lib.read_at(video.mask_path, indices) if video.mask_path else {}
    crops = face_crops(indices, frames, settings, finder, reused)
    # A folder video's own landmarks are not another video's: they count as detected.
    result.reused_landmarks = 0 if video.landmarks else sum(c.box is None for c in crops)
    labels = track_labels(video, crops)
    serialized = []
    for c in crops:
        mask = _mask_png(masks[c.index], c.matrix, recipe) if c.index in masks else b""
        serialized.append(encode_record(video, c.index, c.image, c.landmarks, mask, c.track_id, labels[c.track_id]))

    if not serialized:
        rules = settings.track_rules()
        result.reason = ("; ".join(problems) + "; " if problems else "") + (
            f"no face track in the {len(indices)} sampled frames: no face, or none found in at least "
            f"{rules.min_length(len(indices))} of them (detector '{settings.detector}'; if a face is there "
            f"but small or turned, try another --detector)"
        )
        return
    if settings.reuse_landmarks and video.split in REUSE_SPLITS and video.label == records.LABEL_REAL and not video.frames:
        # Kept for the fakes made from this real video (FF++: a_* reuse a's landmarks).
        first = [c for c in crops if c.track_id == 0]  # FF++ fakes have their real video's one face
        work.save_landmarks(
            video.key, np.array([c.index for c in first]), np.stack([c.frame_landmarks for c in first]), shape
        )
    result.part_bytes = work.write_part(video.key, serialized)
    result.written = len(serialized)
    result.fake_faces = sum(labels[c.track_id] == records.LABEL_FAKE for c in crops)
    result.tracks = len({c.track_id for c in crops})
    missing = len(indices) - len({c.index for c in crops})
    result.status = "partial" if missing or problems else "ok"
    if missing:
        problems.append(f"no face in {missing} of {len(indices)} sampled frames (those frames are left out)")
    result.reason = "; ".join(problems)


def _folder(video: Video, settings: Settings, result: VideoResult):
    """(indices, frames, given landmarks, masks, [problem]) of a frame-folder video; with no
    usable frame, `result` says why and the frames are empty."""
    got = frame_folder.read(video, settings.sampling(video.split))
    result.sampled = got.sampled
    result.decoded_frames = len(got.frames)
    problems = [f"{len(got.problems)} of {got.sampled} sampled frames left out: {frame_folder.describe(got.problems)}"]
    if not got.frames:
        result.reason = f"no usable frame: {problems[0]}"
        return [], {}, {}, {}, problems
    frames, masks = got.frames, got.masks
    if not got.landmarks:
        # Face crops: detect inside a black border (frame_folder.DETECT_PAD); masks follow the frames.
        frames = {i: frame_folder.padded(f)[0] for i, f in frames.items()}
        masks = {i: frame_folder.padded(m)[0] for i, m in masks.items()}
    return got.indices, frames, got.landmarks, masks, problems if got.problems else []
