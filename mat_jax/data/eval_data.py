"""The evaluation stream: every record of a split exactly once, in file order, padded and masked.

`create_eval_iterator` yields host batches of deterministic model inputs with their labels,
video ids, frame indices, track ids and methods (for per-video aggregation), the last batch padded to
full size with masked rows; with several processes every host yields the same number of
batches, so collective eval steps stay in lockstep.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from mat_jax.data import decode, errors, records, sizes, sources
from mat_jax.data.tf_env import PREFETCH_BATCHES, dataset_options, tf

_EVAL_KEYS = ("image", "label", "method", "video_id", "frame_index", "track_id")


def _strings(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode("utf-8") for v in values], dtype=str)


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a host batch to `size` rows: zero images, label 0, frame -1, empty ids, mask 0."""
    n = len(batch["label"])
    out = {}
    for key, value in batch.items():
        fill = {"frame_index": -1, "track_id": -1, "video_id": "", "method": ""}.get(key, 0)
        pad = np.full((size - n,) + value.shape[1:], fill, dtype=value.dtype)
        out[key] = np.concatenate([value, pad])
    return out


def _empty_batch(size: int, image_size: int) -> dict[str, np.ndarray]:
    return {
        "image": np.zeros((size, image_size, image_size, 3), np.float32),
        "label": np.zeros((size,), np.int32),
        "mask": np.zeros((size,), np.float32),
        "video_id": np.full((size,), "", dtype=str),
        "frame_index": np.full((size,), -1, np.int32),
        "track_id": np.full((size,), -1, np.int32),
        "method": np.full((size,), "", dtype=str),
    }


def _eval_batches(ds_iter, files, host_batch: int, image_size: int, num_batches: int | None):
    produced = 0
    for raw in errors.guarded(ds_iter, files):
        n = len(raw["label"])
        batch = {
            "image": raw["image"],
            "label": raw["label"],
            "mask": np.ones((n,), np.float32),
            "video_id": _strings(raw["video_id"]),
            "frame_index": raw["frame_index"],
            "track_id": raw["track_id"],
            "method": _strings(raw["method"]),
        }
        if n < host_batch:
            batch = _pad(batch, host_batch)
        produced += 1
        yield batch
    # Hosts with fewer records pad with empty batches so that every host runs the same
    # number of (collective) eval steps.
    while num_batches is not None and produced < num_batches:
        produced += 1
        yield _empty_batch(host_batch, image_size)


def create_eval_iterator(
    config,
    split: str,
    *,
    batch_size: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    root: str | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Iterator over every record of `split` exactly once, in file order, no augmentation.

    Yields host batches of b = batch_size // process_count rows (batch_size is global and
    defaults to config.train.eval_batch_size): "image" float32 (b, S, S, 3) in [-1, 1],
    "label" int32, "mask" float32 (1 real row, 0 padding), "video_id" and "method" (numpy
    str arrays, "" for padding), "frame_index" and "track_id" int32 (-1 for padding). The last partial
    batch is padded to b. With several processes, files are split as for training (or
    records, if there are fewer files than processes) and every host yields the same number
    of batches, padding with fully masked ones. `root` overrides config.data.root, e.g.
    to evaluate on another dataset's records.
    """
    process_index, process_count = sources.processes(process_index, process_count)
    root = sources.records_root(config, root)
    global_batch = int(batch_size if batch_size is not None else config.train.eval_batch_size)
    host_batch = sources.per_host_batch(global_batch, process_count, "eval batch_size")
    image_size = int(config.model.image_size)
    files = records.split_files(root, split)

    num_batches = None
    if process_count == 1:
        host_files, ds = files, tf.data.TFRecordDataset(files)
    elif len(files) >= process_count:
        host_files = files[process_index::process_count]
        counts = sizes.count_records(tuple(files))
        per_host = [sum(counts[h::process_count]) for h in range(process_count)]
        num_batches = max(math.ceil(c / host_batch) for c in per_host)
        ds = tf.data.TFRecordDataset(host_files)
    else:
        # Too few files to give each host its own: split by record instead.
        host_files = files
        total = sum(sizes.count_records(tuple(files)))
        num_batches = math.ceil(math.ceil(total / process_count) / host_batch)
        ds = tf.data.TFRecordDataset(files).shard(process_count, process_index)

    spec = {k: records.feature_spec()[k] for k in _EVAL_KEYS}

    def prepare(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        return {
            "image": decode.preprocess_eval(ex["image"], image_size),
            "label": tf.cast(ex["label"], tf.int32),
            "method": ex["method"],
            "video_id": ex["video_id"],
            "frame_index": tf.cast(ex["frame_index"], tf.int32),
            "track_id": tf.cast(ex["track_id"], tf.int32),
        }

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(host_batch)
    ds = ds.map(lambda b: {**b, "image": decode.normalize(b["image"])})
    ds = ds.prefetch(PREFETCH_BATCHES).with_options(dataset_options())
    return _eval_batches(ds.as_numpy_iterator(), host_files, host_batch, image_size, num_batches)
