"""The one TFRecord schema of mat_jax: written by `data_prep`, read by the input pipeline.

One `tf.train.Example` per face crop:

| key | type | meaning |
| --- | --- | --- |
| `image` | bytes | the aligned face crop, JPEG or PNG encoded (RGB) |
| `label` | int64 | 0 real, 1 fake |
| `dataset` | bytes | "ffpp", "celebdf", "dfdc", "demo", ... |
| `split` | bytes | "train", "val" or "test" |
| `method` | bytes | manipulation ("Deepfakes", ..., "SBI"); "original" for reals |
| `video_id` | bytes | unique within the dataset, e.g. "Deepfakes/c23/000_003" |
| `frame_index` | int64 | index of the frame in the decoded video |
| `track_id` | int64 | the person within the video (`mat_jax.faces.track`); 0 for a single face |
| `landmarks` | float list | (K, 2) landmarks in crop pixels, flattened; empty if unknown |
| `mask` | bytes | optional PNG blend/forgery mask at crop size; empty if absent |

Files follow the tensorflow-datasets layout, so `tfds.builder_from_directory` can open a
prepared directory: `<root>/<name>-<split>.tfrecord-<shard>-of-<num_shards>`.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Iterable, Iterator

import numpy as np

LABEL_REAL, LABEL_FAKE = 0, 1
# Written by data_prep beside the shards: counts per split / label / method and the
# settings used, so readers need not scan every record to size an epoch.
SUMMARY_FILE = "summary.json"
SPLITS = ("train", "val", "test")
REAL_METHOD = "original"


@dataclasses.dataclass
class FaceRecord:
    """One face crop with its provenance (numpy-side view of a record)."""

    image: bytes  # encoded JPEG/PNG
    label: int
    dataset: str
    split: str
    method: str
    video_id: str
    frame_index: int
    landmarks: np.ndarray | None = None  # (K, 2) float32, crop pixels
    mask: bytes = b""  # encoded PNG, or empty
    track_id: int = 0


def _remote(path: str) -> bool:
    """gs://, s3://, ...: paths only TensorFlow's gfile can read."""
    return "://" in path


def _tf():
    import tensorflow as tf  # deferred: importing TensorFlow costs seconds

    return tf


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64s are ten-byte two's complement varints
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(v: bytes | str) -> bytes:
    v = v.encode() if isinstance(v, str) else bytes(v)
    return _field(1, _field(1, v))  # Feature.bytes_list { value: v }


def _int_feature(v: int) -> bytes:
    return _field(3, _field(1, _varint(int(v))))  # Feature.int64_list { value: [v] } (packed)


def _float_feature(values: np.ndarray) -> bytes:
    packed = np.asarray(values, "<f4").tobytes()
    return _field(2, _field(1, packed) if packed else b"")  # Feature.float_list (packed)


def encode(rec: FaceRecord) -> bytes:
    """Serialises a `FaceRecord` to `tf.train.Example` bytes.

    The protobuf wire format is written directly, so data_prep's worker processes need not
    import TensorFlow (seconds and hundreds of MB each); the bytes parse exactly like an
    Example built with `tf.train.Example`
    (`tests/test_data_prep_units.py::test_encode_parses_like_a_tensorflow_example` checks this).
    """
    if rec.label not in (LABEL_REAL, LABEL_FAKE):
        raise ValueError(f"label must be 0 (real) or 1 (fake), got {rec.label!r} for {rec.video_id}")
    if rec.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {rec.split!r} for {rec.video_id}")
    lm = np.zeros((0,), np.float32) if rec.landmarks is None else np.asarray(rec.landmarks, np.float32)
    lm = lm.reshape(-1)
    feature = {
        "image": _bytes_feature(rec.image),
        "label": _int_feature(rec.label),
        "dataset": _bytes_feature(rec.dataset),
        "split": _bytes_feature(rec.split),
        "method": _bytes_feature(rec.method),
        "video_id": _bytes_feature(rec.video_id),
        "frame_index": _int_feature(rec.frame_index),
        "landmarks": _float_feature(lm),
        "mask": _bytes_feature(rec.mask),
        "track_id": _int_feature(rec.track_id),
    }
    # Example { features: Features { feature: map<string, Feature> } }; a map entry is a
    # message with the key as field 1 and the value as field 2.
    entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, v)) for k, v in feature.items())
    return _field(1, entries)


def feature_spec():
    """The `tf.io.parse_example` spec of the schema."""
    tf = _tf()
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "dataset": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "split": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "method": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "video_id": tf.io.FixedLenFeature([], tf.string),
        "frame_index": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "landmarks": tf.io.VarLenFeature(tf.float32),
        "mask": tf.io.FixedLenFeature([], tf.string, default_value=""),
        # Records written before multi-face tracking have no track_id: one face, track 0.
        "track_id": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }


def decode(serialized: bytes) -> FaceRecord:
    """Parses one record back into a `FaceRecord` (eager; for tests and tools)."""
    tf = _tf()
    ex = tf.io.parse_single_example(serialized, feature_spec())
    lm = tf.sparse.to_dense(ex["landmarks"]).numpy().reshape(-1, 2)
    return FaceRecord(
        image=ex["image"].numpy(),
        label=int(ex["label"].numpy()),
        dataset=ex["dataset"].numpy().decode(),
        split=ex["split"].numpy().decode(),
        method=ex["method"].numpy().decode(),
        video_id=ex["video_id"].numpy().decode(),
        frame_index=int(ex["frame_index"].numpy()),
        landmarks=lm if lm.size else None,
        mask=ex["mask"].numpy(),
        track_id=int(ex["track_id"].numpy()),
    )


def shard_path(root: str, name: str, split: str, shard: int, num_shards: int) -> str:
    """`<root>/<name>-<split>.tfrecord-00003-of-00016` (the tfds file layout)."""
    return os.path.join(root, f"{name}-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}")


def split_files(root: str, split: str) -> list[str]:
    """All shard files of `split` under `root`, sorted; raises with the fix if there are none."""
    pattern = os.path.join(root, f"*-{split}.tfrecord-*-of-*")
    if _remote(root):
        from tensorflow.io import gfile  # gfile reads gs:// as well as local paths

        files = sorted(gfile.glob(pattern))
    else:  # local paths need no TensorFlow import (seconds)
        import glob

        files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(
            f"no '{split}' records under {root}: expected files named "
            f"<name>-{split}.tfrecord-NNNNN-of-NNNNN; "
            "prepare them with `python -m data_prep.build --dataset=... --root=RAW --out=DIR`"
        )
    return files


def load_summary(root: str) -> dict | None:
    """The data_prep summary of a prepared directory, or None if it has none.

    Layout: {"dataset": name, "version": tool version, "settings": {...},
             "counts": {split: {"total": n, "real": n, "fake": n, "methods": {method: n}}}}
    """
    import json

    path = os.path.join(root, SUMMARY_FILE)
    if not _remote(path):
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)
    from tensorflow.io import gfile

    if not gfile.exists(path):
        return None
    with gfile.GFile(path, "r") as f:
        return json.load(f)


def write(path: str, records: Iterable[FaceRecord]) -> int:
    """Writes records to one TFRecord file; returns how many. A small writer for tests and tools."""
    tf = _tf()
    n = 0
    with tf.io.TFRecordWriter(path) as w:
        for rec in records:
            w.write(encode(rec))
            n += 1
    return n


def iter_serialized(path: str) -> Iterator[bytes]:
    """Yields the raw records of one TFRecord file, without TensorFlow's reader.

    Frame: uint64 length, uint32 length CRC, data, uint32 data CRC (CRCs not checked
    here). A file that ends inside a frame raises, naming the file and the offset.
    """
    if _remote(path):
        from tensorflow.io import gfile

        opener = gfile.GFile
    else:
        opener = open
    with opener(path, "rb") as f:
        offset = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise ValueError(f"{path}: truncated record header at byte {offset}; re-create this file")
            (length,) = struct.unpack("<Q", head[:8])
            body = f.read(length + 4)
            if len(body) < length + 4:
                raise ValueError(f"{path}: truncated record at byte {offset}; re-create this file")
            yield body[:length]
            offset += 12 + length + 4


def read(path: str) -> list[FaceRecord]:
    """Reads every record of one file (eager; for tests and tools)."""
    return [decode(r) for r in iter_serialized(path)]


# --- tensorflow-datasets description -------------------------------------------------------
# A prepared directory carries dataset_info.json + features.json, so that
# `tfds.builder_from_directory(root).as_dataset(split=...)` opens it as well as our reader.


def tfds_features():
    """The schema as a `tfds.features.FeaturesDict` (decodes `image`, keeps the rest raw)."""
    import tensorflow_datasets as tfds  # deferred like TensorFlow

    text = tfds.features.Text
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["real", "fake"]),
            "dataset": text(),
            "split": text(),
            "method": text(),
            "video_id": text(),
            "frame_index": tfds.features.Scalar(dtype=np.int64),
            # (K, 2) flattened; tfds parses a float list of any length, also empty.
            "landmarks": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            # PNG bytes or empty: an Image feature would fail on the empty ones.
            "mask": tfds.features.Tensor(shape=(), dtype=np.object_),
            "track_id": tfds.features.Scalar(dtype=np.int64),
        }
    )


def write_tfds_metadata(
    root: str,
    name: str,
    version: str,
    shard_lengths: dict[str, list[int]],
    num_bytes: dict[str, int],
    description: str = "",
) -> None:
    """Writes dataset_info.json and features.json for the shards already under `root`.

    Args:
      root: the prepared directory; its shards must be named with `shard_path(root, name, ...)`.
      name: the dataset name in the shard file names (tfds wants snake_case).
      version: "MAJOR.MINOR.PATCH".
      shard_lengths: per split, the number of records of each shard, in shard order.
      num_bytes: per split, the total size of its shard files.
      description: free text shown by tfds (settings, tool version, counts).
    """
    import tensorflow_datasets as tfds

    template = tfds.core.ShardedFileTemplate(
        data_dir=tfds.core.Path(root),
        template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        dataset_name=name,
        filetype_suffix="tfrecord",
    )
    infos = [
        tfds.core.SplitInfo(
            name=split,
            shard_lengths=list(lengths),
            num_bytes=int(num_bytes[split]),
            filename_template=template.replace(split=split),
        )
        for split, lengths in shard_lengths.items()
        if lengths
    ]
    tfds.folder_dataset.write_metadata(
        data_dir=root,
        features=tfds_features(),
        split_infos=infos,
        version=version,
        filename_template=template,
        check_data=False,
        description=description,
    )
