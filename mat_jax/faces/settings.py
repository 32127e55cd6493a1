"""The settings that decide a records build's content, and reading them back from its summary.

`data_prep.build` makes records under a `Settings` and stores `Settings.to_json()` in their
`summary.json`; `mat_jax.predict` reads them back (`read_summary`, `from_summary`) so that a
new video is sampled, detected, cropped and encoded as the records were. The crop part
(sampling, detector, recipe, encoding) is what `mat_jax.faces.crops` uses; the rest (dataset,
quality, methods, splits, landmark reuse) says which videos went into the records.
"""

from __future__ import annotations

import dataclasses

from mat_jax.data import records
from mat_jax.faces import align as align_lib
from mat_jax.faces import detect as detect_lib
from mat_jax.faces import frames as frames_lib
from mat_jax.faces import track as track_lib

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
    detector: str = detect_lib.DEFAULT
    detect_size: int = 320
    min_face: int = 20
    # Faces become records only as tracks (mat_jax.faces.track): confirmed over this fraction
    # of the sampled frames, linked by box overlap or nearness across this many missed frames.
    track_min_fraction: float = track_lib.TrackRules.min_fraction
    track_min_iou: float = track_lib.TrackRules.min_iou
    track_max_gap: int = track_lib.TrackRules.max_gap
    track_max_shift: float = track_lib.TrackRules.max_shift
    track_min_size: float = track_lib.TrackRules.min_size
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

    def track_rules(self) -> track_lib.TrackRules:
        return track_lib.TrackRules(min_fraction=self.track_min_fraction, min_iou=self.track_min_iou,
                                    max_gap=self.track_max_gap, max_shift=self.track_max_shift,
                                    min_size=self.track_min_size)

    def sampling(self, split: str) -> frames_lib.Sampling:
        return self.train_sampling if split == "train" else self.eval_sampling

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


def read_summary(root: str) -> dict | None:
    """The records summary in `root`, or None when `root` is "" or its summary is missing or
    unreadable."""
    if not root:
        return None
    try:
        return records.load_summary(root)
    except Exception:  # noqa: BLE001 - unreachable storage only loses the records' settings
        return None


def from_summary(summary: dict | None) -> Settings | None:
    """The settings a records summary stores (its "settings"), or None when it has none."""
    if summary is None or "settings" not in summary:
        return None
    return Settings.from_json(summary["settings"])


def guess(image_size: int, dataset: str = "") -> Settings:
    """Settings for records whose summary is out of reach: the "mat" recipe at 380 px, else
    "bench" at `image_size`; JPEG q95; 20 evenly spaced frames per val/test video."""
    return Settings(
        dataset=dataset or "ffpp",
        eval_sampling=frames_lib.Sampling(20),
        recipe="mat" if image_size == 380 else "bench",
        size=image_size,
    )
