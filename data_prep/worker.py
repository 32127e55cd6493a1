"""One video -> its face records: sample frames, find (or reuse) landmarks, align, encode.

Runs inside the worker processes of `build`; never imports TensorFlow (records are
serialised by `mat_jax.records.encode`, which writes the protobuf bytes itself).
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
from mat_jax import records

IMAGE_FORMATS = ("jpeg", "png")


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

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["methods"] = list(self.methods) if self.methods is not None else None
        d["splits"] = list(self.splits)
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
    if settings.reuse_landmarks and video.landmark_source:
        cached = work.load_landmarks(video.landmark_source.replace("/", "__"))
        if cached is not None and tuple(cached["shape"]) == shape:
            reused = dict(zip(cached["indices"].tolist(), cached["landmarks"]))

    masks = frames_lib.read_at(video.mask_path, indices) if video.mask_path else {}
    finder.reset()
    serialized, found_idx, found_lm = [], [], []
    for i in indices:
        frame = frames[i]
        lm = reused.get(i)
        if lm is not None:
            result["reused_landmarks"] += 1
        else:
            face = finder.find(frame)
            if face is None:
                continue
            lm = face.landmarks
        found_idx.append(i)
        found_lm.append(lm)
        crop, lm_crop, m = align_lib.align(frame, lm, recipe)
        mask = _mask_png(masks[i], m, recipe) if i in masks else b""
        rec = records.FaceRecord(
            image=encode_image(crop, settings),
            label=video.label,
            dataset=video.dataset,
            split=video.split,
            method=video.method,
            video_id=video.video_id,
            frame_index=i,
            landmarks=lm_crop,
            mask=mask,
        )
        serialized.append(records.encode(rec))

    if not serialized:
        result["reason"] = (
            f"no face found in any of the {len(indices)} sampled frames "
            f"(detector '{settings.detector}'; if a face is there but small or turned, try --detector=cnn)"
        )
        return
    if settings.reuse_landmarks and video.label == records.LABEL_REAL:
        # Kept for the fakes made from this real video (FF++: a_* reuse a's landmarks).
        work.save_landmarks(video.key, np.array(found_idx), np.stack(found_lm), shape)
    result["bytes"] = work.write_part(video.key, serialized)
    result["written"] = len(serialized)
    missing = len(indices) - len(serialized)
    result["status"] = "partial" if missing else "ok"
    if missing:
        result["reason"] = (
            f"no face in {missing} of {len(indices)} sampled frames (those frames are left out)"
        )
