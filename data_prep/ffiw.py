"""FFIW-10K: multi-person videos, face-level labels from mark files.

Release layout (`tfzhou/FFIW`): `FFIW10K-v1-release/{source,target}/{train,val}/*.mp4` (the
real videos and their forgeries, same file name) and the test release
`FFIW10K-v1-release-test/{source,target}/*.mp4` (with or without a `test/` level; any of these
folders may have a `videos/` level). `--root` holds the two release folders, or is one of them.
In a fake only some faces are forged: a mark file per fake, `<stem>.json` beside the video or in
`<release>/annotations/<split>/` (format: `data_prep.face_marks`), says which, and each face
track is labelled by it (`worker.track_labels`). A fake without marks keeps the old rule,
every face fake, and gets a `Note`; one whose mark file is malformed is left out with one.
"""

from __future__ import annotations

import os

from data_prep import face_marks
from data_prep.rows import LayoutError, Listing, Note, Video
from data_prep.split_tools import stem, videos_in
from mat_jax.data.records import LABEL_FAKE, LABEL_REAL, REAL_METHOD

RELEASE, TEST_RELEASE = "FFIW10K-v1-release", "FFIW10K-v1-release-test"


def _folder(*parts: str) -> str:
    """`parts` joined, or its `videos/` subfolder when the videos lie there."""
    d = os.path.join(*parts)
    inner = os.path.join(d, "videos")
    return inner if not videos_in(d) and videos_in(inner) else d


def _releases(root: str) -> list[tuple[str, str, str]]:
    """(release folder, split, sub-path under source/ and target/) of each split present."""
    found = []
    for name in (RELEASE, TEST_RELEASE):
        rel = os.path.join(root, name)
        if not os.path.isdir(rel) and os.path.basename(os.path.normpath(root)) == name:
            rel = root
        if not os.path.isdir(os.path.join(rel, "source")):
            continue
        if name == RELEASE:
            found += [(rel, s, s) for s in ("train", "val") if os.path.isdir(os.path.join(rel, "source", s))]
        else:
            sub = "test" if os.path.isdir(os.path.join(rel, "source", "test")) else ""
            found.append((rel, "test", sub))
    return found


def _marks_file(release: str, split: str, folder: str, name: str) -> str:
    for path in (os.path.join(folder, f"{stem(name)}.json"),
                 os.path.join(release, "annotations", split, f"{stem(name)}.json")):
        if os.path.isfile(path):
            return path
    return ""


def read(root: str) -> Listing:
    releases = _releases(root)
    if not releases:
        raise LayoutError(
            f"no FFIW-10K release under {root}: expected {RELEASE}/source/{{train,val}}/ and "
            f"target/{{train,val}}/ and/or {TEST_RELEASE}/source/ and target/"
        )
    rows, notes = [], []
    for release, split, sub in releases:
        tag = os.path.basename(os.path.normpath(release))
        for kind, label in (("source", LABEL_REAL), ("target", LABEL_FAKE)):
            folder = _folder(release, kind, sub) if sub else _folder(release, kind)
            unmarked = []
            for f in videos_in(folder):
                path, vid = os.path.join(folder, f), f"{split}/{kind}/{stem(f)}"
                marks = _marks_file(release, split, folder, f) if label == LABEL_FAKE else ""
                if label == LABEL_FAKE and not marks:
                    unmarked.append(Note(path, f"no face marks ({stem(f)}.json beside it or in {tag}/annotations/"
                                               f"{split}/): every face of this fake labelled fake", split, vid))
                if marks:
                    try:
                        face_marks.read(marks)
                    except face_marks.MarkError as e:
                        notes.append(Note(marks, f"{e}: video left out", split, vid))
                        continue
                method = REAL_METHOD if label == LABEL_REAL else "FFIW"
                rows.append(Video(path, label, split, method, vid, "ffiw", marks_path=marks))
            n_fakes = sum(r.split == split and r.label == LABEL_FAKE for r in rows)
            if unmarked and len(unmarked) == n_fakes:
                # One row, not thousands, for a release without marks.
                notes.append(Note(folder, f"no face marks for any of its {n_fakes} fakes: every face of them "
                                          "labelled fake", split))
            else:
                notes += unmarked
    if not rows:
        raise LayoutError(f"the FFIW-10K folders under {root} hold no videos")
    return Listing(rows, notes)
