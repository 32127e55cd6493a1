"""Bad and odd videos in one FF++-shaped tree: each bad one lands in the report with its
reason, every good one (grayscale, portrait, small face, a fake with a mask) is written."""

from __future__ import annotations

import csv
import json
import os

import cv2
import numpy as np
import pytest
import skimage.data

from data_prep import build, demo_faces, sbi
from data_prep.report import REPORT_FILE
from mat_jax.data import records
from mat_jax.faces import frames
from mat_jax.faces.detect import FaceFinder
from mat_jax.faces.settings import Settings

N_FRAMES, SAMPLED = 6, 3


@pytest.fixture(scope="module")
def edge_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("edge"))
    vids = os.path.join(root, "original_sequences", "youtube", "c23", "videos")
    fakes = os.path.join(root, "manipulated_sequences", "SBI", "c23", "videos")
    masks = os.path.join(root, "manipulated_sequences", "SBI", "masks", "videos")
    photo = skimage.data.astronaut()
    ident = demo_faces.Identity("astronaut", photo, demo_faces.photo_landmarks(photo, FaceFinder("dlib")), {})
    rng = np.random.default_rng(0)
    normal, normal_lm = demo_faces.render(ident, N_FRAMES, (320, 240), rng)
    frames.write_video(f"{vids}/000.mp4", normal)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in normal]
    frames.write_video(f"{vids}/001.mp4", gray, gray=True)  # a real 1-channel (gray) H.264 stream
    frames.write_video(f"{vids}/002.mp4", demo_faces.render(ident, N_FRAMES, (240, 320), rng)[0])  # portrait
    small, small_lm = demo_faces.render(ident, N_FRAMES, (640, 480), rng, face_frac=(0.09, 0.1), background=128)
    frames.write_video(f"{vids}/003.mp4", small)  # a ~45 px face in 640x480
    with open(f"{vids}/004.mp4", "wb") as f:  # corrupt: bytes that are no video at all
        f.write(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    open(f"{vids}/005.mp4", "wb").close()  # zero-length
    coffee = cv2.resize(skimage.data.coffee(), (320, 240), interpolation=cv2.INTER_AREA)
    frames.write_video(f"{vids}/006.mp4", [np.roll(coffee, 4 * k, axis=1) for k in range(N_FRAMES)])  # no face
    tiny = demo_faces.render(ident, N_FRAMES, (640, 480), rng, face_frac=(0.02, 0.022), background=128)[0]
    frames.write_video(f"{vids}/007.mp4", tiny)  # a ~10 px face: below every detector
    frames.write_video(f"{root}/tmp.mp4", normal)
    with open(f"{root}/tmp.mp4", "rb") as f:  # truncated: the index (moov) at the end is cut off
        data = f.read()
    with open(f"{vids}/008.mp4", "wb") as f:
        f.write(data[: len(data) // 2])
    os.remove(f"{root}/tmp.mp4")
    # 009 is listed in the splits but missing on disk.
    p = sbi.draw_params(np.random.default_rng(2))
    fk, mk = demo_faces.sbi_video(normal, normal_lm, p)
    frames.write_video(f"{fakes}/000_001.mp4", fk)
    frames.write_video(f"{masks}/000_001.mp4", mk, crf=10)
    fk, _ = demo_faces.sbi_video([cv2.cvtColor(g, cv2.COLOR_GRAY2RGB) for g in gray], normal_lm, p)
    frames.write_video(f"{fakes}/001_000.mp4", [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in fk], gray=True)
    os.makedirs(f"{root}/splits")
    for split, pairs in (
        ("train", [["000", "001"], ["002", "003"]]),
        ("val", [["004", "005"]]),
        ("test", [["006", "007"], ["008", "009"]]),
    ):
        with open(f"{root}/splits/{split}.json", "w") as f:
            json.dump(pairs, f)
    return root, small_lm


@pytest.fixture(scope="module")
def edge_out(edge_tree, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("edge_out"))
    settings = Settings(
        dataset="ffpp",
        train_sampling=frames.Sampling(SAMPLED),
        eval_sampling=frames.Sampling(SAMPLED),
        recipe="bench",
        size=64,
    )
    summary = build.prepare(
        "ffpp", edge_tree[0], out, settings, workers=2, progress=False, log=lambda *_: None
    )
    with open(os.path.join(out, REPORT_FILE)) as f:
        report = {row["video_id"]: row for row in csv.DictReader(f, delimiter="\t")}
    recs = [
        r
        for s, c in summary["counts"].items()
        if c["total"]
        for f in records.split_files(out, s)
        for r in records.read(f)
    ]
    return out, summary, report, recs


def test_each_bad_video_is_reported_with_its_reason(edge_out):
    _, summary, report, _ = edge_out
    reasons = {
        "original/c23/004": "unreadable",
        "original/c23/005": "empty file",
        "original/c23/006": "no face track",
        "original/c23/007": "no face track",
        "original/c23/008": "unreadable",
        "original/c23/009": "missing file",
    }
    for vid, words in reasons.items():
        assert report[vid]["status"] == "skipped" and words in report[vid]["reason"], report[vid]
        assert report[vid]["path"].endswith(vid[-3:] + ".mp4")
    # Fakes of pairs whose files do not exist are reported as missing, nothing else is.
    missing_fakes = {k for k, r in report.items() if k.startswith("SBI/")}
    assert missing_fakes == {
        f"SBI/c23/{a}_{b}"
        for a, b in [
            ("002", "003"),
            ("003", "002"),
            ("004", "005"),
            ("005", "004"),
            ("006", "007"),
            ("007", "006"),
            ("008", "009"),
            ("009", "008"),
        ]
    }
    assert all("missing file" in report[k]["reason"] for k in missing_fakes)
    assert set(report) == set(reasons) | missing_fakes
    assert sum(v["skipped"] for v in summary["videos"].values()) == len(report)


def test_the_good_videos_are_all_written(edge_out):
    _, summary, _, recs = edge_out
    by_video: dict[str, list] = {}
    for r in recs:
        by_video.setdefault(r.video_id, []).append(r)
    assert set(by_video) == {
        "original/c23/000",
        "original/c23/001",
        "original/c23/002",
        "original/c23/003",
        "SBI/c23/000_001",
        "SBI/c23/001_000",
    }
    for vid, rs in by_video.items():
        assert sorted(r.frame_index for r in rs) == frames.Sampling(SAMPLED).indices(N_FRAMES), vid
    assert summary["counts"]["train"]["total"] == 6 * SAMPLED
    for r in by_video["original/c23/001"] + by_video["SBI/c23/001_000"]:  # grayscale stays gray
        img = cv2.imdecode(np.frombuffer(r.image, np.uint8), cv2.IMREAD_COLOR).astype(int)
        assert img.shape == (64, 64, 3) and np.abs(img - img.mean(-1, keepdims=True)).max() <= 3
    for r in by_video["SBI/c23/000_001"]:
        assert (
            r.label == 1 and cv2.imdecode(np.frombuffer(r.mask, np.uint8), cv2.IMREAD_GRAYSCALE).max() == 255
        )
    assert all(r.mask == b"" for r in by_video["SBI/c23/001_000"])  # that fake has no mask video


def test_the_small_face_is_found_where_it_is(edge_tree):
    root, small_lm = edge_tree
    idx, got = frames.read_sampled(
        f"{root}/original_sequences/youtube/c23/videos/003.mp4", frames.Sampling(SAMPLED)
    )
    # dlib HOG misses faces under ~80 px at its first scales: its upsampled and Haar stages find it.
    for backend, stages in (("dlib", ("hog-up1", "haar")), ("blazeface", ("blazeface",))):
        finder = FaceFinder(backend)
        for i in idx:
            face = finder.find(got[i])
            assert face is not None and face.found_by in stages, (backend, i)
            assert np.linalg.norm(face.landmarks.mean(0) - small_lm[i].mean(0)) < 6, (backend, i)
