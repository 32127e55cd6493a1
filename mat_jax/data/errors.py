"""Corrupt data is never skipped: a failed read or decode becomes `CorruptDataError` naming the file.

A truncated or corrupt TFRecord file, or an image that does not decode, raises
`CorruptDataError` naming the file (and the record, for an image), found by re-scanning the
files being read once the reader has failed, since TensorFlow's message gives only a byte
offset. `naming_corrupt_files` wraps a block of reading (the counting of `sizes`),
`guarded` an iterator of batches (the train and eval streams), and `check_files` vets a
split ahead of time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from mat_jax.data import records
from mat_jax.data.tf_env import tf


class CorruptDataError(ValueError):
    """A record file is truncated or corrupt, or an image in it does not decode."""


def _corrupt(where: str, err: tf.errors.OpError) -> CorruptDataError:
    return CorruptDataError(
        f"corrupt record data in {where}; original error: {err.message.strip()}. "
        "Re-create the file with data_prep (or remove it); records are never skipped silently."
    )


@contextlib.contextmanager
def naming_corrupt_files(files: Sequence[str]):
    """Turns a failed read or decode inside the block into `CorruptDataError` naming the file."""
    try:
        yield
    except tf.errors.DataLossError as err:
        where = _locate_corrupt(files, decode=False)
        if where is None:
            shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            where = f"one of {shown} (a re-scan found no fault: flaky storage?)"
        raise _corrupt(where, err) from err
    except tf.errors.InvalidArgumentError as err:
        where = _locate_corrupt(files, decode=True)
        if where is None:
            raise  # not a data problem
        raise _corrupt(where, err) from err


def _locate_corrupt(files: Sequence[str], decode: bool) -> str | None:
    """The first file (and record, when decoding) among `files` that fails to read or decode."""
    logging.warning(
        "reading records failed; re-scanning %d files%s to name the bad one",
        len(files),
        " (decoding every image)" if decode else "",
    )
    image_spec = {"image": records.feature_spec()["image"]}
    for f in files:
        ds = tf.data.TFRecordDataset(f)
        if not decode:
            try:
                ds.reduce(np.int64(0), lambda n, _: n + 1)
            except tf.errors.OpError as err:
                return f"{f} ({err.message.strip()})"
            continue
        ds = ds.map(
            lambda x: tf.shape(tf.io.decode_image(tf.io.parse_single_example(x, image_spec)["image"], 3))
        )
        index = 0
        try:
            for _ in ds:
                index += 1
        except tf.errors.OpError as err:
            return f"{f} (record {index}: {err.message.strip()})"
    return None


def guarded(iterator: Iterator[Any], files: Sequence[str]) -> Iterator[Any]:
    """Yields from a tf.data numpy iterator, naming the bad file if reading fails."""
    while True:
        with naming_corrupt_files(files):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


def check_files(files: Sequence[str], decode: bool = False) -> None:
    """Reads every record of `files` (and decodes every image if `decode`); raises
    `CorruptDataError` naming the first bad file and record. A tool for vetting a split."""
    where = _locate_corrupt(list(files), decode=decode)
    if where is not None:
        raise CorruptDataError(f"corrupt record data in {where}")
