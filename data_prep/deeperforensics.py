"""DeeperForensics-1.0: its face swaps with their FF++ real videos, official train/val/test split.

Fakes lie in `manipulated_videos/<version>/<ffpp id>_<actor>.mp4` (`000_M101.mp4`: FF++
video 000 with actor M101's face swapped in); `end_to_end` is the clean version, the others
(`end_to_end_level_1`, ..., `reenact_postprocess`) are its perturbed copies, picked with
`--methods`. `lists/splits/{train,val,test}.txt` name the fakes, one file name a line. The
release's real videos are the FF++ originals the swaps were made on (its `source_videos/` are
the actors' studio clips, the swapped-in faces, not the fakes' real counterparts), so the
reals come from `--ffpp_root` (or `original_sequences/` inside `--root`), each in the split of
its fakes. Fixed while listing, each a `Note`: a fake listed in two splits, or an FF++ video
whose fakes lie in two splits (the same footage on both sides), is kept in its eval split; a
listed fake or a real that is not on disk is left out.
"""

from __future__ import annotations

import os

from data_prep.rows import LayoutError, Listing, Note, Video
from data_prep.split_tools import eval_first, quality_dir, stem
from mat_jax.data.records import LABEL_FAKE, LABEL_REAL, REAL_METHOD, SPLITS

DEFAULT_VERSIONS = ("end_to_end",)


def _split_lists(root: str) -> dict[str, list[str]]:
    folder = os.path.join(root, "lists", "splits")
    out = {}
    for split in SPLITS:
        path = os.path.join(folder, f"{split}.txt")
        if not os.path.isfile(path):
            raise LayoutError(
                f"{path} not found: --root must be the DeeperForensics-1.0 folder holding "
                "manipulated_videos/ and lists/splits/{train,val,test}.txt"
            )
        with open(path) as f:
            out[split] = [os.path.basename(line.strip()) for line in f if line.strip()]
    return out


def _real_dir(root: str, ffpp_root: str, quality: str) -> str:
    for base in ([ffpp_root] if ffpp_root else []) + [root]:
        d = os.path.join(quality_dir(os.path.join(base, "original_sequences", "youtube"), quality), "videos")
        if os.path.isdir(d):
            return d
    raise LayoutError(
        "DeeperForensics-1.0's real videos are FF++'s originals: pass --ffpp_root=<the FaceForensics++ "
        f"folder holding original_sequences/youtube/{quality}/videos> (or put original_sequences/ in --root)"
    )


def read(root: str, ffpp_root: str = "", quality: str = "c23", methods: tuple[str, ...] | None = None) -> Listing:
    lists = _split_lists(root)
    man = os.path.join(root, "manipulated_videos")
    present = sorted(d for d in (os.listdir(man) if os.path.isdir(man) else []) if os.path.isdir(os.path.join(man, d)))
    versions = tuple(methods) if methods else DEFAULT_VERSIONS
    missing = [v for v in versions if v not in present]
    if missing:
        raise LayoutError(f"no manipulated_videos/{missing[0]}/ under {root}; present: {present}")
    real_dir = _real_dir(root, ffpp_root, quality)
    q = os.path.basename(os.path.dirname(real_dir))
    notes: list[Note] = []

    listed: dict[str, list[str]] = {}
    for split in SPLITS:
        for name in lists[split]:
            listed.setdefault(name, []).append(split)
    fake_split = {}
    for name, splits in listed.items():
        fake_split[name] = eval_first(splits)
        if len(splits) > 1:
            notes.append(Note(os.path.join(root, "lists", "splits"), f"{name} is listed in {' and '.join(splits)} "
                              f"(a split leak): kept in {fake_split[name]} only", fake_split[name]))
    by_source: dict[str, set[str]] = {}
    for name, split in fake_split.items():
        by_source.setdefault(stem(name).split("_")[0], set()).add(split)
    for source, splits in sorted(by_source.items()):
        if len(splits) > 1:
            keep = eval_first(splits)
            notes.append(Note(os.path.join(root, "lists", "splits"), f"the fakes of FF++ video {source} lie in "
                              f"{' and '.join(sorted(splits))} (the same footage on both sides, a split leak): "
                              f"that video and all its fakes kept in {keep}", keep))
            for name in fake_split:
                if stem(name).split("_")[0] == source:
                    fake_split[name] = keep
            by_source[source] = {keep}

    rows = []
    for name, split in sorted(fake_split.items()):
        for version in versions:
            path = os.path.join(man, version, name)
            vid = f"{version}/{stem(name)}"
            if not os.path.isfile(path):
                notes.append(Note(path, "listed in lists/splits but not on disk: left out", split, vid))
                continue
            rows.append(Video(path, LABEL_FAKE, split, version, vid, "deeperforensics"))
    for source, splits in sorted(by_source.items()):
        (split,) = splits
        path = os.path.join(real_dir, f"{source}.mp4")
        vid = f"{REAL_METHOD}/{q}/{source}"
        if not os.path.isfile(path):
            notes.append(Note(path, "the FF++ real video of listed fakes is not on disk: left out", split, vid))
            continue
        rows.append(Video(path, LABEL_REAL, split, REAL_METHOD, vid, "deeperforensics"))
    if not rows:
        raise LayoutError(f"none of the videos of {root}/lists/splits is on disk (versions {versions})")
    return Listing(rows, notes)
