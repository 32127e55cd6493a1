"""data_prep pieces on their own: record bytes, sampling, alignment, readers, faces, decoding."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import skimage.data

from data_prep import sources
from mat_jax.data import records
from mat_jax.faces import align, detect, frames
from mat_jax.faces.frames import write_video

# --- records ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "landmarks,mask", [(np.arange(136, dtype=np.float32).reshape(68, 2) / 3, b"\x89PNGxyz"), (None, b"")]
)
def test_encode_parses_like_a_tensorflow_example(landmarks, mask):
    import tensorflow as tf

    rec = records.FaceRecord(
        image=b"\xff\xd8jpeg-bytes" * 50,
        label=1,
        dataset="ffpp",
        split="val",
        method="Face2Face",
        video_id="Face2Face/c23/000_003",
        frame_index=2**33 + 5,
        landmarks=landmarks,
        mask=mask,
        track_id=3,
    )
    ours = records.encode(rec)
    lm = [] if landmarks is None else landmarks.reshape(-1).tolist()
    ref = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[rec.image])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
                "dataset": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ffpp"])),
                "split": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"val"])),
                "method": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"Face2Face"])),
                "video_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[rec.video_id.encode()])),
                "frame_index": tf.train.Feature(int64_list=tf.train.Int64List(value=[rec.frame_index])),
                "landmarks": tf.train.Feature(float_list=tf.train.FloatList(value=lm)),
                "mask": tf.train.Feature(bytes_list=tf.train.BytesList(value=[mask])),
                "track_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[3])),
            }
        )
    )
    assert tf.train.Example.FromString(ours) == ref
    back = records.decode(ours)
    assert (back.video_id, back.frame_index, back.label, back.mask) == (
        rec.video_id,
        rec.frame_index,
        1,
        mask,
    )
    if landmarks is None:
        assert back.landmarks is None
    else:
        np.testing.assert_array_equal(back.landmarks, landmarks)


def test_encode_rejects_bad_labels_and_splits():
    rec = records.FaceRecord(b"x", 2, "d", "train", "m", "v", 0)
    with pytest.raises(ValueError, match="label"):
        records.encode(rec)
    rec.label, rec.split = 0, "dev"
    with pytest.raises(ValueError, match="split"):
        records.encode(rec)


# --- frame sampling --------------------------------------------------------------------------


def test_evenly_spaced_sampling_covers_the_whole_video():
    s = frames.Sampling(32)
    idx = s.indices(300)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 299  # not the first 32 (DeepfakeBench's bug)
    assert np.all(np.diff(idx) >= 9)
    assert s.indices(10) == list(range(10))
    assert s.indices(0) == []


def test_mat_presets_are_the_official_strides():
    assert frames.PRESETS["mat_eval"].indices(300) == list(range(0, 100, 5))
    assert frames.PRESETS["mat_train"].indices(1000) == list(range(0, 500, 10))
    assert frames.PRESETS["mat_train"].indices(95) == list(range(0, 95, 10))  # short videos: what exists


# --- alignment -------------------------------------------------------------------------------


def test_fit_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a, s, t = np.deg2rad(17), 1.7, np.array([12.0, -4.0])
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = align.fit_similarity(src, src @ rot.T + t)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


def test_recipes_put_the_template_where_the_reference_does():
    mat = align.RECIPES["mat"]
    # Official: template at 320 scaled to 384, then a centre crop of 380 (2 px off each side).
    np.testing.assert_allclose(mat.destination()[0], [122.5 * 1.2 - 2, 141.25 * 1.2 - 2])
    bench = align.RECIPES["bench"]
    # DeepfakeBench: dst = (t * S/112 + S(s-1)/2) / s with S = 256, s = 1.3.
    np.testing.assert_allclose(
        bench.destination()[2], (np.array([56.0252, 71.7366]) * 256 / 112 + 256 * 0.15) / 1.3
    )
    small = mat.with_overrides(size=128, scale=1.3)
    assert small.size == 128 and small.scale == 1.3
    d = small.destination()
    assert np.all((d > 0) & (d < 128))


# --- readers ---------------------------------------------------------------------------------


def _touch(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def test_self_blended_fakes_get_no_landmark_source(tmp_path):
    root = str(tmp_path)
    for n in ("000", "001"):
        _touch(f"{root}/original_sequences/youtube/c23/videos/{n}.mp4")
    for n in ("000_001", "001_000"):
        _touch(f"{root}/manipulated_sequences/SBI/c23/videos/{n}.mp4")
        _touch(f"{root}/manipulated_sequences/Deepfakes/c23/videos/{n}.mp4")
    os.makedirs(f"{root}/splits")
    for split in ("train", "val", "test"):
        with open(f"{root}/splits/{split}.json", "w") as f:
            json.dump([["000", "001"]] if split == "train" else [], f)
    rows = {r.video_id: r for r in sources.list_videos("ffpp", root)}
    assert rows["SBI/c23/000_001"].landmark_source == "" == rows["SBI/c23/001_000"].landmark_source
    assert rows["Deepfakes/c23/001_000"].landmark_source == "original/c23/001"


def test_build_refuses_a_url_before_writing_anything(tmp_path, monkeypatch):
    from data_prep import build

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="--root=gs://bucket/raw: data_prep reads and writes plain paths"):
        build.prepare("demo", "gs://bucket/raw", str(tmp_path / "out"))
    with pytest.raises(ValueError, match="--out=gs://bucket/records: .* mount the bucket"):
        build.prepare("demo", str(tmp_path), "gs://bucket/records", runner="beam")
    assert os.listdir(tmp_path) == []  # no local "gs:" folder


def test_ffpp_reader_expands_pairs_and_links_fakes_to_their_target(tmp_path):
    root = str(tmp_path)
    for i in ("000", "001", "002", "003"):
        _touch(f"{root}/original_sequences/youtube/c23/videos/{i}.mp4")
    for m in ("Deepfakes", "FaceSwap"):
        for n in ("000_001", "001_000", "002_003", "003_002"):
            _touch(f"{root}/manipulated_sequences/{m}/c23/videos/{n}.mp4")
    _touch(f"{root}/manipulated_sequences/Deepfakes/masks/videos/000_001.mp4")
    os.makedirs(f"{root}/splits")
    for split, pairs in (("train", [["000", "001"]]), ("val", [["002", "003"]]), ("test", [])):
        with open(f"{root}/splits/{split}.json", "w") as f:
            json.dump(pairs, f)
    rows = {r.video_id: r for r in sources.list_videos("ffpp", root)}
    assert len(rows) == 4 + 8
    fake = rows["Deepfakes/c23/000_001"]
    assert (fake.label, fake.split, fake.method, fake.landmark_source) == (
        1,
        "train",
        "Deepfakes",
        "original/c23/000",
    )
    assert (
        fake.mask_path.endswith("masks/videos/000_001.mp4") and rows["Deepfakes/c23/001_000"].mask_path == ""
    )
    assert (rows["original/c23/003"].label, rows["original/c23/003"].split) == (0, "val")
    assert {r.method for r in rows.values()} == {"original", "Deepfakes", "FaceSwap"}
    with pytest.raises(sources.LayoutError, match="c40"):
        sources.list_videos("ffpp", root, quality="c40")
    os.remove(f"{root}/splits/test.json")
    with pytest.raises(sources.LayoutError, match="splits"):
        sources.list_videos("ffpp", root)


def test_celebdf_reader_flips_the_test_list_labels(tmp_path):
    root = str(tmp_path)
    for rel in (
        "Celeb-real/id0_0000.mp4",
        "Celeb-real/id1_0000.mp4",
        "YouTube-real/00000.mp4",
        "Celeb-synthesis/id0_id1_0000.mp4",
        "Celeb-synthesis/id1_id0_0000.mp4",
    ):
        _touch(f"{root}/{rel}")
    with open(f"{root}/List_of_testing_videos.txt", "w") as f:
        f.write("1 Celeb-real/id1_0000.mp4\n0 Celeb-synthesis/id1_id0_0000.mp4\n1 YouTube-real/00000.mp4\n")
    rows = {r.video_id: r for r in sources.list_videos("celebdf", root)}
    assert (rows["Celeb-real/id1_0000"].split, rows["Celeb-real/id1_0000"].label) == ("test", 0)
    assert (rows["Celeb-synthesis/id1_id0_0000"].split, rows["Celeb-synthesis/id1_id0_0000"].label) == (
        "test",
        1,
    )
    assert (
        rows["Celeb-real/id0_0000"].split == "train" and rows["Celeb-synthesis/id0_id1_0000"].split == "train"
    )
    with open(f"{root}/List_of_testing_videos.txt", "a") as f:
        f.write("1 Celeb-synthesis/id0_id1_0000.mp4\n")  # a fake listed as real
    with pytest.raises(sources.LayoutError, match="lies in Celeb-synthesis"):
        sources.list_videos("celebdf", root)


def test_dfdc_reader_reads_metadata_and_labels_csv(tmp_path):
    root = str(tmp_path)
    for n in ("a.mp4", "b.mp4"):
        _touch(f"{root}/dfdc_train_part_0/{n}")
    with open(f"{root}/dfdc_train_part_0/metadata.json", "w") as f:
        json.dump(
            {
                "a.mp4": {"label": "REAL", "split": "train"},
                "b.mp4": {"label": "FAKE", "split": "train", "original": "a.mp4"},
            },
            f,
        )
    _touch(f"{root}/test/videos/c.mp4")
    with open(f"{root}/test/labels.csv", "w") as f:
        f.write("filename,label\nc.mp4,1\n")
    rows = {r.video_id: r for r in sources.list_videos("dfdc", root)}
    assert (rows["dfdc_train_part_0/a"].label, rows["dfdc_train_part_0/b"].label) == (0, 1)
    assert (rows["test/c"].split, rows["test/c"].label, rows["test/c"].method) == ("test", 1, "DFDC")
    assert rows["test/c"].path.endswith("test/videos/c.mp4")


# --- faces and decoding ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def finder():
    return detect.FaceFinder("dlib")


def test_finder_puts_68_landmarks_on_the_astronaut(finder):
    img = skimage.data.astronaut()
    face = finder.find(img)
    assert face is not None and face.found_by == "hog" and face.landmarks.shape == (68, 2)
    x0, y0, x1, _ = face.box
    assert 150 < x0 < 200 and 60 < y0 < 100 and 70 < x1 - x0 < 130  # the face, not the mission patch
    eyes = detect.five_points(face.landmarks)[:2]
    assert eyes[0, 0] < eyes[1, 0] and abs(eyes[0, 1] - eyes[1, 1]) < 10
    assert finder.find(np.full((240, 320, 3), 128, np.uint8)) is None


def test_small_faces_fall_back_to_upsampling_or_haar(finder):
    face = cv2.resize(skimage.data.astronaut()[40:240, 130:330], (56, 56), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 200, np.uint8)
    canvas[300:356, 400:456] = face
    finder.reset()
    found = finder.find(canvas)
    assert found is not None and found.found_by in ("hog-up1", "haar")
    cx, cy = found.landmarks.mean(0)
    assert 400 < cx < 456 and 300 < cy < 356
    haar = detect.FaceFinder("haar").find(skimage.data.astronaut())
    assert haar is not None and 170 < haar.landmarks[:, 0].mean() < 280


def test_read_sampled_decodes_the_chosen_frames(tmp_path):
    path = str(tmp_path / "v.mp4")
    clip = [np.full((64, 96, 3), 8 * k, np.uint8) for k in range(20)]
    write_video(path, clip, crf=10)
    idx, got = frames.read_sampled(path, frames.Sampling(5))
    assert idx == [0, 5, 10, 14, 19]
    for i in idx:
        assert got[i].shape == (64, 96, 3) and abs(float(got[i].mean()) - 8 * i) < 3
    assert frames.read_sampled(path, frames.Sampling(4, stride=6))[0] == [0, 6, 12, 18]


def test_bad_files_raise_a_video_error_naming_the_fix(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for path, words in ((empty, "empty file"), (junk, "unreadable"), (tmp_path / "gone.mp4", "missing")):
        with pytest.raises(frames.VideoError, match=words) as e:
            frames.read_sampled(str(path), frames.Sampling(4))
        assert "re-download" in str(e.value)
