"""WildDeepfake (OpenTAI/wild-deepfake, "deepfake in the wild") -> `Video` rows: one per face
sequence (docs/data.md, "WildDeepfake").

The release is `{real,fake}_{train,test}/<n>.tar.gz`, each archive one source video; extracted
(`tar -xzf <n>.tar.gz` inside its folder) it is `<n>/{real,fake}/<sequence>/<frame>.png`, face
crops of one person tracked through a shot. Each sequence is a video here, with its folder's
label and split (the official train/test split; there is no val). Its frames are tight face
crops, so faces are detected inside a black border (`data_prep.frame_folder.DETECT_PAD`).
"""

from __future__ import annotations

import os

from data_prep.rows import LayoutError, Listing, Note, Video
from mat_jax.data.records import LABEL_FAKE, LABEL_REAL, REAL_METHOD

FOLDERS = {"real_train": (LABEL_REAL, "train"), "fake_train": (LABEL_FAKE, "train"),
           "real_test": (LABEL_REAL, "test"), "fake_test": (LABEL_FAKE, "test")}  # fmt: skip
METHOD = "WildDeepfake"
IMAGES = (".png", ".jpg", ".jpeg", ".bmp")


def _dirs(folder: str) -> list[str]:
    return sorted((d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))), key=_number)


def _number(name: str):
    stem = os.path.splitext(name)[0]
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def _release_root(root: str) -> str:
    inner = os.path.join(root, "deepfake_in_the_wild")
    return inner if any(os.path.isdir(os.path.join(inner, f)) for f in FOLDERS) else root


def read(root: str, dataset: str = "wilddeepfake") -> Listing:
    """The face sequences of the extracted WildDeepfake release at `root` (or `root/deepfake_in_the_wild`)."""
    root = _release_root(root)
    if not any(os.path.isdir(os.path.join(root, f)) for f in FOLDERS):
        raise LayoutError(f"no {'/, '.join(FOLDERS)}/ under {root}: --root must be the WildDeepfake folder "
                          "(deepfake_in_the_wild) with its archives extracted")
    rows, notes = [], []
    for folder, (label, split) in FOLDERS.items():
        top = os.path.join(root, folder)
        if not os.path.isdir(top):
            continue
        videos = set(_dirs(top))
        for f in sorted(os.listdir(top)):
            if f.endswith(".tar.gz") and f[: -len(".tar.gz")] not in videos:
                notes.append(Note(os.path.join(top, f), f"not extracted, left out: run tar -xzf {f} in {top}", split))
        for video in sorted(videos, key=_number):
            inner = os.path.join(top, video)
            kinds = [k for k in ("real", "fake") if os.path.isdir(os.path.join(inner, k))]
            for kind in kinds or [""]:
                seq_root = os.path.join(inner, kind)
                for seq in _dirs(seq_root):
                    path = os.path.join(seq_root, seq)
                    frames = sorted((f for f in os.listdir(path) if f.lower().endswith(IMAGES)), key=_number)
                    vid = f"{folder}/{video}/{seq}"
                    if not frames:
                        notes.append(Note(path, "a sequence folder without images; left out", split, vid))
                        continue
                    if kind and (kind == "real") != (label == LABEL_REAL):
                        raise LayoutError(f"{path} is a {kind} sequence inside {folder}/")
                    rows.append(Video(path, label, split, REAL_METHOD if label == LABEL_REAL else METHOD, vid,
                                      dataset, frames=tuple(os.path.join(path, f) for f in frames)))
    if not rows:
        raise LayoutError(f"no face sequences (<video>/<real|fake>/<sequence>/<n>.png) under {root}; "
                          "extract the .tar.gz archives first")
    return Listing(rows, notes)
