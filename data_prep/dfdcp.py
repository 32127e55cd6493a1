"""DFDC-preview (DFDCP): `dataset.json` -> rows, its official train/test split with its leaks fixed.

`dataset.json` maps a path under `--root` (`method_A/<id>/<id2>/<clip>.mp4`,
`method_B/...`, `original_videos/<id>/<clip>.mp4`) to `{"label": "real"|"fake", "set":
"train"|"test"}`. The first folder under `method_*/` and `original_videos/` is the person
whose footage the video is (a fake's target, whose real clips lie in `original_videos/<id>/`).
Fixed while listing, each a `Note` (docs/data.md, DFDC-preview):

* a video listed twice (the same key twice in the file, or two keys naming one file, with and
  without the `videos/` level some copies have) is listed once, in its eval split;
* a person with videos in both splits (the preview's split does not keep a fake with its
  target's real clips) has every video kept in test, so no face seen in training is tested on;
* a listed video that is not on disk is left out.
"""

from __future__ import annotations

import json
import os

from data_prep.rows import LayoutError, Listing, Note, Video
from data_prep.split_tools import eval_first
from mat_jax.data.records import LABEL_FAKE, LABEL_REAL, REAL_METHOD

LABELS = {"real": LABEL_REAL, "fake": LABEL_FAKE}
SETS = ("train", "test")  # the preview's own sets; it has no val


def _pairs(path: str) -> list[tuple[str, object]]:
    """The (key, entry) pairs of `dataset.json`, a key given twice kept twice."""
    try:
        with open(path) as f:
            pairs = json.load(f, object_pairs_hook=lambda kv: kv)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayoutError(f"{path} is not readable JSON ({type(e).__name__}: {e})") from e
    if not isinstance(pairs, list):
        raise LayoutError(f"{path}: expected an object of '<video path>': {{label, set}} entries")
    return pairs


def _resolve(root: str, key: str) -> str:
    """The file of `key` under `root`, trying it with and without a `videos/` level after the
    top folder; "" when neither exists."""
    parts = key.replace("\\", "/").strip("/").split("/")
    forms = [parts]
    if len(parts) > 2 and parts[1] == "videos":
        forms.append([parts[0]] + parts[2:])
    else:
        forms.append([parts[0], "videos"] + parts[1:])
    for p in forms:
        path = os.path.join(root, *p)
        if os.path.isfile(path):
            return path
    return ""


def _canonical(key: str) -> list[str]:
    parts = key.replace("\\", "/").strip("/").split("/")
    return [parts[0]] + parts[2:] if len(parts) > 2 and parts[1] == "videos" else parts


def read(root: str) -> Listing:
    listing = os.path.join(root, "dataset.json")
    if not os.path.isfile(listing):
        raise LayoutError(
            f"{listing} not found: --root must be the DFDC-preview folder holding dataset.json, "
            "method_A/, method_B/ and original_videos/"
        )
    notes: list[Note] = []
    found: dict[str, dict] = {}  # file -> {"key", "label", "splits"}
    for key, entry in _pairs(listing):
        # object_pairs_hook hands every object over as its (name, value) pairs.
        entry = dict(entry) if isinstance(entry, list) and all(isinstance(p, tuple) for p in entry) else {}
        label = LABELS.get(str(entry.get("label", "")).lower())
        split = entry.get("set")
        if label is None or split not in SETS:
            notes.append(Note(listing, f"entry {key!r} is {entry!r}; expected label real|fake and set "
                                       "train|test: left out"))
            continue
        parts = _canonical(key)
        if len(parts) < 3 or (label == LABEL_REAL) != (parts[0] == "original_videos"):
            notes.append(Note(listing, f"{key!r} is labelled {entry.get('label')!r} but does not lie in "
                                       f"{'original_videos' if label == LABEL_REAL else 'method_*'}/<id>/: left out"))
            continue
        path = _resolve(root, key)
        if not path:
            notes.append(Note(os.path.join(root, key), "listed in dataset.json but not on disk: left out",
                              split, os.path.splitext("/".join(parts))[0]))
            continue
        seen = found.setdefault(path, {"parts": parts, "label": label, "splits": []})
        seen["splits"].append(split)
    rows, by_person = [], {}
    for path, v in found.items():
        split = eval_first(v["splits"])
        video_id = os.path.splitext("/".join(v["parts"]))[0]
        if len(v["splits"]) > 1:
            notes.append(Note(listing, f"{video_id} is listed {len(v['splits'])} times "
                                       f"({', '.join(v['splits'])}); kept once, in {split}", split, video_id))
        method = REAL_METHOD if v["label"] == LABEL_REAL else v["parts"][0]
        rows.append(Video(path, v["label"], split, method, video_id, "dfdcp"))
        by_person.setdefault(v["parts"][1], set()).add(split)
    out = []
    for r in sorted(rows, key=lambda r: r.video_id):
        person = r.video_id.split("/")[1]
        if r.split == "train" and "test" in by_person[person]:
            notes.append(Note(listing, f"{r.video_id} is train, but person {person} also has test videos "
                                       "(a split leak): kept in test", "test", r.video_id))
            r = Video(r.path, r.label, "test", r.method, r.video_id, r.dataset)
        out.append(r)
    if not out:
        first = f"; first problem: {notes[0].path}: {notes[0].reason}" if notes else ""
        raise LayoutError(f"no usable video in {listing} under {root}{first}")
    return Listing(out, notes)
