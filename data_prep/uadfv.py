"""UADFV: `real/<id>.mp4` and `fake/<id>_fake.mp4`, split by person with a fixed rule.

UADFV ships no split; peers make their own, and DeepfakeBench's lists share videos between
train and test. Here a video's person is its id (`0042` for `real/0042.mp4` and
`fake/0042_fake.mp4`), so a fake always goes with its real video, and the split is the id's
number: last digit 0-6 train, 7 val, 8-9 test (an id without digits uses a CRC32 of the name
the same way). Of the 49 pairs that is 34 train, 5 val, 10 test. A fake whose real video is
missing is still listed, with a `Note`.
"""

from __future__ import annotations

import os
import re
import zlib

from data_prep.rows import LayoutError, Listing, Note, Video
from data_prep.split_tools import stem, videos_in
from mat_jax.data.records import LABEL_FAKE, LABEL_REAL, REAL_METHOD


def person(name: str) -> str:
    s = stem(name)
    return s[: -len("_fake")] if s.lower().endswith("_fake") else s


def split_of(person_id: str) -> str:
    digits = re.findall(r"\d+", person_id)
    n = int(digits[-1]) if digits else zlib.crc32(person_id.encode())
    return "train" if n % 10 < 7 else "val" if n % 10 == 7 else "test"


def read(root: str) -> Listing:
    real_dir, fake_dir = os.path.join(root, "real"), os.path.join(root, "fake")
    if not (os.path.isdir(real_dir) and os.path.isdir(fake_dir)):
        raise LayoutError(f"--root {root} must hold UADFV's real/ and fake/ folders")
    reals, fakes = videos_in(real_dir), videos_in(fake_dir)
    real_people = {person(f) for f in reals}
    rows, notes = [], []
    for folder, files, label in ((real_dir, reals, LABEL_REAL), (fake_dir, fakes, LABEL_FAKE)):
        for f in files:
            p = person(f)
            split = split_of(p)
            vid = f"{os.path.basename(folder)}/{stem(f)}"
            if label == LABEL_FAKE and p not in real_people:
                notes.append(Note(os.path.join(folder, f), f"no real video real/{p}.* for this fake: kept, "
                                  f"split by its id ({split})", split, vid))
            rows.append(Video(os.path.join(folder, f), label, split, REAL_METHOD if label == LABEL_REAL else "UADFV",
                              vid, "uadfv"))
    if not rows:
        raise LayoutError(f"no videos in {real_dir} or {fake_dir}")
    return Listing(rows, notes)
