"""Tests of the tf.data pipeline of mat_jax.data on small real TFRecords written with mat_jax.data.records."""

from __future__ import annotations

import collections
import json
import os
import shutil

import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from configs import ffpp
from mat_jax.data import augment, decode, errors, eval_data, records, sizes, train_data

# ---------------------------------------------------------------- record fixtures

ID_SIZE = 17  # id images are 17 px: centre cropped (no resampling) to 16
N_ID_FILES, ID_PER_FILE = 4, 6  # 24 records: ids 0, 4, ... are real (6), the rest fake (18)


def _png(rgb: np.ndarray) -> bytes:
    return tf.io.encode_png(rgb).numpy()


def _jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    return tf.io.encode_jpeg(rgb, quality=quality).numpy()


def _id_label(k: int) -> int:
    return records.LABEL_REAL if k % 4 == 0 else records.LABEL_FAKE


def _id_record(k: int, split: str = "train") -> records.FaceRecord:
    """A flat image whose red channel is 10 * k, so the record id survives crops and flips."""
    label = _id_label(k)
    rgb = np.zeros((ID_SIZE, ID_SIZE, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10 * k, 128, 255 * label
    method = records.REAL_METHOD if label == 0 else ("Deepfakes" if k % 2 else "FaceSwap")
    return records.FaceRecord(_png(rgb), label, "test", split, method, f"{method}/{k // 3:03d}", k % 3)


def _ids(batch) -> list[int]:
    red = (batch["image"][:, :, :, 0] + 1.0) * 127.5
    ids = np.rint(red.mean(axis=(1, 2)) / 10).astype(int)
    assert np.allclose(red, 10 * ids[:, None, None], atol=1e-3), "an id image came out altered"
    return ids.tolist()


def _face_crops(n: int, size: int, seed: int) -> list[np.ndarray]:
    """Crops of the astronaut photo (real image content, so JPEG and augmentation behave)."""
    rng = np.random.default_rng(seed)
    photo = tf.image.resize(skimage.data.astronaut(), [160, 160], antialias=True).numpy().astype(np.uint8)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, 160 - size, 2)
        out.append(np.ascontiguousarray(photo[y : y + size, x : x + size]))
    return out


@pytest.fixture(scope="session")
def id_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ids"))
    for s in range(N_ID_FILES):
        ks = range(s * ID_PER_FILE, (s + 1) * ID_PER_FILE)
        records.write(records.shard_path(root, "test", "train", s, N_ID_FILES), [_id_record(k) for k in ks])
    return root


@pytest.fixture(scope="session")
def face_root(tmp_path_factory):
    """2 train files of 10 JPEG faces (40 px), and a test split of 7 + 8 + 7 records."""
    root = str(tmp_path_factory.mktemp("faces"))
    crops = _face_crops(42, 40, seed=0)
    for s in range(2):
        recs = []
        for j in range(10):
            k = s * 10 + j
            label = k % 2
            recs.append(
                records.FaceRecord(
                    _jpeg(crops[k]),
                    label,
                    "test",
                    "train",
                    "original" if label == 0 else "X",
                    f"train/{k // 4}",
                    k % 4,
                )
            )
        records.write(records.shard_path(root, "test", "train", s, 2), recs)
    k = 20
    for s, n in enumerate((7, 8, 7)):
        recs = []
        for _ in range(n):
            label = int(k % 3 == 0)
            recs.append(
                records.FaceRecord(
                    _jpeg(crops[k]),
                    label,
                    "test",
                    "test",
                    "Deepfakes" if label else "original",
                    f"vid{k // 5:02d}",
                    k % 5,
                )
            )
            k += 1
        records.write(records.shard_path(root, "test", "test", s, 3), recs)
    return root


def _config(
    root: str, *, image_size: int = 16, batch: int = 4, balance: str = "repeat", steps: int = 0, **data
):
    config = ffpp.get_config("smoke")
    config.data.root = root
    config.model.image_size = image_size
    config.train.batch_size = batch
    config.train.eval_batch_size = batch
    config.train.steps_per_epoch = steps
    config.data.balance = balance
    config.data.shuffle_buffer = 8
    config.data.hflip = False
    for key, value in data.items():
        config.data[key] = value
    return config


def _augmenting(root: str, **kw):
    return _config(
        root,
        image_size=32,
        hflip=True,
        random_resized_crop=True,
        color_jitter=0.3,
        jpeg_quality=(50, 90),
        blur_prob=0.5,
        jitter_shift=0.05,
        jitter_scale=0.05,
        jitter_rotation=5.0,
        **kw,
    )


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# ---------------------------------------------------------------- training stream


def test_steps_per_epoch_from_counts_config_and_summary(id_root, tmp_path):
    # 6 reals, 18 fakes: repeat -> 18 + 6 * 3 = 36; weights -> 2 * 18; none -> 24; batch 4.
    assert sizes.train_steps_per_epoch(_config(id_root, balance="repeat")) == 9
    assert sizes.train_steps_per_epoch(_config(id_root, balance="weights")) == 9
    assert sizes.train_steps_per_epoch(_config(id_root, balance="none")) == 6
    assert sizes.train_steps_per_epoch(_config(id_root, batch=5, balance="none")) == 4  # floor
    assert sizes.train_steps_per_epoch(_config(id_root, steps=7)) == 7
    # The data_prep summary, when present, is trusted instead of counting.
    root = str(tmp_path / "with_summary")
    shutil.copytree(id_root, root)
    with open(os.path.join(root, records.SUMMARY_FILE), "w") as f:
        json.dump({"counts": {"train": {"total": 40, "real": 10, "fake": 30}}}, f)
    assert sizes.train_steps_per_epoch(_config(root)) == (30 + 10 * 3) // 4


def test_batches_have_the_right_shape_range_and_labels(id_root):
    batch = next(
        train_data.create_train_iterator(_config(id_root, hflip=True), process_index=0, process_count=1)
    )
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (4, 16, 16, 3)
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (4,)
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    assert [_id_label(k) for k in _ids(batch)] == batch["label"].tolist()
    # Green is 128 everywhere: (128 / 255 - 0.5) / 0.5.
    np.testing.assert_allclose(batch["image"][..., 1], (128 / 255 - 0.5) / 0.5, atol=1e-6)


def test_repeat_balancing_matches_the_official_epoch(id_root):
    config = _config(id_root, balance="repeat")
    it = train_data.create_train_iterator(config, process_index=0, process_count=1)
    for epoch in range(2):
        seen = collections.Counter(k for b in _take(it, 9) for k in _ids(b))
        # Every fake once, every real round(18 / 6) = 3 times, nothing else.
        assert seen == {k: 3 if _id_label(k) == 0 else 1 for k in range(24)}, f"epoch {epoch}"


def test_repeat_spreads_copies_of_a_real_over_the_epoch(id_root):
    it = train_data.create_train_iterator(
        _config(id_root, balance="repeat"), process_index=0, process_count=1
    )
    order = [k for b in _take(it, 9) for k in _ids(b)]
    # One copy of each real per pass of 12: the three copies fall in different thirds.
    for k in range(0, 24, 4):
        assert sorted(i // 12 for i, x in enumerate(order) if x == k) == [0, 1, 2]


def test_weights_balancing_draws_both_classes_equally(id_root):
    it = train_data.create_train_iterator(
        _config(id_root, balance="weights"), process_index=0, process_count=1
    )
    labels = np.concatenate([b["label"] for b in _take(it, 27)])  # 3 epochs, 108 draws
    assert 0.4 <= labels.mean() <= 0.6, labels.mean()  # 18 fakes vs 6 reals on disk
    it = train_data.create_train_iterator(_config(id_root, balance="none"), process_index=0, process_count=1)
    seen = collections.Counter(k for b in _take(it, 6) for k in _ids(b))
    assert seen == {k: 1 for k in range(24)}


def test_same_config_same_batches_and_epochs_differ(face_root):
    config = _augmenting(face_root, steps=3)
    a = _take(train_data.create_train_iterator(config, process_index=0, process_count=1), 6)
    b = _take(train_data.create_train_iterator(config, process_index=0, process_count=1), 6)
    _assert_same_batches(a, b)
    # Epoch 1 is not a replay of epoch 0.
    assert not np.array_equal(
        np.concatenate([x["image"] for x in a[:3]]), np.concatenate([x["image"] for x in a[3:]])
    )
    config.seed = config.seed + 1
    c = _take(train_data.create_train_iterator(config, process_index=0, process_count=1), 1)
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_order_ignores_tensorflows_global_seed(id_root):
    # The trainer or a library may call tf.random.set_seed; the data order must not move.
    config = _config(id_root, balance="weights", hflip=True)
    before = [
        _ids(b) for b in _take(train_data.create_train_iterator(config, process_index=0, process_count=1), 9)
    ]
    tf.random.set_seed(123)
    try:
        after = [
            _ids(b)
            for b in _take(train_data.create_train_iterator(config, process_index=0, process_count=1), 9)
        ]
    finally:
        tf.random.set_seed(None)
    assert before == after


@pytest.mark.parametrize("start", [2, 4])
def test_exact_resume_with_augmentation(face_root, start):
    # 3 steps per epoch: start 2 resumes inside epoch 0, start 4 inside epoch 1.
    config = _augmenting(face_root, steps=3)
    fresh = _take(train_data.create_train_iterator(config, process_index=0, process_count=1), 7)
    resumed = _take(
        train_data.create_train_iterator(config, start_step=start, process_index=0, process_count=1),
        7 - start,
    )
    _assert_same_batches(fresh[start:], resumed)


def test_exact_resume_across_epochs_of_the_balanced_stream(id_root):
    config = _config(id_root, balance="repeat", hflip=True)
    fresh = [
        _ids(b) for b in _take(train_data.create_train_iterator(config, process_index=0, process_count=1), 14)
    ]
    for start in (5, 9, 11):
        it = train_data.create_train_iterator(config, start_step=start, process_index=0, process_count=1)
        assert [_ids(b) for b in _take(it, 14 - start)] == fresh[start:]


def test_hosts_read_disjoint_files_that_cover_the_split(id_root):
    config = _config(id_root, balance="none")  # 4 files, global batch 4 -> 2 per host, 6 steps
    per_host = []
    for host in range(2):
        it = train_data.create_train_iterator(config, process_index=host, process_count=2)
        batches = _take(it, 6)
        assert all(b["label"].shape == (2,) for b in batches)
        per_host.append([k for b in batches for k in _ids(b)])
    expected = [
        {k for s in range(host, N_ID_FILES, 2) for k in range(s * ID_PER_FILE, (s + 1) * ID_PER_FILE)}
        for host in range(2)
    ]
    assert [sorted(h) for h in per_host] == [sorted(e) for e in expected]  # each record once, own files only
    assert not set(per_host[0]) & set(per_host[1])
    with pytest.raises(ValueError, match="4 record files for 5 processes"):
        train_data.create_train_iterator(config, process_index=0, process_count=5)
    with pytest.raises(ValueError, match="multiple of the process count"):
        train_data.create_train_iterator(_config(id_root, batch=6), process_index=0, process_count=4)


def test_missing_root_is_explained():
    with pytest.raises(ValueError, match="config.data.root is empty"):
        train_data.create_train_iterator(_config(""), process_index=0, process_count=1)


# ---------------------------------------------------------------- per-image ops


def _face_bytes(face_root):
    return [
        records.decode(r).image for r in records.iter_serialized(records.split_files(face_root, "train")[0])
    ]


def test_augmentation_eagerly_equals_inside_tf_data(face_root):
    config = _augmenting(face_root)
    images = _face_bytes(face_root)
    seeds = np.stack([np.arange(len(images)), np.full(len(images), 7)], axis=1).astype(np.int64)
    eager = [
        augment.preprocess_train(tf.constant(b), tf.constant(s), config).numpy()
        for b, s in zip(images, seeds)
    ]
    ds = tf.data.Dataset.from_tensor_slices((images, seeds))
    ds = ds.map(lambda b, s: augment.preprocess_train(b, s, config), num_parallel_calls=4, deterministic=True)
    graph = list(ds.as_numpy_iterator())
    for e, g in zip(eager, graph):
        assert e.shape == g.shape == (32, 32, 3) and e.dtype == g.dtype == np.uint8
        np.testing.assert_array_equal(e, g)
    # The augmentations do something, and differ from image to image.
    plain = [decode.preprocess_eval(tf.constant(b), 32).numpy() for b in images]
    assert all(np.abs(e.astype(int) - p).mean() > 1 for e, p in zip(eager, plain))
    ds = tf.data.Dataset.from_tensor_slices(images).map(lambda b: decode.preprocess_eval(b, 32))
    for p, g in zip(plain, ds.as_numpy_iterator()):
        np.testing.assert_array_equal(p, g)


def test_flip_is_a_coin_per_image_and_off_when_disabled(face_root):
    images = _face_bytes(face_root)
    plain = [decode.preprocess_eval(tf.constant(b), 32).numpy() for b in images]
    seed = lambda i: tf.constant([i, 3], tf.int64)
    flips = []
    for i, (b, p) in enumerate(zip(images, plain)):
        out = augment.preprocess_train(
            tf.constant(b), seed(i), _config(face_root, image_size=32, hflip=True)
        ).numpy()
        assert np.array_equal(out, p) or np.array_equal(out, p[:, ::-1])
        flips.append(not np.array_equal(out, p))
        off = augment.preprocess_train(tf.constant(b), seed(i), _config(face_root, image_size=32)).numpy()
        np.testing.assert_array_equal(off, p)
    assert 2 <= sum(flips) <= 8, flips


def _dot_centre(image: np.ndarray) -> np.ndarray:
    g = image[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: g.shape[0], : g.shape[1]]
    return np.array([(g * xs).sum(), (g * ys).sum()]) / g.sum()


def test_alignment_jitter_is_a_small_similarity_about_the_centre(face_root):
    # 32 px crops with a 2x2 dot: at the centre (15.5, 15.5), and off it at (8.5, 24.5).
    dots = []
    for x, y in ((15, 15), (8, 24)):
        rgb = np.zeros((32, 32, 3), np.uint8)
        rgb[y : y + 2, x : x + 2] = 255
        dots.append(tf.constant(_png(rgb)))
    c = np.array([15.5, 15.5])
    seeds = [tf.constant([i, 5], tf.int64) for i in range(8)]

    def moved(dot, **jitter):
        config = _config(face_root, image_size=32, **jitter)
        before = _dot_centre(decode.preprocess_eval(dot, 32).numpy())
        return before, np.array(
            [_dot_centre(augment.preprocess_train(dot, s, config).numpy()) for s in seeds]
        )

    # Shift: up to 5 % of the side (1.6 px) per axis, a different draw per image.
    before, after = moved(dots[0], jitter_shift=0.05)
    delta = after - before
    assert np.abs(delta).max() <= 1.6 + 0.1 and np.abs(delta).max() > 0.5 and delta.std(0).min() > 0.2
    # Rotation up to 10 degrees about the centre: a centred dot stays, an outer one keeps its
    # distance to the centre and moves along the circle by at most r * 10 degrees.
    before, after = moved(dots[0], jitter_rotation=10.0)
    assert np.abs(after - before).max() < 0.1
    before, after = moved(dots[1], jitter_rotation=10.0)
    r = np.linalg.norm(before - c)
    np.testing.assert_allclose(np.linalg.norm(after - c, axis=1), r, atol=0.3)
    arc = np.linalg.norm(after - before, axis=1)
    assert arc.max() <= r * np.radians(10) + 0.1 and arc.max() > 0.5
    # Scale in [1/1.1, 1.1] about the centre: an outer dot moves along its ray.
    before, after = moved(dots[1], jitter_scale=0.1)
    ratio = np.linalg.norm(after - c, axis=1) / r
    assert ratio.min() >= 1 / 1.1 - 0.03 and ratio.max() <= 1.1 + 0.03 and ratio.max() - ratio.min() > 0.05
    unit = (before - c) / r
    np.testing.assert_allclose((after - c) @ unit / np.linalg.norm(after - c, axis=1), 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="jitter_shift must be in"):
        augment.preprocess_train(dots[0], seeds[0], _config(face_root, image_size=32, jitter_rotation=90.0))


def test_centre_crop_and_resize_match_an_independent_reference():
    rgb = _face_crops(1, 40, seed=3)[0]
    # 40 px to 38 (within 9/8): a pure centre crop, exact for a lossless PNG.
    out = decode.preprocess_eval(tf.constant(_png(rgb)), 38).numpy()
    np.testing.assert_array_equal(out, rgb[1:39, 1:39])
    # JPEG: the crop is decoded directly; it must agree with decoding all and cropping.
    jpeg = _jpeg(rgb)
    full = tf.io.decode_jpeg(jpeg).numpy()
    out = decode.preprocess_eval(tf.constant(jpeg), 38).numpy()
    assert np.abs(out.astype(int) - full[1:39, 1:39]).max() <= 2
    # 60x40 to 16 (far below): centre 40x40 square, resized with antialiasing.
    tall = np.concatenate([rgb[:10], rgb, rgb[-10:]], axis=0)
    out = decode.preprocess_eval(tf.constant(_png(tall)), 16).numpy()
    ref = tf.image.resize(rgb, [16, 16], antialias=True).numpy()
    assert np.abs(out.astype(float) - ref).max() <= 0.5 + 1e-3
    # 40 to 64 (enlarging): plain bilinear.
    out = decode.preprocess_eval(tf.constant(_png(rgb)), 64).numpy()
    ref = tf.image.resize(rgb, [64, 64]).numpy()
    assert np.abs(out.astype(float) - ref).max() <= 0.5 + 1e-3


def test_normalize_is_the_official_formula():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    out = decode.normalize(tf.constant(x)).numpy()
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, (x.astype(np.float32) / 255.0 - 0.5) / 0.5, rtol=0, atol=2e-7)
    assert out.min() == -1.0 and out.max() == 1.0


# ---------------------------------------------------------------- evaluation


def _test_records(face_root):
    return [r for f in records.split_files(face_root, "test") for r in records.read(f)]


def test_eval_sees_every_frame_once_with_padding_mask(face_root, id_root):
    config = _config(id_root, image_size=32, batch=8)  # root points elsewhere: override it
    batches = list(
        eval_data.create_eval_iterator(config, "test", root=face_root, process_index=0, process_count=1)
    )
    assert len(batches) == 3  # 22 records
    assert [int(b["mask"].sum()) for b in batches] == [8, 8, 6]
    for b in batches:
        assert b["image"].shape == (8, 32, 32, 3) and b["image"].dtype == np.float32
        assert b["mask"].dtype == np.float32 and b["label"].dtype == np.int32
    last = batches[-1]
    assert list(last["mask"]) == [1] * 6 + [0] * 2
    assert list(last["video_id"][6:]) == ["", ""] and list(last["frame_index"][6:]) == [-1, -1]
    assert not last["image"][6:].any() and not last["label"][6:].any()
    expected = _test_records(face_root)
    rows = [
        (v, int(f), int(y), m)
        for b in batches
        for v, f, y, m, ok in zip(b["video_id"], b["frame_index"], b["label"], b["method"], b["mask"])
        if ok
    ]
    assert rows == [(r.video_id, r.frame_index, r.label, r.method) for r in expected]
    assert all(isinstance(v, str) for v in batches[0]["video_id"])
    # The pixels are the deterministic preprocessing of each record, normalised.
    ref = decode.normalize(decode.preprocess_eval(tf.constant(expected[9].image), 32)).numpy()
    np.testing.assert_array_equal(batches[1]["image"][1], ref)


@pytest.mark.parametrize("process_count", [2, 4])
def test_eval_hosts_cover_every_frame_once_in_equal_steps(face_root, process_count):
    # 2 hosts: 3 files split by file (14 + 8 records); 4 hosts: fewer files, split by record.
    config = _config(face_root, image_size=16, batch=8)
    per_host = [
        list(eval_data.create_eval_iterator(config, "test", process_index=h, process_count=process_count))
        for h in range(process_count)
    ]
    assert len({len(h) for h in per_host}) == 1, [len(h) for h in per_host]
    rows = [
        (v, int(f))
        for h in per_host
        for b in h
        for v, f, ok in zip(b["video_id"], b["frame_index"], b["mask"])
        if ok
    ]
    expected = [(r.video_id, r.frame_index) for r in _test_records(face_root)]
    assert sorted(rows) == sorted(expected) and len(rows) == len(set(rows)) == 22
    assert all(b["label"].shape == (8 // process_count,) for h in per_host for b in h)


# ---------------------------------------------------------------- corrupt data


def _broken_copy(src_root: str, dst: str, damage) -> str:
    shutil.copytree(src_root, dst)
    victim = records.split_files(dst, "train")[1]
    with open(victim, "rb") as f:
        data = bytearray(f.read())
    with open(victim, "wb") as f:
        f.write(damage(data))
    return victim


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_corrupt_file_error_names_the_file(face_root, tmp_path, damage):
    fn = {
        "truncated": lambda d: bytes(d[: len(d) - 100]),
        "flipped byte": lambda d: bytes(d[:2000] + bytes([d[2000] ^ 0xFF]) + d[2001:]),
    }[damage]
    victim = _broken_copy(face_root, str(tmp_path / "broken"), fn)
    config = _config(str(tmp_path / "broken"), image_size=16, balance="none", steps=5)
    with pytest.raises(errors.CorruptDataError, match=os.path.basename(victim)):
        _take(train_data.create_train_iterator(config, process_index=0, process_count=1), 5)
    config.train.steps_per_epoch = 0  # counting the labels reads every file
    with pytest.raises(errors.CorruptDataError, match=os.path.basename(victim)):
        sizes.train_steps_per_epoch(config)
    with pytest.raises(errors.CorruptDataError, match=os.path.basename(victim)):
        errors.check_files(records.split_files(str(tmp_path / "broken"), "train"))


def test_undecodable_image_error_names_file_and_record(tmp_path):
    root = str(tmp_path)
    good = [_id_record(k, "test") for k in range(5)]
    bad = records.FaceRecord(b"\xff\xd8\xff\xe0 not a jpeg", 1, "test", "test", "X", "bad", 0)
    path = records.shard_path(root, "test", "test", 0, 1)
    records.write(path, good[:3] + [bad] + good[3:])
    config = _config(root, image_size=16, batch=4)
    with pytest.raises(errors.CorruptDataError, match=rf"{os.path.basename(path)} \(record 3"):
        list(eval_data.create_eval_iterator(config, "test", process_index=0, process_count=1))


# ---------------------------------------------------------------- benchmark


def test_benchmark_reports_throughput(face_root):
    out = train_data.benchmark(_config(face_root, image_size=32), num_batches=3)
    assert out["batch_size"] == 4 and out["num_batches"] == 3 and out["image_size"] == 32
    assert out["images_per_s"] > 0 and out["seconds"] > 0
