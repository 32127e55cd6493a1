"""Dataset readers: a raw tree -> one `Video` row per video (path, label, split, method, ...).

Layouts: docs/data.md. Readers only list files; they never decode, so a
corrupt or empty video is listed like any other and reported later by the worker.
"""

from __future__ import annotations

import csv
import json
import os

from data_prep import deeperforensics, deepfakebench, df40, dfdcp, ffiw, uadfv, wilddeepfake
from data_prep.rows import LayoutError, Listing, Note, Video  # noqa: F401 - the readers' types, named here as before
from data_prep.split_tools import quality_dir, videos_in
from mat_jax.data.records import LABEL_FAKE, LABEL_REAL, REAL_METHOD, SPLITS

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter", "DeepFakeDetection")
# Fakes whose face is not where their source real video's face is: self-blended images move
# and rescale the face inside the blend on purpose (step 5 of data_prep/sbi.py), so the real video's
# landmarks would put a fake's eyes and mouth off the crop template, a label cue in the crops
# that landmarks found on the video itself never give (the demo's model learned it and then
# missed fakes cut with their own landmarks). They never get a `landmark_source`.
NOT_FACE_ALIGNED = ("SBI",)
DATASETS = (
    "ffpp", "celebdf", "dfdc", "demo", "deepfakebench", "wilddeepfake", "df40",
    "dfdcp", "deeperforensics", "uadfv", "ffiw",
)  # fmt: skip


def _ffpp_split_file(root: str, split: str, splits_dir: str | None) -> str:
    candidates = [
        os.path.join(d, f"{split}.json")
        for d in ([splits_dir] if splits_dir else [])
        + [os.path.join(root, "splits"), root, os.path.join(root, "dataset", "splits")]
    ]
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise LayoutError(
        f"FF++ split file {split}.json not found (looked in: {', '.join(candidates)}). Copy the official "
        "dataset/splits/{train,val,test}.json of the FaceForensics repository to <root>/splits/ "
        "or pass --splits_dir."
    )


def ffpp(
    root: str,
    quality: str = "c23",
    methods: tuple[str, ...] | None = None,
    splits_dir: str | None = None,
    dataset: str = "ffpp",
) -> list[Video]:
    """FaceForensics++: originals + each manipulation, expanded from the official pair lists.

    A pair ["a", "b"] gives reals a, b and, per method, fakes a_b and b_a (target_source).
    Methods default to every folder under manipulated_sequences/ that has <quality>/videos.
    DeepFakeDetection has no official split; its fakes and the `actors` originals go to test.
    """
    real_dir = os.path.join(
        quality_dir(os.path.join(root, "original_sequences", "youtube"), quality), "videos"
    )
    if not os.path.isdir(real_dir):
        raise LayoutError(
            f"{real_dir} does not exist: --root must be the FaceForensics++ folder that holds "
            f"original_sequences/youtube/{quality}/videos (check --root and --quality)"
        )
    q = os.path.basename(os.path.dirname(real_dir))
    man_root = os.path.join(root, "manipulated_sequences")
    present = sorted(
        m
        for m in (os.listdir(man_root) if os.path.isdir(man_root) else [])
        if os.path.isdir(os.path.join(quality_dir(os.path.join(man_root, m), quality), "videos"))
    )
    if methods is None:
        methods = tuple(present)
    missing = [m for m in methods if m not in present]
    if missing:
        raise LayoutError(
            f"no manipulated_sequences/<method>/{quality}/videos for {missing} under {root}; "
            f"present: {present}"
        )

    rows: list[Video] = []
    for split in SPLITS:
        with open(_ffpp_split_file(root, split, splits_dir)) as f:
            pairs = json.load(f)
        ids = sorted({i for p in pairs for i in p})
        for i in ids:
            rows.append(
                Video(
                    os.path.join(real_dir, f"{i}.mp4"),
                    LABEL_REAL,
                    split,
                    REAL_METHOD,
                    f"{REAL_METHOD}/{q}/{i}",
                    dataset,
                )
            )
        fakes = sorted({f"{a}_{b}" for a, b in pairs} | {f"{b}_{a}" for a, b in pairs})
        for m in methods:
            if m == "DeepFakeDetection":
                continue
            vdir = os.path.join(quality_dir(os.path.join(man_root, m), quality), "videos")
            for name in fakes:
                mask = os.path.join(man_root, m, "masks", "videos", f"{name}.mp4")
                rows.append(
                    Video(
                        os.path.join(vdir, f"{name}.mp4"),
                        LABEL_FAKE,
                        split,
                        m,
                        f"{m}/{q}/{name}",
                        dataset,
                        mask if os.path.isfile(mask) else "",
                        "" if m in NOT_FACE_ALIGNED else f"{REAL_METHOD}/{q}/{name.split('_')[0]}",
                    )
                )
    if "DeepFakeDetection" in methods:
        rows += _dfd(root, man_root, quality, q, dataset)
    return rows


def _dfd(root: str, man_root: str, quality: str, q: str, dataset: str) -> list[Video]:
    actors = os.path.join(quality_dir(os.path.join(root, "original_sequences", "actors"), quality), "videos")
    rows = [
        Video(
            os.path.join(actors, f),
            LABEL_REAL,
            "test",
            REAL_METHOD,
            f"{REAL_METHOD}/actors/{q}/{os.path.splitext(f)[0]}",
            dataset,
        )
        for f in videos_in(actors)
    ]
    vdir = os.path.join(quality_dir(os.path.join(man_root, "DeepFakeDetection"), quality), "videos")
    for f in videos_in(vdir):
        name = os.path.splitext(f)[0]
        mask = os.path.join(man_root, "DeepFakeDetection", "masks", "videos", f)
        rows.append(
            Video(
                os.path.join(vdir, f),
                LABEL_FAKE,
                "test",
                "DeepFakeDetection",
                f"DeepFakeDetection/{q}/{name}",
                dataset,
                mask if os.path.isfile(mask) else "",
            )
        )
    return rows


def _celeb_folder(root: str, name: str) -> str:
    """Celeb-DF folders, with or without the `videos/` level that peers insert."""
    inner = os.path.join(root, name, "videos")
    return inner if os.path.isdir(inner) else os.path.join(root, name)


def celebdf(root: str) -> list[Video]:
    """Celeb-DF v2: the 518 videos of List_of_testing_videos.txt are `test`, all others `train`.

    The list's first column is 1 for REAL (the reverse of our labels). Keeping the test list
    out of train avoids DeepfakeBench's leak (its Celeb-DF train list holds test videos).
    """
    listing = os.path.join(root, "List_of_testing_videos.txt")
    if not os.path.isfile(listing):
        raise LayoutError(
            f"{listing} not found: --root must be the Celeb-DF v2 folder holding Celeb-real/, "
            "YouTube-real/, Celeb-synthesis/ and List_of_testing_videos.txt"
        )
    test: dict[str, int] = {}
    with open(listing) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[0] not in ("0", "1"):
                raise LayoutError(
                    f"{listing}:{n}: expected '<1 real|0 fake> <folder>/<file>.mp4', got {line!r}"
                )
            test[parts[1]] = LABEL_REAL if parts[0] == "1" else LABEL_FAKE
    rows: list[Video] = []
    for folder, label in (
        ("Celeb-real", LABEL_REAL),
        ("YouTube-real", LABEL_REAL),
        ("Celeb-synthesis", LABEL_FAKE),
    ):
        vdir = _celeb_folder(root, folder)
        for f in videos_in(vdir):
            rel = f"{folder}/{f}"
            split = "test" if rel in test else "train"
            if rel in test and test[rel] != label:
                raise LayoutError(
                    f"{listing} labels {rel} as {'real' if test[rel] == LABEL_REAL else 'fake'}, "
                    f"but it lies in {folder}/"
                )
            method = REAL_METHOD if label == LABEL_REAL else "Celeb-synthesis"
            rows.append(
                Video(
                    os.path.join(vdir, f),
                    label,
                    split,
                    method,
                    f"{folder}/{os.path.splitext(f)[0]}",
                    "celebdf",
                )
            )
    listed = {r.video_id.split("/")[0] + "/" + os.path.basename(r.path) for r in rows}
    absent = sorted(set(test) - listed)
    if absent:
        raise LayoutError(f"{len(absent)} videos of {listing} are missing under {root}, e.g. {absent[:3]}")
    return rows


def dfdc(root: str) -> list[Video]:
    """DFDC: `dfdc_train_part_*/metadata.json` parts, plus folders with a `labels.csv`.

    metadata.json maps "<name>.mp4" -> {"label": "REAL"|"FAKE", "split": ..., "original": ...};
    labels.csv has `filename,label` (1 fake). A labels.csv folder whose name contains "val"
    is the validation split, any other the test split; its videos lie beside it or in
    `videos/` or `test/`.
    """
    rows: list[Video] = []
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    for d in subdirs:
        meta = os.path.join(root, d, "metadata.json")
        if not os.path.isfile(meta):
            continue
        with open(meta) as f:
            entries = json.load(f)
        for name in sorted(entries):
            e = entries[name]
            label = {"REAL": LABEL_REAL, "FAKE": LABEL_FAKE}.get(str(e.get("label", "")).upper())
            if label is None:
                raise LayoutError(f"{meta}: {name} has label {e.get('label')!r}; expected REAL or FAKE")
            split = e.get("split", "train")
            split = split if split in SPLITS else "train"
            method = REAL_METHOD if label == LABEL_REAL else "DFDC"
            rows.append(
                Video(
                    os.path.join(root, d, name),
                    label,
                    split,
                    method,
                    f"{d}/{os.path.splitext(name)[0]}",
                    "dfdc",
                )
            )
    for d in [""] + subdirs:
        labels = os.path.join(root, d, "labels.csv")
        if not os.path.isfile(labels):
            continue
        split = "val" if "val" in (d or os.path.basename(os.path.normpath(root))).lower() else "test"
        folders = [os.path.join(root, d, s) for s in ("", "videos", "test")]
        with open(labels, newline="") as f:
            for row in csv.DictReader(f):
                name = row.get("filename")
                if name is None or row.get("label") not in ("0", "1"):
                    raise LayoutError(
                        f"{labels}: expected columns filename,label (0 real, 1 fake), got {row}"
                    )
                path = next(
                    (os.path.join(p, name) for p in folders if os.path.isfile(os.path.join(p, name))),
                    os.path.join(folders[1], name),
                )
                label = int(row["label"])
                method = REAL_METHOD if label == LABEL_REAL else "DFDC"
                rows.append(
                    Video(path, label, split, method, f"{d or 'test'}/{os.path.splitext(name)[0]}", "dfdc")
                )
    if not rows:
        raise LayoutError(
            f"no DFDC videos under {root}: expected dfdc_train_part_*/metadata.json and/or a "
            "labels.csv (filename,label) beside test videos"
        )
    return rows


def demo_root(root: str) -> str:
    """The FF++-shaped part of a demo tree: `<root>/ffpp` if present, else `root` itself."""
    inner = os.path.join(root, "ffpp")
    return inner if os.path.isdir(os.path.join(inner, "original_sequences")) else root


def list_videos(
    dataset: str,
    root: str,
    *,
    quality: str = "c23",
    methods: tuple[str, ...] | None = None,
    splits_dir: str | None = None,
    json_path: str = "",
    ffpp_root: str = "",
) -> list[Video]:
    """The rows of `dataset` under `root` (one of DATASETS), as a `Listing` (its notes go to
    report.tsv); `json_path` is the dataset JSON of the DeepfakeBench formats (`--json`),
    `ffpp_root` the FF++ folder whose originals are DeeperForensics-1.0's reals (`--ffpp_root`)."""
    if not os.path.isdir(root):
        raise LayoutError(f"--root {root} is not a directory")
    rows = _list(dataset, root, quality=quality, methods=methods, splits_dir=splits_dir, json_path=json_path,
                 ffpp_root=ffpp_root)
    return rows if isinstance(rows, Listing) else Listing(rows)


def _list(dataset: str, root: str, *, quality: str, methods, splits_dir, json_path: str = "",
          ffpp_root: str = "") -> list[Video]:
    if dataset == "dfdcp":
        return dfdcp.read(root)
    if dataset == "deeperforensics":
        return deeperforensics.read(root, ffpp_root, quality, methods)
    if dataset == "uadfv":
        return uadfv.read(root)
    if dataset == "ffiw":
        return ffiw.read(root)
    if dataset == "deepfakebench":
        return deepfakebench.read(root, json_path, quality)
    if dataset == "wilddeepfake":
        return wilddeepfake.read(root)
    if dataset == "df40":
        return df40.read(root, json_path, quality, methods)
    if dataset == "ffpp":
        return ffpp(root, quality, methods, splits_dir)
    if dataset == "demo":
        return ffpp(demo_root(root), quality, methods, splits_dir, dataset="demo")
    if dataset == "celebdf":
        return celebdf(root)
    if dataset == "dfdc":
        return dfdc(root)
    raise LayoutError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
