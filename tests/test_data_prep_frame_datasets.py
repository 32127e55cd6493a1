"""Frame-folder datasets end to end: a generated DeepfakeBench tree (JSON, frames, 81-point
landmarks), a WildDeepfake tree (face sequences) and a DF40 tree -> `data_prep.build.main` ->
records checked for labels, splits, video ids and counts, and report.tsv for what was fixed."""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import cv2
import numpy as np
import pytest

from data_prep import build, demo_faces, sources
from data_prep.report import REPORT_FILE
from data_prep.rows import Video
from mat_jax.data import records
from mat_jax.faces import align, detect
from mat_jax.faces.crops import face_crop
from mat_jax.faces.settings import Settings

SIZE = 64
BENCH_CROP = 128  # DeepfakeBench's frames are 256 px aligned crops; half that keeps the test cheap
ARGS = ["--recipe=bench", f"--size={SIZE}", "--format=png", "--frames=4", "--workers=1", "--no_progress"]
ELSEWHERE = "/home/someone/DeepfakeBench/datasets/rgb"  # where the JSON was written


@pytest.fixture(scope="module")
def people():
    finder = detect.FaceFinder()
    return [demo_faces.Identity(n, p, demo_faces.photo_landmarks(p, finder), {})
            for n, p in demo_faces.face_photos().items()]


def _bench_video(folder: str, ident, seed: int, n: int = 4, landmarks: bool = True) -> list[str]:
    """A DeepfakeBench video folder: aligned crops `frames/<v>/NNN.png` and 81 landmarks in
    crop pixels `landmarks/<v>/NNN.npy`; returns the frame paths."""
    rng = np.random.default_rng(seed)
    frames, lms = demo_faces.render(ident, n, (160, 160), rng, face_frac=(0.4, 0.45), background=110)
    recipe = align.RECIPES["bench"].with_overrides(size=BENCH_CROP)
    lm_folder = folder.replace(f"{os.sep}frames{os.sep}", f"{os.sep}landmarks{os.sep}")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k, (frame, lm) in enumerate(zip(frames, lms)):
        crop, lm_crop, _ = align.align(frame, lm, recipe)
        index = 10 * k + 3
        path = os.path.join(folder, f"{index:03d}.png")
        cv2.imwrite(path, cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        if landmarks:
            os.makedirs(lm_folder, exist_ok=True)
            extra = lm_crop[17:30] - [0, 12]  # dlib-81's forehead points: any 13 beyond the 68
            np.save(os.path.join(lm_folder, f"{index:03d}.npy"), np.concatenate([lm_crop, extra]))
        paths.append(path)
    return paths


def _entry(paths, label, root=None, masks=()):
    # Frame paths as DeepfakeBench wrote them on its machine (absolute), or relative to --root.
    shown = [ELSEWHERE + p[len(root):] if root else p for p in paths]
    return {"label": label, "frames": shown, "masks": list(masks)}


def _records(out):
    counts = records.load_summary(out)["counts"]
    return {s: [r for f in records.split_files(out, s) for r in records.read(f)] for s in counts}


def _report(out):
    with open(os.path.join(out, REPORT_FILE), newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


# --- DeepfakeBench import -------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_tree(people, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bench") / "rgb")
    ff = os.path.join(root, "FaceForensics++")
    real = os.path.join(ff, "original_sequences", "youtube", "c23", "frames")
    fake = os.path.join(ff, "manipulated_sequences", "{}", "c23", "frames")
    v = {
        "000": _bench_video(os.path.join(real, "000"), people[0], 1),
        "001": _bench_video(os.path.join(real, "001"), people[-1], 2),
        "002": _bench_video(os.path.join(real, "002"), people[0], 3),
        "DF/000_001": _bench_video(os.path.join(fake.format("Deepfakes"), "000_001"), people[0], 4),
        "F2F/000_001": _bench_video(os.path.join(fake.format("Face2Face"), "000_001"), people[-1], 5),
        "004": _bench_video(os.path.join(real, "004"), people[-1], 8, n=2),
        "DF/004_fake": _bench_video(os.path.join(fake.format("Deepfakes"), "004_fake"), people[-1], 9, n=2),
        "A/010": _bench_video(os.path.join(fake.format("method_A"), "010"), people[0], 6, n=2),
        "B/010": _bench_video(os.path.join(fake.format("method_B"), "010"), people[-1], 7, n=2),
        "blank": [],
    }
    # A landmark file of the wrong shape: that frame is left out.
    bad_lm = v["001"][1].replace("frames", "landmarks")[:-4] + ".npy"
    np.save(bad_lm, np.zeros((5, 2)))
    # Some frames the JSON names are gone; every frame of "003" is.
    os.remove(v["002"][2])
    gone = [os.path.join(real, "003", f"{k:03d}.png") for k in range(4)]
    # No face at all, and no landmarks folder: detection finds nothing.
    blank = os.path.join(real, "blank")
    os.makedirs(blank)
    rng = np.random.default_rng(0)
    for k in range(4):
        cv2.imwrite(os.path.join(blank, f"{k:03d}.png"), rng.integers(0, 255, (BENCH_CROP, BENCH_CROP, 3), np.uint8))
        v["blank"].append(os.path.join(blank, f"{k:03d}.png"))
    rel = [os.path.relpath(p, root) for p in v["002"]]  # relative to --root
    content = {"FaceForensics++": {
        "FF-real": {
            # "004" in train, its fake "004_fake" in test: UADFV's source leak.
            "train": {"c23": {"000": _entry(v["000"], "FF-real", root), "002": _entry(rel, "FF-real"),
                              "004": _entry(v["004"], "FF-real", root),
                              "blank": _entry(v["blank"], "FF-real", root)}},
            # "000" again in test: Celeb-DF's leak in DeepfakeBench's lists.
            "test": {"c23": {"000": _entry(v["000"][::-1], "FF-real", root),  # frame order from the names
                             "001": _entry(v["001"], "FF-real", root),
                             "003": _entry(gone, "FF-real", root)}},
            "val": {"c40": {"001": _entry(["/x/y.png"], "FF-real")}},  # another compression: not read
        },
        "FF-DF": {"test": {"c23": {"000_001": _entry(v["DF/000_001"], "FF-DF", root),
                                   "004_fake": _entry(v["DF/004_fake"], "FF-DF", root)}}},
        "FF-F2F": {"test": {"c23": {"000_001": _entry(v["F2F/000_001"], "FF-F2F", root)}}},
        # One entry, frames in two folders: two sources' videos grouped under one name.
        "FF-FS": {"train": {"c23": {"010": _entry(v["A/010"] + v["B/010"], "FF-FS", root)}}},
    }}  # fmt: skip
    path = os.path.join(os.path.dirname(root), "FaceForensics++.json")
    with open(path, "w") as f:
        json.dump(content, f)
    return root, path, v, bad_lm


@pytest.fixture(scope="module")
def bench_built(bench_tree, tmp_path_factory):
    root, js, _, _ = bench_tree
    out = str(tmp_path_factory.mktemp("bench_out"))
    assert build.main(["--dataset=deepfakebench", f"--root={root}", f"--json={js}", f"--out={out}", *ARGS]) == 0
    return out, _records(out), _report(out)


def test_deepfakebench_import_labels_splits_and_ids(bench_built):
    out, recs, _ = bench_built
    by_video = {}
    for split, rs in recs.items():
        for r in rs:
            by_video.setdefault(r.video_id, set()).add((split, r.label, r.method, r.dataset))
    base = "FaceForensics++/{}/c23/{}"
    assert by_video == {
        base.format("FF-real", "000"): {("test", 0, "original", "deepfakebench")},  # the leak: test only
        base.format("FF-real", "001"): {("test", 0, "original", "deepfakebench")},
        base.format("FF-real", "002"): {("train", 0, "original", "deepfakebench")},
        base.format("FF-real", "004"): {("test", 0, "original", "deepfakebench")},  # moved to its fake's split
        base.format("FF-DF", "004_fake"): {("test", 1, "FF-DF", "deepfakebench")},
        base.format("FF-DF", "000_001"): {("test", 1, "FF-DF", "deepfakebench")},
        base.format("FF-F2F", "000_001"): {("test", 1, "FF-F2F", "deepfakebench")},  # same name, kept apart
        base.format("FF-FS", "method_A/010"): {("train", 1, "FF-FS", "deepfakebench")},
        base.format("FF-FS", "method_B/010"): {("train", 1, "FF-FS", "deepfakebench")},
    }
    frames = {vid: sorted(r.frame_index for s in recs.values() for r in s if r.video_id == vid) for vid in by_video}
    assert frames[base.format("FF-real", "000")] == [3, 13, 23, 33]  # named after the files
    assert frames[base.format("FF-real", "001")] == [3, 23, 33]  # 013's landmarks have the wrong shape
    assert frames[base.format("FF-real", "002")] == [3, 13, 33]  # 023.png is gone
    assert frames[base.format("FF-FS", "method_A/010")] == [3, 13]
    summary = records.load_summary(out)
    assert summary["counts"]["test"]["total"] == 4 + 3 + 4 + 4 + 2 + 2 and summary["counts"]["train"]["total"] == 3 + 2 + 2
    assert summary["counts"]["test"]["reused_landmarks"] == 0 and "val" not in summary["counts"]


def test_deepfakebench_crops_are_ours_cut_from_its_landmarks(bench_tree, bench_built):
    _, _, v, _ = bench_tree
    _, recs, _ = bench_built
    settings = Settings(dataset="deepfakebench", recipe="bench", size=SIZE, image_format="png")
    recipe = settings.crop_recipe()
    checked = 0
    for r in recs["test"]:
        if r.video_id != "FaceForensics++/FF-DF/c23/000_001":
            continue
        path = v["DF/000_001"][[3, 13, 23, 33].index(r.frame_index)]
        frame = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        lm = np.load(path.replace("frames", "landmarks")[:-4] + ".npy")[:68]
        image, lm_crop, _ = face_crop(frame, lm, settings)
        np.testing.assert_array_equal(r.landmarks, lm_crop)
        assert r.image == image  # byte for byte: our aligner on its frame and its first 68 points
        assert np.abs(detect.five_points(r.landmarks) - recipe.destination()).max() < 4  # on our template
        checked += 1
    assert checked == 4


def test_deepfakebench_faults_are_report_rows(bench_tree, bench_built):
    _, js, v, bad_lm = bench_tree
    _, _, report = bench_built
    rows = {(r["status"], r["video_id"]): r for r in report}
    real = "FaceForensics++/FF-real/c23/"
    assert rows[("partial", real + "001")]["reason"].startswith("1 of 4 sampled frames left out: " + bad_lm)
    assert "(5, 2)" in rows[("partial", real + "001")]["reason"]
    assert f"{v['002'][2]}: missing frame" in rows[("partial", real + "002")]["reason"]
    skipped = rows[("skipped", real + "003")]
    assert skipped["reason"].startswith("no usable frame: 4 of 4") and "missing frame" in skipped["reason"]
    assert ELSEWHERE in skipped["reason"]  # unresolvable: named as the JSON names it
    assert "no face track" in rows[("skipped", real + "blank")]["reason"]
    listing = [r for r in report if r["status"] == "listing"]
    assert all(r["path"] == js for r in listing)
    leak = [r for r in listing if r["video_id"] == real + "000"]
    assert len(leak) == 1 and "train and test" in leak[0]["reason"] and leak[0]["split"] == "test"
    moved = [r for r in listing if r["video_id"] == real + "004"]
    assert len(moved) == 1 and "moved to test" in moved[0]["reason"] and "'004'" in moved[0]["reason"]
    grouped = [r for r in listing if "2 folders" in r["reason"]]
    assert len(grouped) == 1 and grouped[0]["video_id"] == "FaceForensics++/FF-FS/c23/010"
    assert len(listing) == 3
    assert {r["status"] for r in report} == {"partial", "skipped", "listing"}


# --- WildDeepfake ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wild_tree(people, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("wild") / "deepfake_in_the_wild")
    layout = {"real_train": {"1": 2}, "fake_train": {"2": 1}, "real_test": {"3": 1}, "fake_test": {"4": 1, "5": 1}}
    seed = 0
    for folder, videos in layout.items():
        kind = folder.split("_")[0]
        for video, sequences in videos.items():
            for seq in range(sequences):
                seed += 1
                # Tight face crops (the face wider than the image): dlib misses about half of
                # these and BlazeFace all, unless the frame is padded first.
                frames, _ = demo_faces.render(people[seed % len(people)], 3, (112, 112), np.random.default_rng(seed),
                                              face_frac=(1.2, 1.3), background=110)
                d = os.path.join(root, folder, video, kind, str(seq * 7))
                os.makedirs(d)
                for k, f in enumerate(frames):
                    cv2.imwrite(os.path.join(d, f"{k}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    with open(os.path.join(root, "fake_test", "6.tar.gz"), "wb") as f:
        f.write(b"\x1f\x8b")  # an archive not extracted yet
    return os.path.dirname(root)


@pytest.mark.parametrize("detector", [d for d in ("dlib", "blazeface") if d in detect.BACKENDS])
def test_wilddeepfake_sequences_are_videos_with_the_official_split(wild_tree, tmp_path, detector):
    out = str(tmp_path / "wild")
    argv = ["--dataset=wilddeepfake", f"--root={wild_tree}", f"--out={out}", f"--detector={detector}", *ARGS]
    assert build.main(argv) == 0
    recs = _records(out)
    got = {}
    for split, rs in recs.items():
        for r in rs:
            got.setdefault((r.video_id, split, r.label, r.method), []).append(r.frame_index)
    assert got == {
        ("real_train/1/0", "train", 0, "original"): [0, 1, 2],
        ("real_train/1/7", "train", 0, "original"): [0, 1, 2],
        ("fake_train/2/0", "train", 1, "WildDeepfake"): [0, 1, 2],
        ("real_test/3/0", "test", 0, "original"): [0, 1, 2],
        ("fake_test/4/0", "test", 1, "WildDeepfake"): [0, 1, 2],
        ("fake_test/5/0", "test", 1, "WildDeepfake"): [0, 1, 2],
    }  # every frame of every sequence: found inside the padding
    report = _report(out)
    assert [(r["status"], os.path.basename(r["path"])) for r in report] == [("listing", "6.tar.gz")]
    assert "tar -xzf 6.tar.gz" in report[0]["reason"]


# --- DF40 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def df40_tree(people, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("df40") / "DF40")
    real = os.path.join(root, "FaceForensics++", "original_sequences", "youtube", "c23", "frames")
    reals = {i: _bench_video(os.path.join(real, i), people[int(i) % len(people)], 10 + int(i), n=2)
             for i in ("000", "001")}
    jsons = os.path.join(root, "dataset_json")
    os.makedirs(jsons)
    for n, method in enumerate(("simswap", "blendface")):
        fakes = {name: _bench_video(os.path.join(root, method, "ff", "frames", name), people[n], 20 + n, n=2)
                 for name in ("000_001", "001_000")}
        # DF40 issue #38: the same video in train and test; here 000_001 of simswap's train is
        # blendface's test video of that name.
        split_of = {"000_001": "train" if method == "simswap" else "test", "001_000": "test"}
        content = {f"{method}_ff": {
            f"{method}_Real": {"test": {"c23": {i: _entry(p, f"{method}_Real", root) for i, p in reals.items()}}},
            f"{method}_Fake": {s: {"c23": {k: _entry(p, f"{method}_Fake", root) for k, p in fakes.items()
                                           if split_of[k] == s}} for s in ("train", "test")},
        }}  # fmt: skip
        with open(os.path.join(jsons, f"{method}_ff.json"), "w") as f:
            json.dump(content, f)
    with open(os.path.join(jsons, "FSAll_ff.json"), "w") as f:
        f.write("not read")
    return root


def test_df40_ff_domain_methods_splits_and_fixes(df40_tree, tmp_path):
    out = str(tmp_path / "df40")
    assert build.main(["--dataset=df40", f"--root={df40_tree}", f"--out={out}", *ARGS]) == 0
    recs = _records(out)
    got = {(r.video_id, s, r.label, r.method) for s, rs in recs.items() for r in rs}
    assert got == {
        ("blendface_ff/blendface_Real/c23/000", "test", 0, "original"),  # the reals once, not per method
        ("blendface_ff/blendface_Real/c23/001", "test", 0, "original"),
        ("simswap_ff/simswap_Fake/c23/000_001", "test", 1, "simswap"),  # moved: blendface's test has the pair
        ("simswap_ff/simswap_Fake/c23/001_000", "test", 1, "simswap"),
        ("blendface_ff/blendface_Fake/c23/000_001", "test", 1, "blendface"),
        ("blendface_ff/blendface_Fake/c23/001_000", "test", 1, "blendface"),
    }
    assert records.load_summary(out)["counts"]["test"]["total"] == 6 * 2
    assert "train" not in records.load_summary(out)["counts"]
    listing = [r for r in _report(out) if r["status"] == "listing"]
    assert len(listing) == 2, listing
    leak = next(r for r in listing if "leak" in r["reason"])
    assert leak["video_id"] == "simswap_ff/simswap_Fake/c23/000_001" and leak["split"] == "test"
    assert "moved to test" in leak["reason"]
    repeat = next(r for r in listing if "kept once" in r["reason"])
    assert repeat["path"].endswith("simswap_ff.json") and repeat["reason"].startswith("2 real videos")
    one = str(tmp_path / "one")
    assert build.main(["--dataset=df40", f"--root={df40_tree}", f"--out={one}", "--methods=blendface", *ARGS]) == 0
    assert {r.method for rs in _records(one).values() for r in rs} == {"original", "blendface"}


def test_frame_folder_rows_survive_the_beam_listing_and_refuse_perturb(bench_tree, tmp_path):
    root, js, _, _ = bench_tree
    rows = sources.list_videos("deepfakebench", root, json_path=js)
    assert rows and all(v.frames and len(v.landmarks) in (0, len(v.frames)) for v in rows)
    assert [Video(**json.loads(json.dumps(dataclasses.asdict(v)))) for v in rows] == list(rows)
    argv = ["--dataset=deepfakebench", f"--root={root}", f"--json={js}", f"--out={tmp_path}", "--perturb=GB:1", *ARGS]
    assert build.main(argv) == 2
    assert build.main(["--dataset=deepfakebench", f"--root={root}", f"--out={tmp_path}", *ARGS]) == 2  # no --json
