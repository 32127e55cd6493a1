"""DeepfakeBench's preprocessed data -> `Video` rows: its dataset JSON, frame folders, landmarks
and masks (docs/data.md, "DeepfakeBench import").

The JSON is `{dataset: {label class: {split: {[compression:] {video: {"label", "frames",
"masks"}}}}}}`; each video's frames are DeepfakeBench's aligned crops (`frames/<video>/NNN.png`),
with 81 dlib landmarks per frame beside them (`landmarks/<video>/NNN.npy`, crop pixels). The
worker cuts our crops from those frames with those landmarks, so no face is detected.

DeepfakeBench's own lists have known faults, fixed here and each reported as a `Note`:
* a video listed in two splits (Celeb-DF's train list holds its test videos; DFDCP, DFD, UADFV
  and DF40 lists share videos or their sources between train and test) is in the eval split
  only: left out of the other split when the eval split lists it, else moved there; "the same
  video" is the same name within one of the JSON's datasets, under any label class, a fake's
  `_fake` suffix aside (UADFV names a fake after its real);
* a JSON entry whose frames lie in several folders (videos grouped by folder name, where two
  sources have a video of that name) becomes one video per folder;
* the same frames listed again under another label class (DF40 repeats the FF++ reals in
  every method's JSON) are kept once.
Video ids carry the dataset and label class (`FaceForensics++/FF-DF/c23/000_003`), so videos of
the same name from different methods stay apart.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from data_prep.frame_folder import frame_numbers
from data_prep.rows import LayoutError, Listing, Note, Video
from data_prep.split_tools import stem
from mat_jax.data.records import LABEL_FAKE, LABEL_REAL, REAL_METHOD

SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
EVAL_ORDER = ("test", "val", "train")  # a video in several splits stays in the first of these


def load_json(json_path) -> list[tuple[str, dict]]:
    """(file, content) of the JSON file `json_path`, of every `*.json` in that folder, or of
    each file of a list."""
    if isinstance(json_path, (list, tuple)):
        files = list(json_path)
    elif os.path.isdir(json_path):
        files = sorted(os.path.join(json_path, f) for f in os.listdir(json_path) if f.endswith(".json"))
    elif os.path.isfile(json_path):
        files = [json_path]
    else:
        raise LayoutError(f"--json {json_path} does not exist: pass a DeepfakeBench dataset JSON (or a folder of them)")
    if not files:
        raise LayoutError(f"no .json file in {json_path}")
    out = []
    for f in files:
        with open(f) as fh:
            try:
                content = json.load(fh)
            except json.JSONDecodeError as e:
                raise LayoutError(f"{f} is not JSON ({e})") from e
        if not isinstance(content, dict):
            raise LayoutError(f"{f}: expected {{dataset: {{label class: {{split: ...}}}}}}, got {type(content).__name__}")
        out.append((f, content))
    return out


class Resolver:
    """Frame paths of a JSON -> files under `root`: a relative path is taken under `root`; an
    absolute one that does not exist (the JSON was written on another machine) is tried as its
    suffix after a folder named like `root` or like one of the JSON's datasets, or from a
    component that names a folder inside `root`. One look-up per folder, cached."""

    def __init__(self, root: str, names=()):
        self.root = root
        self.anchors = {os.path.basename(os.path.normpath(root)), *names}
        self.children = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
        self._cache: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        folder, name = os.path.split(path)
        if folder not in self._cache:
            self._cache[folder] = self._folder(folder)
        return os.path.join(self._cache[folder], name)

    def _folder(self, folder: str) -> str:
        if not os.path.isabs(folder) and os.path.isdir(os.path.join(self.root, folder)):
            return os.path.join(self.root, folder)
        if os.path.isabs(folder) and os.path.isdir(folder):
            return folder
        parts = [p for p in re.split(r"[\\/]+", folder) if p]
        for k, part in enumerate(parts):
            for candidate in (
                os.path.join(self.root, *parts[k + 1:]) if part in self.anchors else None,
                os.path.join(self.root, *parts[k:]) if part in self.children else None,
            ):
                if candidate and os.path.isdir(candidate):
                    return candidate
        # Unresolved: the frames keep the JSON's path, and the worker names them as missing.
        return folder if os.path.isabs(folder) else os.path.join(self.root, folder)


def landmark_file(frame: str) -> str:
    """DeepfakeBench's landmark file of a frame: `.../frames/<video>/N.png` -> `.../landmarks/<video>/N.npy`."""
    parts = frame.split(os.sep)
    if "frames" not in parts:
        return ""
    k = len(parts) - 1 - parts[::-1].index("frames")
    parts[k] = "landmarks"
    return os.path.splitext(os.sep.join(parts))[0] + ".npy"


def is_real(label_class: str) -> bool:
    """DeepfakeBench's label classes name reals `FF-real`, `DFD_real`, `CelebDFv2_real`, `DFDCP_Real`, ..."""
    return "real" in label_class.lower()


def _videos(split_block: dict, quality: str, levels: set[str]) -> tuple[dict, str]:
    """(videos, compression) of one split: those of the `quality` level when the block has
    levels (none when it lacks that level; `levels` collects the ones seen)."""
    if any(isinstance(v, dict) and "frames" in v for v in split_block.values()):
        return split_block, ""
    levels.update(split_block)
    return split_block.get(quality, {}), quality


def _identity(dataset: str, name: str) -> tuple[str, str]:
    return dataset, re.sub(r"[_-]fake$", "", name.lower())


def _entries(files, quality: str, resolve: Resolver, notes: list[Note], levels: set[str]):
    """Every (json file, split, dataset, label class, compression, video name, [frames], [masks])."""
    for file, content in files:
        for dataset, classes in content.items():
            for label_class, splits in classes.items():
                for split_name, block in splits.items():
                    split = SPLIT_NAMES.get(split_name)
                    if split is None:
                        notes.append(Note(file, f"{dataset}/{label_class}: split {split_name!r} is not train, val or "
                                                "test; its videos are left out"))
                        continue
                    videos, level = _videos(block, quality, levels)
                    for name, entry in sorted(videos.items()):
                        frames = [resolve(p) for p in entry.get("frames") or []]
                        masks = [resolve(p) for p in entry.get("masks") or []]
                        if not frames:
                            notes.append(Note(file, "lists no frames; left out", split, f"{dataset}/{label_class}/{name}"))
                            continue
                        yield file, split, dataset, label_class, level, name, frames, masks


def _by_folder(frames: list[str]) -> dict[str, list[str]]:
    """The frames of each folder, in frame order (the JSON's order need not be)."""
    out: dict[str, list[str]] = {}
    for f in frames:
        out.setdefault(os.path.dirname(f), []).append(f)
    return {d: [fs[k] for k in sorted(range(len(fs)), key=frame_numbers(tuple(fs)).__getitem__)]
            for d, fs in out.items()}


def _source(folder: str, others: list[str]) -> str:
    """The first path component where `folder` differs from the other folders of its entry."""
    mine = folder.split(os.sep)
    for k, part in enumerate(mine):
        if any(o.split(os.sep)[k:k + 1] != [part] for o in others):
            return part
    return os.path.basename(folder)


def read(root: str, json_path, quality: str = "c23", dataset: str = "deepfakebench", one_source: bool = False) -> Listing:
    """The videos of a DeepfakeBench JSON (a file, a folder of them, or a list of files) whose
    frames lie under `root`. A video name is one video within each of the JSON's datasets, or
    across all of them with `one_source` (DF40's per-method datasets are made from one FF++)."""
    if not json_path:
        raise LayoutError(f"--dataset={dataset} needs --json: DeepfakeBench's dataset JSON (preprocessing/dataset_json/)")
    files = load_json(json_path)
    resolve = Resolver(root, {d for _, c in files for d in c})
    notes: list[Note] = []
    candidates, levels = [], set()
    for file, split, ds, label_class, level, name, frames, masks in _entries(files, quality, resolve, notes, levels):
        groups = _by_folder(frames)
        base = "/".join(p for p in (ds, label_class, level) if p)
        if len(groups) > 1:
            notes.append(Note(file, f"the frames of {name} lie in {len(groups)} folders (two sources share the "
                                    "name); one video per folder", split, f"{base}/{name}"))
        mask_of = {stem(m): m for m in masks}
        for folder, fs in sorted(groups.items()):
            vid = f"{base}/{name}" if len(groups) == 1 else f"{base}/{_source(folder, list(groups))}/{name}"
            lms = tuple(landmark_file(f) for f in fs)
            real = is_real(label_class)
            candidates.append((file, split, _identity("" if one_source else ds, name), Video(
                folder, LABEL_REAL if real else LABEL_FAKE, split, REAL_METHOD if real else label_class, vid,
                dataset, frames=tuple(fs), landmarks=lms if lms[0] and os.path.isdir(os.path.dirname(lms[0])) else (),
                masks=tuple(mask_of.get(stem(f), "") for f in fs)
                if masks else (),
            )))  # fmt: skip
    if not candidates:
        raise LayoutError(f"no videos in {json_path}" + (f" at compression {quality!r} (it has {sorted(levels)}; "
                          "pass --quality)" if levels and quality not in levels else ""))
    return Listing(*_fix_splits(candidates, notes))


def _fix_splits(candidates, notes: list[Note]) -> tuple[list[Video], list[Note]]:
    """Each video in its eval split only (moved there, or left out where that split lists it
    already), and frames listed twice in one split kept once."""
    splits_of: dict[tuple, set[str]] = {}
    ids = set()
    for _, split, ident, v in candidates:
        splits_of.setdefault(ident, set()).add(split)
        ids.add((split, v.video_id))
    rows, seen, repeats = [], {}, {}
    for file, split, ident, v in candidates:
        keep = next(s for s in EVAL_ORDER if s in splits_of[ident])
        if split != keep:
            if (keep, v.video_id) in ids:
                notes.append(Note(file, f"{v.video_id} is listed in {split} and {keep} (a split leak); left out "
                                        f"of {split}, kept in {keep} only", keep, v.video_id))
                continue
            notes.append(Note(file, f"{v.video_id} is listed in {split}, and {keep} lists video {ident[1]!r} too "
                                    f"(a split leak: the same source); moved to {keep}", keep, v.video_id))
            v = dataclasses.replace(v, split=keep)
        key = (v.split, v.frames)
        if key in seen:
            repeats.setdefault((file, v.method if v.label else "real", v.split), []).append((v.video_id, seen[key]))
            continue
        seen[key] = v.video_id
        rows.append(v)
    for (file, kind, split), pairs in repeats.items():
        notes.append(Note(file, f"{len(pairs)} {kind} videos list frames already listed (e.g. {pairs[0][0]} = "
                                f"{pairs[0][1]}); kept once", split))
    return rows, notes
