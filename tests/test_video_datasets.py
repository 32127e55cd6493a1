"""The video-file readers of DFDC-preview, DeeperForensics-1.0, UADFV and FFIW-10K: their
listings on trees of empty files (splits, leak notes, absent videos, face marks), then each
built into records from rendered face videos (labels, splits, video ids, record counts, and
FFIW's per-face labels)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from data_prep import build, deeperforensics, dfdcp, face_marks, ffiw, sources, uadfv
from data_prep.report import REPORT_FILE
from mat_jax.data import records

FRAMES = 6  # per rendered video; the builds sample 4
ARGS = ["--recipe=bench", "--size=64", "--frames=4", "--workers=1", "--no_progress", "--detector=dlib"]


def _touch(root, *rels):
    for rel in rels:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()


def _notes(listing):
    return [(os.path.basename(n.path), n.split, n.video_id, n.reason) for n in listing.notes]


# --- DFDC-preview -----------------------------------------------------------------------------

DFDCP_JSON = """{
 "original_videos/100/100_a.mp4": {"label": "real", "set": "train"},
 "method_A/100/200/100_a_200.mp4": {"label": "fake", "set": "train"},
 "original_videos/300/300_a.mp4": {"label": "real", "set": "test"},
 "method_B/300/100/300_a_100.mp4": {"label": "fake", "set": "train"},
 "method_A/400/500/400_a_500.mp4": {"label": "fake", "set": "train"},
 "method_A/400/500/400_a_500.mp4": {"label": "fake", "set": "test"},
 "original_videos/videos/600/600_a.mp4": {"label": "real", "set": "train"},
 "original_videos/600/600_a.mp4": {"label": "real", "set": "train"},
 "original_videos/700/gone.mp4": {"label": "real", "set": "test"},
 "method_A/800/900/x.mp4": {"label": "maybe", "set": "train"},
 "method_A/800/900/y.mp4": ["not", "an", "entry"]
}"""


def _dfdcp_tree(root):
    _touch(root, "original_videos/100/100_a.mp4", "method_A/100/200/100_a_200.mp4", "original_videos/300/300_a.mp4",
           "method_B/300/100/300_a_100.mp4", "method_A/400/500/400_a_500.mp4", "original_videos/videos/600/600_a.mp4")
    with open(os.path.join(root, "dataset.json"), "w") as f:
        f.write(DFDCP_JSON)


def test_dfdcp_listing_keeps_the_official_split_and_fixes_its_leaks(tmp_path):
    root = str(tmp_path)
    _dfdcp_tree(root)
    listing = sources.list_videos("dfdcp", root)
    got = {v.video_id: (v.label, v.split, v.method) for v in listing}
    assert got == {
        "original_videos/100/100_a": (0, "train", "original"),
        "method_A/100/200/100_a_200": (1, "train", "method_A"),
        "original_videos/300/300_a": (0, "test", "original"),
        "method_B/300/100/300_a_100": (1, "test", "method_B"),  # its target 300 is a test person
        "method_A/400/500/400_a_500": (1, "test", "method_A"),  # listed as train and as test
        "original_videos/600/600_a": (0, "train", "original"),  # two keys, one file
    }
    assert os.path.isfile(next(v.path for v in listing if "600" in v.video_id))
    notes = _notes(listing)
    assert len(notes) == 6, notes
    reasons = " | ".join(n[3] for n in notes)
    assert "person 300 also has test videos (a split leak): kept in test" in reasons
    assert "listed 2 times (train, test); kept once, in test" in reasons
    assert "listed 2 times (train, train)" in reasons
    assert ("gone.mp4", "test", "original_videos/700/gone", "listed in dataset.json but not on disk: left out") in notes
    assert "'maybe'" in reasons and "entry 'method_A/800/900/y.mp4' is {}" in reasons


def test_dfdcp_without_its_json_names_what_to_download(tmp_path):
    with pytest.raises(sources.LayoutError, match="dataset.json"):
        dfdcp.read(str(tmp_path))


# --- DeeperForensics-1.0 ---------------------------------------------------------------------


def _defo_tree(root, ffpp, lists):
    for split, names in lists.items():
        os.makedirs(os.path.join(root, "lists", "splits"), exist_ok=True)
        with open(os.path.join(root, "lists", "splits", f"{split}.txt"), "w") as f:
            f.write("".join(f"{n}\n" for n in names))
    return ffpp


def test_deeperforensics_listing_pairs_fakes_with_their_ffpp_reals(tmp_path):
    root, ffpp = str(tmp_path / "defo"), str(tmp_path / "ffpp")
    _defo_tree(root, ffpp, {"train": ["000_M101.mp4", "001_M005.mp4", "003_W009.mp4", "004_M001.mp4"],
                            "val": ["001_W006.mp4"], "test": ["002_M101.mp4", "003_W009.mp4"]})
    fakes = ["000_M101", "001_M005", "001_W006", "002_M101", "003_W009"]
    _touch(root, *[f"manipulated_videos/end_to_end/{n}.mp4" for n in fakes],
           *[f"manipulated_videos/end_to_end_level_1/{n}.mp4" for n in fakes[:2]], "source_videos/M101/x.mp4")
    _touch(ffpp, *[f"original_sequences/youtube/c23/videos/{i}.mp4" for i in ("000", "001", "002", "003")])
    with pytest.raises(sources.LayoutError, match="--ffpp_root"):
        sources.list_videos("deeperforensics", root)
    listing = sources.list_videos("deeperforensics", root, ffpp_root=ffpp)
    got = {v.video_id: (v.label, v.split) for v in listing}
    assert got == {
        "end_to_end/000_M101": (1, "train"), "original/c23/000": (0, "train"),
        # FF++ 001's fakes were listed in train and val: the footage stays on one side.
        "end_to_end/001_M005": (1, "val"), "end_to_end/001_W006": (1, "val"), "original/c23/001": (0, "val"),
        "end_to_end/002_M101": (1, "test"), "original/c23/002": (0, "test"),
        "end_to_end/003_W009": (1, "test"), "original/c23/003": (0, "test"),  # listed in train and test
    }
    assert {v.method for v in listing} == {"end_to_end", "original"}
    notes = _notes(listing)
    reasons = " | ".join(n[3] for n in notes)
    assert "003_W009.mp4 is listed in train and test (a split leak): kept in test only" in reasons
    assert "the fakes of FF++ video 001 lie in train and val" in reasons
    assert ("004_M001.mp4", "train", "end_to_end/004_M001", "listed in lists/splits but not on disk: left out") in notes
    assert ("004.mp4", "train", "original/c23/004", "the FF++ real video of listed fakes is not on disk: left out") in notes
    assert len(notes) == 4
    versions = deeperforensics.read(root, ffpp, methods=("end_to_end", "end_to_end_level_1"))
    assert {v.video_id for v in versions if v.method == "end_to_end_level_1"} == {
        "end_to_end_level_1/000_M101", "end_to_end_level_1/001_M005"}
    assert sum("end_to_end_level_1/" in n[2] for n in _notes(versions)) == 4  # its absent fakes
    with pytest.raises(sources.LayoutError, match="reenact_postprocess"):
        deeperforensics.read(root, ffpp, methods=("reenact_postprocess",))


# --- UADFV ------------------------------------------------------------------------------------


def test_uadfv_splits_by_person_and_keeps_each_fake_with_its_real(tmp_path):
    root = str(tmp_path)
    ids = [f"{i:04d}" for i in range(1, 50)]
    _touch(root, *[f"real/{i}.mp4" for i in ids], *[f"fake/{i}_fake.mp4" for i in ids], "fake/0050_fake.mp4")
    listing = sources.list_videos("uadfv", root)
    split = {v.video_id: v.split for v in listing}
    for i in ids:
        assert split[f"real/{i}"] == split[f"fake/{i}_fake"]
    reals = [split[f"real/{i}"] for i in ids]
    assert (reals.count("train"), reals.count("val"), reals.count("test")) == (34, 5, 10)
    assert split["real/0008"] == "test" and split["real/0017"] == "val" and split["real/0001"] == "train"
    assert {v.method for v in listing if v.label} == {"UADFV"} and {v.method for v in listing if not v.label} == {"original"}
    assert _notes(listing) == [("0050_fake.mp4", "train", "fake/0050_fake",
                                "no real video real/0050.* for this fake: kept, split by its id (train)")]
    assert uadfv.split_of("clip_b") == uadfv.split_of("clip_b")  # no digits: a fixed hash


# --- FFIW-10K ---------------------------------------------------------------------------------


def _marks(path, frames):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"frames": {str(k): v for k, v in frames.items()}}, f)


def test_ffiw_listing_finds_both_releases_and_reads_the_marks(tmp_path):
    root = str(tmp_path)
    rel, test = "FFIW10K-v1-release", "FFIW10K-v1-release-test"
    _touch(root, f"{rel}/source/train/00001.mp4", f"{rel}/target/train/00001.mp4",
           f"{rel}/source/val/videos/00002.mp4", f"{rel}/target/val/videos/00002.mp4",
           f"{rel}/target/val/videos/00003.mp4", f"{test}/source/00009.mp4", f"{test}/target/00009.mp4")
    _marks(f"{root}/{rel}/target/train/00001.json", {0: [[1, 2, 30, 40]]})
    _marks(f"{root}/{rel}/annotations/val/00002.json", {5: []})
    with open(f"{root}/{rel}/target/val/videos/00003.json", "w") as f:
        f.write('{"frames": {"0": [[5, 5, 1, 1]]}}')
    listing = sources.list_videos("ffiw", root)
    got = {v.video_id: (v.label, v.split, os.path.basename(v.marks_path)) for v in listing}
    assert got == {
        "train/source/00001": (0, "train", ""), "train/target/00001": (1, "train", "00001.json"),
        "val/source/00002": (0, "val", ""), "val/target/00002": (1, "val", "00002.json"),
        "test/source/00009": (0, "test", ""), "test/target/00009": (1, "test", ""),
    }
    notes = _notes(listing)
    assert len(notes) == 2
    assert notes[0][:3] == ("00003.json", "val", "val/target/00003") and "x2 > x1" in notes[0][3]
    assert listing.notes[1].path == os.path.join(root, test, "target") and notes[1][1] == "test"
    assert "no face marks for any of its 1 fakes" in notes[1][3]
    # The release folder itself as --root.
    assert {v.split for v in ffiw.read(os.path.join(root, rel))} == {"train", "val"}


@pytest.mark.parametrize("text,why", [
    ("{", "unreadable face marks"),
    ('{"boxes": []}', '{"frames"'),
    ('{"frames": {"one": []}}', "not a frame index"),
    ('{"frames": {"0": [[1, 2, 3]]}}', "expected [x1, y1, x2, y2]"),
    ('{"frames": {"0": [1, 2, 3, 4]}}', "expected [x1, y1, x2, y2]"),
])
def test_malformed_marks_say_what_is_wrong(tmp_path, text, why):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(face_marks.MarkError, match=re.escape(why)):
        face_marks.read(str(path))


def test_sampled_frames_take_the_nearest_marked_frame():
    marks = {0: [(0, 0, 1, 1)], 20: [(2, 2, 3, 3)], 40: []}
    assert face_marks.at(marks, [0, 10, 11, 33, 60]) == {0: marks[0], 10: marks[0], 11: marks[20], 33: marks[40]}


# --- built from rendered face videos ------------------------------------------------------------


@pytest.fixture(scope="module")
def faces():
    """render(n, size, people) -> frames of `people` identities side by side, and each one's
    68 landmarks per frame (in the joined frame's pixels)."""
    from data_prep import demo_faces
    from mat_jax.faces.detect import FaceFinder

    finder = FaceFinder()
    photos = demo_faces.face_photos()
    base = {name: demo_faces.photo_landmarks(p, finder) for name, p in photos.items()}
    rng = np.random.default_rng(5)

    def render(people=1, side=240):
        sides, truths = [], []
        for k in range(people):
            name = sorted(photos)[k % len(photos)]
            ident = demo_faces.make_identity(name, photos[name], base[name], rng)
            f, lm = demo_faces.render(ident, FRAMES, (side, side), rng, face_frac=(0.4, 0.45), background=110)
            sides.append(f)
            truths.append(lm + np.array([side * k, 0.0], np.float32))
        return [np.concatenate(fs, axis=1) for fs in zip(*sides)], truths

    return render


def _write(faces, root, *rels):
    from mat_jax.faces.frames import write_video

    for rel in rels:
        write_video(os.path.join(root, rel), faces()[0])


def _build(dataset, root, out, *extra):
    assert build.main([f"--dataset={dataset}", f"--root={root}", f"--out={out}", *ARGS, *extra]) == 0
    summary = records.load_summary(out)
    recs = [r for s in summary["counts"] for f in records.split_files(out, s) for r in records.read(f)]
    with open(os.path.join(out, REPORT_FILE)) as f:
        report = [line.split("\t") for line in f.read().splitlines()[1:]]
    return recs, summary, report


def _by_video(recs):
    out = {}
    for r in recs:
        out.setdefault(r.video_id, []).append((r.split, r.label, r.frame_index))
    return {k: (v[0][0], v[0][1], len(v)) for k, v in out.items() if all(x[:2] == v[0][:2] for x in v)}


def test_dfdcp_build(faces, tmp_path):
    root = str(tmp_path / "raw")
    _write(faces, root, "original_videos/100/100_a.mp4", "method_A/100/200/100_a_200.mp4",
           "original_videos/300/300_a.mp4", "method_B/300/100/300_a_100.mp4")
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump({"original_videos/100/100_a.mp4": {"label": "real", "set": "train"},
                   "method_A/100/200/100_a_200.mp4": {"label": "fake", "set": "train"},
                   "original_videos/300/300_a.mp4": {"label": "real", "set": "test"},
                   "method_B/300/100/300_a_100.mp4": {"label": "fake", "set": "train"},
                   "method_A/1/2/absent.mp4": {"label": "fake", "set": "test"}}, f)
    recs, summary, report = _build("dfdcp", root, str(tmp_path / "out"))
    assert _by_video(recs) == {
        "original_videos/100/100_a": ("train", 0, 4), "method_A/100/200/100_a_200": ("train", 1, 4),
        "original_videos/300/300_a": ("test", 0, 4), "method_B/300/100/300_a_100": ("test", 1, 4),
    }
    assert {r.dataset for r in recs} == {"dfdcp"}
    assert summary["counts"]["test"]["methods"] == {"method_B": 4, "original": 4}
    assert [(row[0], row[3]) for row in report] == [("listing", "method_A/1/2/absent"),
                                                    ("listing", "method_B/300/100/300_a_100")]


def test_deeperforensics_build(faces, tmp_path):
    root, ffpp = str(tmp_path / "defo"), str(tmp_path / "ffpp")
    _defo_tree(root, ffpp, {"train": ["000_M101.mp4"], "val": [], "test": ["001_W006.mp4", "002_M005.mp4"]})
    _write(faces, root, "manipulated_videos/end_to_end/000_M101.mp4", "manipulated_videos/end_to_end/001_W006.mp4")
    _write(faces, ffpp, "original_sequences/youtube/c23/videos/000.mp4", "original_sequences/youtube/c23/videos/001.mp4")
    recs, summary, report = _build("deeperforensics", root, str(tmp_path / "out"), f"--ffpp_root={ffpp}")
    assert _by_video(recs) == {
        "end_to_end/000_M101": ("train", 1, 4), "original/c23/000": ("train", 0, 4),
        "end_to_end/001_W006": ("test", 1, 4), "original/c23/001": ("test", 0, 4),
    }
    assert summary["counts"]["test"]["methods"] == {"end_to_end": 4, "original": 4}
    assert sorted(row[3] for row in report) == ["end_to_end/002_M005", "original/c23/002"]


def test_uadfv_build(faces, tmp_path):
    root = str(tmp_path / "raw")
    _write(faces, root, "real/0001.mp4", "fake/0001_fake.mp4", "real/0008.mp4", "fake/0008_fake.mp4")
    recs, summary, report = _build("uadfv", root, str(tmp_path / "out"))
    assert _by_video(recs) == {
        "real/0001": ("train", 0, 4), "fake/0001_fake": ("train", 1, 4),
        "real/0008": ("test", 0, 4), "fake/0008_fake": ("test", 1, 4),
    }
    assert (summary["counts"]["train"]["real"], summary["counts"]["train"]["fake"]) == (4, 4) and report == []


def test_ffiw_build_labels_each_face_by_the_marks(faces, tmp_path):
    from mat_jax.faces.frames import write_video

    root = str(tmp_path / "FFIW10K-v1-release")
    val = os.path.join(root, "{}", "val")
    write_video(os.path.join(val.format("source"), "00001.mp4"), faces(people=2)[0])
    fake, truths = faces(people=2)
    write_video(os.path.join(val.format("target"), "00001.mp4"), fake)
    # The right person (track 1, tracks go left to right) is the forged face.
    right = truths[1]
    _marks(os.path.join(val.format("target"), "00001.json"), {
        i: [[float(lm[:, 0].min()), float(lm[:, 1].min()), float(lm[:, 0].max()), float(lm[:, 1].max())]]
        for i, lm in enumerate(right)})
    write_video(os.path.join(val.format("target"), "00002.mp4"), fake)
    with open(os.path.join(val.format("target"), "00002.json"), "w") as f:
        f.write('{"frames": [1, 2]}')
    recs, summary, report = _build("ffiw", root, str(tmp_path / "out"))
    labels = {(r.video_id, r.track_id): set() for r in recs}
    for r in recs:
        labels[(r.video_id, r.track_id)].add(r.label)
    assert labels == {("val/source/00001", 0): {0}, ("val/source/00001", 1): {0},
                      ("val/target/00001", 0): {0}, ("val/target/00001", 1): {1}}
    assert len(recs) == 16 and {r.split for r in recs} == {"val"}
    c = summary["counts"]["val"]
    assert (c["total"], c["real"], c["fake"]) == (16, 12, 4) and c["methods"] == {"FFIW": 8, "original": 8}
    assert [(row[0], row[3]) for row in report] == [("listing", "val/target/00002")]
    assert '{"frames"' in report[0][5] and "left out" in report[0][5]


def test_track_labels_follow_the_marks_and_a_bad_mark_file_skips_the_video(tmp_path):
    from data_prep import worker
    from data_prep.rows import Video
    from mat_jax.faces.crops import FaceCrop

    def crop(i, t, x):
        return FaceCrop(i, b"", None, None, None, (x, 10.0, x + 50.0, 60.0), t)

    crops = [crop(i, t, x) for i in (0, 5, 10) for t, x in ((0, 10.0), (1, 200.0))]
    marks = tmp_path / "m.json"
    _marks(str(marks), {0: [[198, 12, 250, 61]], 10: [[201, 9, 249, 60]]})  # frame 5 takes frame 0's
    fake = Video("v.mp4", 1, "test", "FFIW", "test/target/v", "ffiw", marks_path=str(marks))
    assert worker.track_labels(fake, crops) == {0: 0, 1: 1}
    real = Video("v.mp4", 0, "test", "original", "test/source/v", "ffiw", marks_path=str(marks))
    assert worker.track_labels(real, crops) == {0: 0, 1: 0}
    assert worker.track_labels(Video("v.mp4", 1, "test", "FFIW", "v", "ffiw"), crops) == {0: 1, 1: 1}
    _marks(str(marks), {40: [[198, 12, 250, 61]]})  # nothing near the sampled frames: the video's label
    assert worker.track_labels(fake, crops) == {0: 1, 1: 1}
    _marks(str(marks), {0: [], 5: [], 10: []})  # marked: no forged face in these frames
    assert worker.track_labels(fake, crops) == {0: 0, 1: 0}
    marks.write_text('{"frames": {"0": [[1, 2, 3]]}}')
    with pytest.raises(worker.frames_lib.VideoError, match=re.escape(f"{marks}: face marks: frame 0")):
        worker.track_labels(fake, crops)


@pytest.mark.parametrize("name", ["dfdcp", "deeperforensics", "uadfv", "ffiw"])
def test_cross_dataset_configs_test_on_the_records_of_their_dataset(name):
    import importlib

    config = importlib.import_module(f"configs.{name}").get_config("tiny")
    assert (config.data.dataset, config.train.eval_split, config.train.final_eval_split) == (name, "", "test")
    assert name in sources.DATASETS
