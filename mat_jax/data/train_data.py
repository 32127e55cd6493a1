"""The training stream: an endless, exactly resumable iterator of this host's augmented batches.

`create_train_iterator(config, *, start_step=0, process_index=None, process_count=None)`
yields host batches `{"image": float32 (b, S, S, 3) in [-1, 1], "label": int32 (b,)}`,
b = global batch // process count; `benchmark` times it.

How a training epoch is made (all of it is a function of `(config.seed, host, epoch)`):

1. The host reads `files[process_index::process_count]`.
2. Epoch e is `r` passes (r = round(n_fake / n_real) for `balance="repeat"`, else 1). Pass p
   reads the host's files in an order drawn from (seed, host, e, p), interleaved record by
   record, keeps every real and the fakes whose `(file id + record index + e) % r == p`, and
   shuffles them with a buffer of `config.data.shuffle_buffer` records seeded from
   (seed, host, e, p) (TensorFlow's global seed plays no part). So every fake is seen once and
   every real r times per epoch, one copy per pass: the copies are spread over the epoch, as
   the official loader's repeated real list under a random sampler spreads them, and the
   class ratio is the same in every part of the epoch. The price is reading the files r
   times per epoch (reading is ~10x cheaper than decoding). `balance="weights"` instead
   draws from two endless per-class streams by a fair stateless coin per record; `"none"`
   is one plain pass. The round is half-up, and at least 1.
3. The epoch is cut (or, on a host with fewer records, cycled) to exactly
   `steps_per_epoch * b` records, so every host yields the same number of batches per epoch
   and batches never straddle epochs. Each record is numbered within its epoch.
4. Decoding and augmentation run in a parallel, order-preserving map; every random draw of
   an image comes from stateless ops seeded with (seed, host, e, number), so thread
   scheduling cannot change a batch.

Exact resume: `start_step=k` starts the epoch stream at e = k // steps_per_epoch and skips
(k % steps_per_epoch) * b records *before* decoding (the skipped records are only read and
shuffled as encoded bytes), which yields the same batches a fresh iterator yields from its
k-th batch on. tf.data's own iterator state is never needed, so a checkpoint only has to
store the step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import numpy as np

from mat_jax.data import augment, decode, errors, records, sizes, sources
from mat_jax.data.tf_env import PREFETCH_BATCHES, READ_CYCLE, dataset_options, tf

_FOREVER = 2**62  # "endless" epoch range; an int64 that no run reaches
_RECORD_PREFETCH = 2048  # encoded records (~60 KB each at 384 px)
_GRAPH_SEED = 20210611  # any constant: see _seeded_shuffle


def _fold(seed: tf.Tensor, *data) -> tf.Tensor:
    for d in data:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(d, tf.int64))
    return seed


def _seeded_shuffle(ds: tf.data.Dataset, buffer: int, seed: tf.Tensor) -> tf.data.Dataset:
    """`ds.shuffle(buffer)` in an order that is a function of the stateless `seed` alone.

    A shuffle's two seeds are (graph seed, op seed), and the graph seed of a dataset
    function is TensorFlow's global seed at tracing time, so `tf.random.set_seed` anywhere
    in the process would move the data order. Pinning the graph seed of the function being
    traced (graph mode: this touches nothing outside it) removes that dependence.
    """
    if tf.executing_eagerly():
        raise RuntimeError("_seeded_shuffle must be traced inside a tf.data function")
    tf.random.set_seed(_GRAPH_SEED)
    op_seed = tf.random.stateless_uniform([], seed, minval=None, maxval=None, dtype=tf.int64)
    return ds.shuffle(buffer, seed=op_seed)


@dataclasses.dataclass(frozen=True)
class _TrainPlan:
    files: tuple[str, ...]
    host_batch: int
    steps_per_epoch: int
    balance: str
    repeats: int
    shuffle_buffer: int
    seed: int
    process_index: int

    @property
    def epoch_examples(self) -> int:
        return self.steps_per_epoch * self.host_batch


# Tags that keep the seeds of the different random streams of one epoch apart.
_TAG_FILES, _TAG_SHUFFLE, _TAG_SAMPLE, _TAG_AUGMENT = 1, 2, 3, 4


def _pass(
    plan: _TrainPlan, base: tf.Tensor, epoch: tf.Tensor, stream: int, p: tf.Tensor, keep
) -> tf.data.Dataset:
    """One shuffled pass over the host's files: (image bytes, label) records that `keep` accepts."""
    n = len(plan.files)
    order_seed = _fold(base, _TAG_FILES, epoch, stream, p)
    order = tf.argsort(tf.random.stateless_uniform([n], order_seed))
    names = tf.gather(tf.constant(plan.files), order)
    ids = tf.gather(tf.range(n, dtype=tf.int64), order)
    spec = {k: records.feature_spec()[k] for k in ("image", "label")}

    def read(file_id, name):
        return tf.data.TFRecordDataset(name).enumerate().map(lambda i, x: (file_id, i, x))

    cycle = min(n, READ_CYCLE)
    ds = tf.data.Dataset.from_tensor_slices((ids, names)).interleave(
        read, cycle_length=cycle, block_length=1, num_parallel_calls=cycle, deterministic=True
    )

    def parse(file_id, index, serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        return file_id, index, ex["image"], ex["label"]

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(lambda f, i, image, label: keep(f, i, label))
    ds = ds.map(lambda f, i, image, label: (image, label))
    return _seeded_shuffle(ds, plan.shuffle_buffer, _fold(base, _TAG_SHUFFLE, epoch, stream, p))


def _epoch(plan: _TrainPlan, base: tf.Tensor, epoch: tf.Tensor) -> tf.data.Dataset:
    """Epoch `epoch` of this host: exactly plan.epoch_examples (epoch, number, image bytes, label)."""
    if plan.balance == "weights":

        def stream(label):
            keep = lambda f, i, lab: tf.equal(lab, label)
            return tf.data.Dataset.range(_FOREVER).flat_map(
                lambda p: _pass(plan, base, epoch, label, p, keep)
            )

        # A fair coin per draw, stateless (sample_from_datasets would depend on the global seed).
        coin_seed = _fold(base, _TAG_SAMPLE, epoch)
        coins = tf.data.Dataset.range(_FOREVER).map(
            lambda j: tf.cast(tf.random.stateless_uniform([], _fold(coin_seed, j)) < 0.5, tf.int64)
        )
        ds = tf.data.Dataset.choose_from_datasets(
            [stream(records.LABEL_REAL), stream(records.LABEL_FAKE)], coins
        )
    else:
        r = plan.repeats

        def keep_for(p):
            # Reals in every pass; each fake in exactly one pass, chosen so that consecutive
            # frames of a file land in different passes and the choice moves every epoch.
            return lambda f, i, lab: tf.logical_or(
                tf.equal(lab, records.LABEL_REAL), (f + i + epoch) % r == p
            )

        ds = tf.data.Dataset.range(r).flat_map(lambda p: _pass(plan, base, epoch, 0, p, keep_for(p)))
    # A host with fewer records than its share cycles through its epoch again.
    ds = ds.repeat().take(plan.epoch_examples).enumerate()
    return ds.map(lambda number, x: (epoch, number, x[0], x[1]))


def _train_dataset(config, plan: _TrainPlan, start_step: int) -> tf.data.Dataset:
    aug = augment.Augment.from_config(config)
    base = tf.constant([plan.seed, plan.process_index], tf.int64)
    start_epoch, within = divmod(start_step, plan.steps_per_epoch)
    ds = tf.data.Dataset.range(start_epoch, _FOREVER).flat_map(lambda e: _epoch(plan, base, e))
    # Resume: skip encoded records, before the expensive decode.
    ds = ds.skip(within * plan.host_batch)
    # Encoded records read ahead in the background: a new pass (or epoch) must fill a whole
    # shuffle window before it yields anything, and this keeps the decoders busy meanwhile.
    ds = ds.prefetch(_RECORD_PREFETCH)

    def prepare(epoch, number, image_bytes, label):
        image = augment.augment_image(image_bytes, _fold(base, _TAG_AUGMENT, epoch, number), aug)
        return {"image": image, "label": tf.cast(label, tf.int32)}

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(plan.host_batch, drop_remainder=True)
    ds = ds.map(lambda b: {"image": decode.normalize(b["image"]), "label": b["label"]})
    return ds.prefetch(PREFETCH_BATCHES).with_options(dataset_options())


def _train_plan(config, process_index: int, process_count: int) -> _TrainPlan:
    root = sources.records_root(config)
    balance = sources.balance_mode(config)
    files = records.split_files(root, "train")
    host_files = sources.host_files(files, process_index, process_count, "train")
    host_batch = sources.per_host_batch(
        int(config.train.batch_size), process_count, "config.train.batch_size"
    )
    if sum(tf.io.gfile.stat(f).length for f in host_files) == 0:
        raise ValueError(f"the training files of process {process_index} are all empty: {host_files}")
    repeats = 1
    if balance == "repeat":
        repeats = sizes.repeats(*sizes.class_counts(root))
    elif balance == "weights":
        n_real, n_fake = sizes.count_labels(tuple(host_files))
        if n_real == 0 or n_fake == 0:
            # The per-class stream of a missing class would read its files forever.
            raise ValueError(
                f"balance='weights': process {process_index}'s files hold {n_real} reals and {n_fake} "
                "fakes; every process needs both classes (shard the split with classes mixed) or use "
                "balance='repeat'"
            )
    return _TrainPlan(
        files=tuple(host_files),
        host_batch=host_batch,
        steps_per_epoch=sizes.train_steps_per_epoch(config),
        balance=balance,
        repeats=repeats,
        shuffle_buffer=max(1, int(config.data.shuffle_buffer)),
        seed=int(config.seed),
        process_index=process_index,
    )


def create_train_iterator(
    config, *, start_step: int = 0, process_index: int | None = None, process_count: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Endless iterator of this host's training batches, starting at global step `start_step`.

    Yields dicts of numpy arrays: "image" float32 (b, S, S, 3) in [-1, 1], "label" int32 (b,),
    with b = config.train.batch_size // process_count and S = config.model.image_size.
    Batch k of `create_train_iterator(config, start_step=j)` equals batch j + k of a fresh
    iterator (exact resume); epoch e's content and order depend only on (config.seed, host, e).
    `process_index` / `process_count` default to JAX's.
    """
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    process_index, process_count = sources.processes(process_index, process_count)
    plan = _train_plan(config, process_index, process_count)
    ds = _train_dataset(config, plan, int(start_step))
    return errors.guarded(ds.as_numpy_iterator(), plan.files)


def benchmark(config, *, num_batches: int, warmup_batches: int = 2) -> dict[str, float]:
    """Images/s of the training iterator on `config.data.root`, one process's share.

    The first `warmup_batches` (shuffle buffers filling, threads starting) are timed
    separately as `startup_s`. Returns {"images_per_s", "seconds", "num_batches",
    "batch_size", "image_size", "startup_s"}.
    """
    t0 = time.perf_counter()
    it = create_train_iterator(config, process_index=0, process_count=1)
    for _ in range(warmup_batches):
        next(it)
    t1 = time.perf_counter()
    batch_size = 0
    for _ in range(num_batches):
        batch_size = len(next(it)["label"])
    seconds = time.perf_counter() - t1
    return {
        "images_per_s": num_batches * batch_size / seconds,
        "seconds": seconds,
        "num_batches": num_batches,
        "batch_size": batch_size,
        "image_size": int(config.model.image_size),
        "startup_s": t1 - t0,
    }
