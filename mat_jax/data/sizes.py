"""How much data there is: records and classes of a split, and the steps of a training epoch.

An epoch under `balance="repeat"` sees every fake once and every real r = round(n_fake /
n_real) times (half-up, at least 1), as the official loader's repeated real list does:
n_fake + n_real * r examples. `"weights"` draws the classes evenly, 2 * max(n_real,
n_fake) examples; `"none"` is every record once. Class counts come from data_prep's
summary.json, else from reading the labels (cached per set of files).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from mat_jax.data import errors, records, sources
from mat_jax.data.tf_env import READ_CYCLE, tf


@functools.lru_cache(maxsize=64)
def count_labels(files: tuple[str, ...]) -> tuple[int, int]:
    """(n_real, n_fake) of some record files, by reading only their labels."""
    spec = {"label": records.feature_spec()["label"]}
    ds = tf.data.TFRecordDataset(list(files), num_parallel_reads=min(len(files), READ_CYCLE))
    ds = ds.batch(1024).map(lambda x: tf.io.parse_example(x, spec)["label"])
    count = lambda acc, lab: acc + tf.math.bincount(lab, minlength=2, maxlength=2, dtype=tf.int64)
    with errors.naming_corrupt_files(files):
        counts = ds.reduce(tf.zeros([2], tf.int64), count).numpy()
    return int(counts[0]), int(counts[1])


@functools.lru_cache(maxsize=64)
def count_records(files: tuple[str, ...]) -> tuple[int, ...]:
    """Record count of each file (read without parsing)."""
    out = []
    for f in files:
        with errors.naming_corrupt_files([f]):
            out.append(int(tf.data.TFRecordDataset(f).reduce(np.int64(0), lambda n, _: n + 1).numpy()))
    return tuple(out)


def class_counts(root: str, split: str = "train") -> tuple[int, int]:
    """(n_real, n_fake) of a split: from data_prep's summary, else by counting labels."""
    summary = records.load_summary(root)
    counts = (summary or {}).get("counts", {}).get(split)
    if counts is not None and "real" in counts and "fake" in counts:
        return int(counts["real"]), int(counts["fake"])
    return count_labels(tuple(records.split_files(root, split)))


def repeats(n_real: int, n_fake: int) -> int:
    """How often each real is seen per epoch under balance="repeat" (at least once)."""
    if n_real == 0 or n_fake == 0:
        raise ValueError(
            f"balance='repeat' needs reals and fakes in the training split, found {n_real} reals and "
            f"{n_fake} fakes; use --config.data.balance=none for a one-class split"
        )
    return max(1, math.floor(n_fake / n_real + 0.5))


def _epoch_examples(n_real: int, n_fake: int, balance: str) -> int:
    if balance == "repeat":
        return n_fake + n_real * repeats(n_real, n_fake)
    if balance == "weights":
        if n_real == 0 or n_fake == 0:
            raise ValueError(f"balance='weights' needs both classes, found {n_real} reals and {n_fake} fakes")
        return 2 * max(n_real, n_fake)
    return n_real + n_fake


def train_steps_per_epoch(config) -> int:
    """Steps of one training epoch.

    `config.train.steps_per_epoch` if positive; otherwise one pass over the balanced training
    split divided by the global batch `config.train.batch_size` (floor, at least 1). The
    balanced split has n_fake + n_real * round(n_fake / n_real) examples for "repeat"
    (the official loader's epoch), 2 * max(n_real, n_fake) for "weights", and all
    records for "none". Counts come from data_prep's summary.json, else from reading labels.
    """
    if int(config.train.steps_per_epoch) > 0:
        return int(config.train.steps_per_epoch)
    n_real, n_fake = class_counts(sources.records_root(config))
    examples = _epoch_examples(n_real, n_fake, sources.balance_mode(config))
    return max(1, examples // int(config.train.batch_size))
