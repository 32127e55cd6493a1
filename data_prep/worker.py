"""One video -> its face records: sample frames, find (or reuse) landmarks, align, encode.

Runs inside the worker processes of `build`; never imports TensorFlow (records are
serialised by `mat_jax.data.records.encode`, which writes the protobuf bytes itself).

`face_crops` (frames -> detected, aligned and encoded faces) is also what
`mat_jax.predict` runs on a new video, with the `Settings` read back from the records'
summary, so a deployed detector sees exactly the pixels evaluation saw. Landmark reuse
(FF++ fakes taking their source real video's landmarks, the official recipe) is for the
train split only: a deployed detector only ever has the landmarks it finds on the video
itself, and val/test must measure that.
"""

from __future__ import annotations

import dataclasses
import traceback

import cv2
import numpy as np

from data_prep import align as align_lib
from data_prep import frames as frames_lib
from data_prep.faces import FaceFinder
from data_prep.shards import WorkDir
from data_prep.sources import Video
from mat_jax.data import records

IMAGE_FORMATS = ("jpeg", "png")
# Splits whose FF++ fakes may reuse their real video's landmarks (with `reuse_landmarks`).
REUSE_SPLITS = ("train",)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that decides the records' content (stored in settings/summary; a resumed run
    must use the same)."""

    dataset: str
    quality: str = "c23"
    train_sampling: frames_lib.Sampling = dataclasses.field(default_factory=frames_lib.Sampling)
    eval_sampling: frames_lib.Sampling = dataclasses.field(default_factory=frames_lib.Sampling)
    recipe: str = "mat"
    size: int = 0  # 0: the recipe's own size
    scale: float = 0.0  # 0: the recipe's own margin scale
    detector: str = "dlib"
    detect_size: int = 320
    min_face: int = 20
    image_format: str = "jpeg"
    jpeg_quality: int = 95
    reuse_landmarks: bool = True
    methods: tuple[str, ...] | None = None
    splits: tuple[str, ...] = records.SPLITS

    def __post_init__(self):
        if self.recipe not in align_lib.RECIPES:
            raise ValueError(f"unknown crop recipe {self.recipe!r}; choose one of {tuple(align_lib.RECIPES)}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")

    def crop_recipe(self) -> align_lib.Recipe:
        return align_lib.RECIPES[self.recipe].with_overrides(self.size or None, self.scale or None)

    def sampling(self, split: str) -> frames_lib.Sampling:
        return self.train_sampling if split == "train" else self.eval_sampling

    def reuses_landmarks(self, video: Video) -> bool:
        """Whether `video` takes its landmarks from `video.landmark_source` instead of detecting."""
        return self.reuse_landmarks and video.split in REUSE_SPLITS and bool(video.landmark_source)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["methods"] = list(self.methods) if self.methods is not None else None
        d["splits"] = list(self.splits)
        # Part of the build's identity, so a build begun when every split reused resumes into
        # a mismatch error rather than into records with mixed geometry.
        d["landmark_reuse_splits"] = [s for s in REUSE_SPLITS if self.reuse_landmarks and s in self.splits]
        r = self.crop_recipe()
        d["crop"] = {
            "recipe": r.name,
            "size": r.size,
            "margin_scale": r.scale,
            "aligned_size": round(r.size * r.align_ratio),
            "template_5pts_unit": [list(p) for p in r.template],
        }
        d["landmarks"] = "dlib 68-point shape predictor (face_recognition_models)"
        return d

    @classmethod
    def from_json(cls, d: dict) -> Settings:
        """The settings of `to_json(...)` (e.g. a records summary's "settings"); extra keys ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("train_sampling", "eval_sampling"):
            if isinstance(kw.get(k), dict):
                kw[k] = frames_lib.Sampling(**kw[k])
        if kw.get("methods") is not None:
            kw["methods"] = tuple(kw["methods"])
        if "splits" in kw:
            kw["splits"] = tuple(kw["splits"])
        return cls(**kw)


@dataclasses.dataclass
class FaceCrop:
    """One sampled frame's face as it goes into a record."""

    index: int  # frame index in the video
    image: bytes  # the encoded aligned crop, the record's `image`
    landmarks: np.ndarray  # (68, 2) in crop pixels
    frame_landmarks: np.ndarray  # (68, 2) in frame pixels
    matrix: np.ndarray  # 2x3 frame -> crop
    box: tuple[float, float, float, float] | None  # detector box; None when landmarks were reused


def face_crop(
    frame: np.ndarray, lm68: np.ndarray, settings: Settings
) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(encoded crop, landmarks in crop pixels, 2x3 matrix): a whole RGB frame and its face's
    68 landmarks -> the bytes a record stores, under the recipe and encoding of `settings`."""
    crop, lm_crop, m = align_lib.align(frame, lm68, settings.crop_recipe())
    return encode_image(crop, settings), lm_crop, m


def face_crops(
    indices: list[int],
    frames: dict[int, np.ndarray],
    settings: Settings,
    finder: FaceFinder,
    reused: dict[int, np.ndarray] | None = None,
) -> list[FaceCrop]:
    """The faces of one video's sampled frames, in order; frames without a face are left out.

    Landmarks come from `reused` where it has the frame, else from `finder`, which is reset
    first: it tracks the face size from frame to frame, so the same frames in the same order
    give the same detections in `build` and in `predict`.
    """
    reused = reused or {}
    finder.reset()
    out = []
    for i in indices:
        lm, box = reused.get(i), None
        if lm is None:
            face = finder.find(frames[i])
            if face is None:
                continue
            lm, box = face.landmarks, face.box
        image, lm_crop, m = face_crop(frames[i], lm, settings)
        out.append(FaceCrop(i, image, lm_crop, np.asarray(lm, np.float32), m, box))
    return out


def encode_image(rgb: np.ndarray, settings: Settings) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if settings.image_format == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
    if not ok:
        raise RuntimeError("image encoding failed")
    return buf.tobytes()


def _mask_png(mask_rgb: np.ndarray, m: np.ndarray, recipe: align_lib.Recipe) -> bytes:
    gray = cv2.cvtColor(mask_rgb, cv2.COLOR_RGB2GRAY)
    warped = align_lib.warp(gray, m, recipe, cv2.INTER_LINEAR)
    # Compressed mask videos are noisy near 0; DeepfakeBench thresholds at > 1 as well.
    return cv2.imencode(".png", np.where(warped > 1, 255, 0).astype(np.uint8))[1].tobytes()


def process(video: Video, settings: Settings, finder: FaceFinder, work: WorkDir) -> dict:
    """Prepares one video: writes its part file, then its result marker; returns the result.

    The result's status is "ok", "partial" (some sampled frames had no face) or "skipped"
    (nothing written; `reason` says why). Never raises for a bad video.
    """
    result = {
        "key": video.key,
        "video_id": video.video_id,
        "path": video.path,
        "split": video.split,
        "label": video.label,
        "method": video.method,
        "status": "skipped",
        "reason": "",
        "sampled": 0,
        "written": 0,
        "decoded_frames": 0,
        "reused_landmarks": 0,
    }
    try:
        _process(video, settings, finder, work, result)
    except frames_lib.VideoError as e:
        result["status"], result["reason"] = "skipped", str(e)
    except Exception as e:  # noqa: BLE001 - one bad video must not stop a day-long run
        result["status"] = "skipped"
        result["reason"] = f"unexpected {type(e).__name__}: {e} ({traceback.format_exc(limit=-1).strip()})"
    work.write_result(video.key, result)
    return result


def _process(video: Video, settings: Settings, finder: FaceFinder, work: WorkDir, result: dict) -> None:
    recipe = settings.crop_recipe()
    indices, frames = frames_lib.read_sampled(video.path, settings.sampling(video.split))
    result["sampled"] = len(indices)
    result["decoded_frames"] = max(indices) + 1
    shape = next(iter(frames.values())).shape

    reused: dict[int, np.ndarray] = {}
    if settings.reuses_landmarks(video):
        cached = work.load_landmarks(video.landmark_source.replace("/", "__"))
        if cached is not None and tuple(cached["shape"]) == shape:
            reused = dict(zip(cached["indices"].tolist(), cached["landmarks"]))

    masks = frames_lib.read_at(video.mask_path, indices) if video.mask_path else {}
    crops = face_crops(indices, frames, settings, finder, reused)
    result["reused_landmarks"] = sum(c.box is None for c in crops)
    serialized = []
    for c in crops:
        mask = _mask_png(masks[c.index], c.matrix, recipe) if c.index in masks else b""
        rec = records.FaceRecord(
            image=c.image,
            label=video.label,
            dataset=video.dataset,
            split=video.split,
            method=video.method,
            video_id=video.video_id,
            frame_index=c.index,
            landmarks=c.landmarks,
            mask=mask,
        )
        serialized.append(records.encode(rec))

    if not serialized:
        result["reason"] = (
            f"no face found in any of the {len(indices)} sampled frames "
            f"(detector '{settings.detector}'; if a face is there but small or turned, try --detector=cnn)"
        )
        return
    if settings.reuse_landmarks and video.split in REUSE_SPLITS and video.label == records.LABEL_REAL:
        # Kept for the fakes made from this real video (FF++: a_* reuse a's landmarks).
        work.save_landmarks(
            video.key, np.array([c.index for c in crops]), np.stack([c.frame_landmarks for c in crops]), shape
        )
    result["bytes"] = work.write_part(video.key, serialized)
    result["written"] = len(serialized)
    missing = len(indices) - len(serialized)
    result["status"] = "partial" if missing else "ok"
    if missing:
        result["reason"] = (
            f"no face in {missing} of {len(indices)} sampled frames (those frames are left out)"
        )
