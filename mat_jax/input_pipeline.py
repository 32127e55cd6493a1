"""tf.data input pipeline: sharded TFRecords (`mat_jax.data.records`) to host batches of numpy arrays.

The only module of `mat_jax` that touches tf.data. Public API:

* `train_steps_per_epoch(config)`: steps of one epoch.
* `create_train_iterator(config, *, start_step=0, process_index=None, process_count=None)`:
  an endless iterator of host batches `{"image": float32 (b, S, S, 3) in [-1, 1],
  "label": int32 (b,)}`, b = global batch // process count, that resumes exactly at a step.
* `create_eval_iterator(config, split, *, batch_size=None, root=None, ...)`: every record
  of a split exactly once, last batch padded and masked, with video ids for aggregation.
* `benchmark(config, *, num_batches)`: images/s of the train iterator.
* `preprocess_train`, `preprocess_eval`, `normalize`: the per-image ops, usable eagerly.
* `check_files(files, decode=False)`: finds the corrupt file (and record) of a split.

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

Corrupt data is never skipped: a truncated or corrupt TFRecord file, or an image that does
not decode, raises `CorruptDataError` naming the file (found by re-scanning this host's files
once the reader has failed, since TensorFlow's message gives only a byte offset).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from mat_jax.data import records


def _hide_accelerators_from_tf() -> None:
    """Keeps TensorFlow off GPUs/TPUs, which belong to JAX (tf.data needs only the CPU)."""
    for kind in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], kind)
        except (RuntimeError, ValueError):
            # RuntimeError: devices were already initialised (someone used TF first);
            # ValueError: this TensorFlow build has no such device type.
            pass


_hide_accelerators_from_tf()

_FOREVER = 2**62  # "endless" epoch range; an int64 that no run reaches
_JPEG_MAGIC = b"\xff\xd8\xff"
# A record whose shorter side is within this factor above the target size is centre
# cropped without resampling, as the official loader's CenterCrop(380) of the 384 px
# aligned faces; anything else is centre cropped to a square and resized.
_CROP_SLACK = 9 / 8
# Random resized crop range: milder than ImageNet's (0.08, 1) because a face crop that
# loses most of the face loses the evidence.
_RRC_AREA = (0.5, 1.0)
_RRC_ASPECT = (3 / 4, 4 / 3)
_BLUR_SIGMA = (0.1, 2.0)
_BLUR_RADIUS = 6  # 13 taps cover 3 sigma at the largest sigma
_READ_CYCLE = 16  # files read in parallel and interleaved record by record
_PREFETCH_BATCHES = 2
_RECORD_PREFETCH = 2048  # encoded records (~60 KB each at 384 px)
_BALANCE_MODES = ("repeat", "weights", "none")
_GRAPH_SEED = 20210611  # any constant: see _seeded_shuffle


class CorruptDataError(ValueError):
    """A record file is truncated or corrupt, or an image in it does not decode."""


# ---------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class _Augment:
    """The training augmentation, as plain Python values read once from the config."""

    image_size: int
    hflip: bool
    random_resized_crop: bool
    color_jitter: float
    jpeg_quality: tuple[int, int]
    blur_prob: float
    jitter_shift: float = 0.0
    jitter_scale: float = 0.0
    jitter_rotation: float = 0.0

    @property
    def jitter(self) -> bool:
        return self.jitter_shift > 0 or self.jitter_scale > 0 or self.jitter_rotation > 0

    @classmethod
    def from_config(cls, config) -> _Augment:
        d = config.data
        lo, hi = (int(q) for q in d.get("jpeg_quality", (0, 0)))
        if (lo, hi) != (0, 0) and not 1 <= lo <= hi <= 100:
            raise ValueError(
                f"config.data.jpeg_quality must be (0, 0) (off) or 1 <= lo <= hi <= 100, got {(lo, hi)}"
            )
        jitter = float(d.get("color_jitter", 0.0))
        blur = float(d.get("blur_prob", 0.0))
        if jitter < 0 or not 0 <= blur <= 1:
            raise ValueError(
                f"config.data.color_jitter must be >= 0 and blur_prob in [0, 1], got {jitter}, {blur}"
            )
        shift, scale, rotation = (
            float(d.get(k, 0.0)) for k in ("jitter_shift", "jitter_scale", "jitter_rotation")
        )
        if not (0 <= shift <= 0.25 and 0 <= scale <= 0.5 and 0 <= rotation <= 45):
            raise ValueError(
                "config.data.jitter_shift must be in [0, 0.25] (fraction of the crop side), jitter_scale in "
                f"[0, 0.5] and jitter_rotation in [0, 45] (degrees), got {shift}, {scale}, {rotation}"
            )
        return cls(
            image_size=int(config.model.image_size),
            hflip=bool(d.get("hflip", True)),
            random_resized_crop=bool(d.get("random_resized_crop", False)),
            color_jitter=jitter,
            jpeg_quality=(lo, hi),
            blur_prob=blur,
            jitter_shift=shift,
            jitter_scale=scale,
            jitter_rotation=rotation,
        )


def _balance(config) -> str:
    mode = str(config.data.get("balance", "repeat"))
    if mode not in _BALANCE_MODES:
        raise ValueError(f"config.data.balance must be one of {_BALANCE_MODES}, got {mode!r}")
    return mode


def _root(config, root: str | None = None) -> str:
    root = root if root is not None else config.data.root
    if not root:
        raise ValueError(
            "config.data.root is empty: set it to the directory of TFRecords written by data_prep "
            "(--config.data.root=DIR)"
        )
    return root


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # deferred: only the defaults need it

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    return int(process_index), int(process_count)


def _per_host_batch(global_batch: int, process_count: int, what: str) -> int:
    if global_batch <= 0 or global_batch % process_count:
        raise ValueError(
            f"{what}={global_batch} must be a positive multiple of the process count {process_count}"
        )
    return global_batch // process_count


def _host_files(files: Sequence[str], process_index: int, process_count: int, split: str) -> list[str]:
    if len(files) < process_count:
        raise ValueError(
            f"the '{split}' split has {len(files)} record files for {process_count} processes: every process "
            f"needs at least one file; re-shard it with data_prep into a multiple of {process_count} files"
        )
    return list(files[process_index::process_count])


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # Parallelism comes from processing many images at once; per-op threads would only
    # compete with them (and with JAX) for the host's cores.
    options.threading.max_intra_op_parallelism = 1
    return options


# ---------------------------------------------------------------------- counting


@functools.lru_cache(maxsize=64)
def _count_labels(files: tuple[str, ...]) -> tuple[int, int]:
    """(n_real, n_fake) of some record files, by reading only their labels."""
    spec = {"label": records.feature_spec()["label"]}
    ds = tf.data.TFRecordDataset(list(files), num_parallel_reads=min(len(files), _READ_CYCLE))
    ds = ds.batch(1024).map(lambda x: tf.io.parse_example(x, spec)["label"])
    count = lambda acc, lab: acc + tf.math.bincount(lab, minlength=2, maxlength=2, dtype=tf.int64)
    with _naming_corrupt_files(files):
        counts = ds.reduce(tf.zeros([2], tf.int64), count).numpy()
    return int(counts[0]), int(counts[1])


@functools.lru_cache(maxsize=64)
def _count_records(files: tuple[str, ...]) -> tuple[int, ...]:
    """Record count of each file (read without parsing)."""
    out = []
    for f in files:
        with _naming_corrupt_files([f]):
            out.append(int(tf.data.TFRecordDataset(f).reduce(np.int64(0), lambda n, _: n + 1).numpy()))
    return tuple(out)


def _class_counts(root: str, split: str = "train") -> tuple[int, int]:
    """(n_real, n_fake) of a split: from data_prep's summary, else by counting labels."""
    summary = records.load_summary(root)
    counts = (summary or {}).get("counts", {}).get(split)
    if counts is not None and "real" in counts and "fake" in counts:
        return int(counts["real"]), int(counts["fake"])
    return _count_labels(tuple(records.split_files(root, split)))


def _repeats(n_real: int, n_fake: int) -> int:
    """How often each real is seen per epoch under balance="repeat" (at least once)."""
    if n_real == 0 or n_fake == 0:
        raise ValueError(
            f"balance='repeat' needs reals and fakes in the training split, found {n_real} reals and "
            f"{n_fake} fakes; use --config.data.balance=none for a one-class split"
        )
    return max(1, math.floor(n_fake / n_real + 0.5))


def _epoch_examples(n_real: int, n_fake: int, balance: str) -> int:
    if balance == "repeat":
        return n_fake + n_real * _repeats(n_real, n_fake)
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
    n_real, n_fake = _class_counts(_root(config))
    return max(1, _epoch_examples(n_real, n_fake, _balance(config)) // int(config.train.batch_size))


# ---------------------------------------------------------------------- per-image ops


def _decode_window(image_bytes: tf.Tensor, window_fn) -> tf.Tensor:
    """Decodes the window `window_fn(h, w) -> (y, x, hh, ww)` of an encoded image as uint8 RGB.

    JPEGs decode only the window (`decode_and_crop_jpeg` skips the work outside it); PNGs
    and other formats decode whole and are sliced.
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        window = tf.stack(window_fn(shape[0], shape[1]))
        return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def other():
        return _window(tf.io.decode_image(image_bytes, channels=3, expand_animations=False), window_fn)

    is_jpeg = tf.strings.substr(image_bytes, 0, len(_JPEG_MAGIC)) == _JPEG_MAGIC
    return tf.cond(is_jpeg, jpeg, other)


def _window(image: tf.Tensor, window_fn) -> tf.Tensor:
    """The window `window_fn(h, w) -> (y, x, hh, ww)` of a decoded image."""
    shape = tf.shape(image)
    y, x, h, w = window_fn(shape[0], shape[1])
    return image[y : y + h, x : x + w, :]


def _decode(image_bytes: tf.Tensor) -> tf.Tensor:
    return _decode_window(image_bytes, lambda h, w: (0, 0, h, w))


def _resize_u8(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear resize to (size, size), antialiased when shrinking, rounded back to uint8."""
    shape = tf.shape(image)
    shrink = tf.reduce_any(shape[:2] > size)
    # Antialiasing only changes a shrink, and TF's antialiased kernel costs ~5x the plain one
    # (2.4 vs 0.5 ms at 380 px): random resized crops mostly enlarge.
    resized = tf.cond(
        shrink,
        lambda: tf.image.resize(image, [size, size], method="bilinear", antialias=True),
        lambda: tf.image.resize(image, [size, size], method="bilinear"),
    )
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def _centre_window(size: int):
    """The deterministic crop's window: centre S x S if the image is at most _CROP_SLACK * S,
    else the centre square (resized to S afterwards)."""

    def window(h, w):
        side = tf.minimum(h, w)
        crop_only = (side >= size) & (tf.cast(side, tf.float32) <= _CROP_SLACK * size)
        c = tf.where(crop_only, size, side)
        return (h - c) // 2, (w - c) // 2, c, c

    return window


def _to_size(image: tf.Tensor, size: int) -> tf.Tensor:
    already = tf.reduce_all(tf.shape(image)[:2] == size)
    image = tf.cond(already, lambda: image, lambda: _resize_u8(image, size))
    return tf.ensure_shape(image, [size, size, 3])


def _centre(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """The deterministic crop: centre S x S if the image is at most _CROP_SLACK * S, else the centre
    square resized to S."""
    return _to_size(_decode_window(image_bytes, _centre_window(size)), size)


def preprocess_eval(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded image -> uint8 (S, S, 3): decode and centre crop/resize, no randomness."""
    return _centre(image_bytes, int(image_size))


def eval_images(encoded: Sequence[bytes], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Encoded face crops -> (uint8 (n, S, S, 3), float32 model inputs in [-1, 1]).

    The per-record ops of `create_eval_iterator` (`preprocess_eval`, then `normalize` on the
    batch), for crops that are not in records: `mat_jax.predict` scores a new video's faces
    exactly as evaluation scores the records' faces.
    """
    if not encoded:
        size = int(image_size)
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size, 3), np.float32)
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(encoded), tf.string))
    ds = ds.map(lambda b: preprocess_eval(b, image_size)).batch(len(encoded))
    ds = ds.map(lambda b: (b, normalize(b))).with_options(_options())
    pixels, images = next(iter(ds.as_numpy_iterator()))
    return pixels, images


def _gaussian_blur(image: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Separable Gaussian blur of a float (H, W, 3) image with reflected borders."""
    r = _BLUR_RADIUS
    x = tf.range(-r, r + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(x / sigma))
    k = k / tf.reduce_sum(k)
    padded = tf.pad(image[None], [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    kh = tf.tile(tf.reshape(k, [1, 2 * r + 1, 1, 1]), [1, 1, 3, 1])
    kv = tf.tile(tf.reshape(k, [2 * r + 1, 1, 1, 1]), [1, 1, 3, 1])
    out = tf.nn.depthwise_conv2d(padded, kh, strides=[1, 1, 1, 1], padding="VALID")
    out = tf.nn.depthwise_conv2d(out, kv, strides=[1, 1, 1, 1], padding="VALID")
    return out[0]


def _align_jitter(image: tf.Tensor, seed: tf.Tensor, aug: _Augment) -> tf.Tensor:
    """A random similarity transform of a whole decoded crop about its centre: shift up to
    `jitter_shift` of the side per axis, scale log-uniform in [1/(1+s), 1+s], rotation up
    to `jitter_rotation` degrees; bilinear, edges reflected.

    The crops were aligned with landmarks that a new detection (another frame, a fake's own
    face, a deployed detector) puts a little elsewhere; this teaches the model that much
    slack. It runs on the record's crop before the final resize, so the resampling blur is
    shrunk with it.
    """
    u = tf.random.stateless_uniform([4], seed, minval=-1.0, maxval=1.0)
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    side = tf.minimum(h, w)
    tx, ty = aug.jitter_shift * side * u[0], aug.jitter_shift * side * u[1]
    scale = tf.pow(1.0 + aug.jitter_scale, u[2])
    theta = aug.jitter_rotation * (math.pi / 180.0) * u[3]
    # The op maps output pixels to input pixels (centres at integer coordinates): the inverse
    # of p -> c + scale * R(theta) (p - c) + t.
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    ox, oy = cx + tx, cy + ty
    transform = tf.stack(
        [cos, sin, cx - cos * ox - sin * oy, -sin, cos, cy + sin * ox - cos * oy, 0.0, 0.0]
    )
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None],
        transforms=transform[None],
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )[0]
    return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)


def _augment(image_bytes: tf.Tensor, seed: tf.Tensor, aug: _Augment) -> tf.Tensor:
    size = aug.image_size
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    # The whole crop is decoded (no JPEG window decoding) so the shift can bring its edges in.
    jittered = _align_jitter(_decode(image_bytes), seeds[5], aug) if aug.jitter else None

    if aug.random_resized_crop:

        def window(h, w):
            begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.stack([h, w, 3]),
                bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
                seed=seeds[0],
                min_object_covered=0.0,
                aspect_ratio_range=_RRC_ASPECT,
                area_range=_RRC_AREA,
                max_attempts=10,
                use_image_if_no_bounding_boxes=True,
            )
            return begin[0], begin[1], extent[0], extent[1]

        if aug.jitter:
            image = _resize_u8(_window(jittered, window), size)
        else:
            image = _resize_u8(_decode_window(image_bytes, window), size)
    elif aug.jitter:
        image = _to_size(_window(jittered, _centre_window(size)), size)
    else:
        image = _centre(image_bytes, size)

    if aug.hflip:
        flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)

    if aug.color_jitter > 0 or aug.blur_prob > 0:
        x = tf.cast(image, tf.float32) / 255.0
        if aug.color_jitter > 0:
            # torchvision ColorJitter semantics: brightness/contrast/saturation factors in
            # [1 - s, 1 + s], hue shift in [-s/4, s/4] turns; a fixed order keeps it simple.
            s = aug.color_jitter
            u = tf.random.stateless_uniform([4], seeds[2], minval=-1.0, maxval=1.0)
            x = tf.clip_by_value(x * tf.maximum(0.0, 1.0 + s * u[0]), 0.0, 1.0)
            x = tf.clip_by_value(tf.image.adjust_contrast(x, tf.maximum(0.0, 1.0 + s * u[1])), 0.0, 1.0)
            x = tf.clip_by_value(tf.image.adjust_saturation(x, tf.maximum(0.0, 1.0 + s * u[2])), 0.0, 1.0)
            x = tf.clip_by_value(
                tf.image.adjust_hue(x, tf.clip_by_value(0.25 * s * u[3], -0.5, 0.5)), 0.0, 1.0
            )
        if aug.blur_prob > 0:
            u = tf.random.stateless_uniform([2], seeds[3])
            sigma = _BLUR_SIGMA[0] + (_BLUR_SIGMA[1] - _BLUR_SIGMA[0]) * u[1]
            x = tf.cond(u[0] < aug.blur_prob, lambda: _gaussian_blur(x, sigma), lambda: x)
        image = tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)

    if aug.jpeg_quality != (0, 0):
        lo, hi = aug.jpeg_quality
        quality = tf.random.stateless_uniform([], seeds[4], minval=lo, maxval=hi + 1, dtype=tf.int32)
        image = tf.image.adjust_jpeg_quality(image, quality)
    return tf.ensure_shape(image, [size, size, 3])


def preprocess_train(image_bytes: tf.Tensor, seed: tf.Tensor, config) -> tf.Tensor:
    """Encoded image -> augmented uint8 (S, S, 3), a pure function of (bytes, seed, config).

    Order: alignment jitter (a small random shift, scale and rotation of the whole crop,
    config.data.jitter_shift / jitter_scale / jitter_rotation; off when all are 0), crop
    (centre, or random resized if config.data.random_resized_crop), horizontal flip (p 0.5,
    config.data.hflip), colour jitter (config.data.color_jitter strength),
    Gaussian blur (p config.data.blur_prob, sigma in [0.1, 2]), JPEG re-compression (quality
    uniform in config.data.jpeg_quality, inclusive, every image when on). `seed` is a
    stateless seed, shape (2,) int.
    """
    return _augment(image_bytes, seed, _Augment.from_config(config))


def normalize(images: tf.Tensor) -> tf.Tensor:
    """uint8 pixels -> float32 (x / 255 - 0.5) / 0.5 in [-1, 1] (the official mean/std 0.5).

    Computed as -1 + x * 2/255 by one `Dequantize` kernel (equal to the formula within one
    float32 ulp): the plain cast-divide-subtract takes four passes over a batch and, with
    one thread per op, cost a third of the pipeline's throughput at 380 px.
    """
    return tf.quantization.dequantize(tf.bitcast(images, tf.quint8), -1.0, 1.0, mode="MIN_COMBINED")


# ---------------------------------------------------------------------- errors


def _corrupt(where: str, err: tf.errors.OpError) -> CorruptDataError:
    return CorruptDataError(
        f"corrupt record data in {where}; original error: {err.message.strip()}. "
        "Re-create the file with data_prep (or remove it); records are never skipped silently."
    )


@contextlib.contextmanager
def _naming_corrupt_files(files: Sequence[str]):
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


def _guarded(iterator: Iterator[Any], files: Sequence[str]) -> Iterator[Any]:
    """Yields from a tf.data numpy iterator, naming the bad file if reading fails."""
    while True:
        with _naming_corrupt_files(files):
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


# ---------------------------------------------------------------------- training


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

    cycle = min(n, _READ_CYCLE)
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
    aug = _Augment.from_config(config)
    base = tf.constant([plan.seed, plan.process_index], tf.int64)
    start_epoch, within = divmod(start_step, plan.steps_per_epoch)
    ds = tf.data.Dataset.range(start_epoch, _FOREVER).flat_map(lambda e: _epoch(plan, base, e))
    # Resume: skip encoded records, before the expensive decode.
    ds = ds.skip(within * plan.host_batch)
    # Encoded records read ahead in the background: a new pass (or epoch) must fill a whole
    # shuffle window before it yields anything, and this keeps the decoders busy meanwhile.
    ds = ds.prefetch(_RECORD_PREFETCH)

    def prepare(epoch, number, image_bytes, label):
        image = _augment(image_bytes, _fold(base, _TAG_AUGMENT, epoch, number), aug)
        return {"image": image, "label": tf.cast(label, tf.int32)}

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(plan.host_batch, drop_remainder=True)
    ds = ds.map(lambda b: {"image": normalize(b["image"]), "label": b["label"]})
    return ds.prefetch(_PREFETCH_BATCHES).with_options(_options())


def _train_plan(config, process_index: int, process_count: int) -> _TrainPlan:
    root = _root(config)
    balance = _balance(config)
    files = records.split_files(root, "train")
    host_files = _host_files(files, process_index, process_count, "train")
    host_batch = _per_host_batch(int(config.train.batch_size), process_count, "config.train.batch_size")
    if sum(tf.io.gfile.stat(f).length for f in host_files) == 0:
        raise ValueError(f"the training files of process {process_index} are all empty: {host_files}")
    repeats = 1
    if balance == "repeat":
        repeats = _repeats(*_class_counts(root))
    elif balance == "weights":
        n_real, n_fake = _count_labels(tuple(host_files))
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
        steps_per_epoch=train_steps_per_epoch(config),
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
    process_index, process_count = _processes(process_index, process_count)
    plan = _train_plan(config, process_index, process_count)
    ds = _train_dataset(config, plan, int(start_step))
    return _guarded(ds.as_numpy_iterator(), plan.files)


# ---------------------------------------------------------------------- evaluation


_EVAL_KEYS = ("image", "label", "method", "video_id", "frame_index")


def _strings(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode("utf-8") for v in values], dtype=str)


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a host batch to `size` rows: zero images, label 0, frame -1, empty ids, mask 0."""
    n = len(batch["label"])
    out = {}
    for key, value in batch.items():
        fill = {"frame_index": -1, "video_id": "", "method": ""}.get(key, 0)
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
        "method": np.full((size,), "", dtype=str),
    }


def _eval_batches(ds_iter, files, host_batch: int, image_size: int, num_batches: int | None):
    produced = 0
    for raw in _guarded(ds_iter, files):
        n = len(raw["label"])
        batch = {
            "image": raw["image"],
            "label": raw["label"],
            "mask": np.ones((n,), np.float32),
            "video_id": _strings(raw["video_id"]),
            "frame_index": raw["frame_index"],
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
    str arrays, "" for padding), "frame_index" int32 (-1 for padding). The last partial
    batch is padded to b. With several processes, files are split as for training (or
    records, if there are fewer files than processes) and every host yields the same number
    of batches, padding with fully masked ones. `root` overrides config.data.root, e.g.
    to evaluate on another dataset's records.
    """
    process_index, process_count = _processes(process_index, process_count)
    root = _root(config, root)
    global_batch = int(batch_size if batch_size is not None else config.train.eval_batch_size)
    host_batch = _per_host_batch(global_batch, process_count, "eval batch_size")
    image_size = int(config.model.image_size)
    files = records.split_files(root, split)

    num_batches = None
    if process_count == 1:
        host_files, ds = files, tf.data.TFRecordDataset(files)
    elif len(files) >= process_count:
        host_files = files[process_index::process_count]
        counts = _count_records(tuple(files))
        per_host = [sum(counts[h::process_count]) for h in range(process_count)]
        num_batches = max(math.ceil(c / host_batch) for c in per_host)
        ds = tf.data.TFRecordDataset(host_files)
    else:
        # Too few files to give each host its own: split by record instead.
        host_files = files
        total = sum(_count_records(tuple(files)))
        num_batches = math.ceil(math.ceil(total / process_count) / host_batch)
        ds = tf.data.TFRecordDataset(files).shard(process_count, process_index)

    spec = {k: records.feature_spec()[k] for k in _EVAL_KEYS}

    def prepare(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        return {
            "image": preprocess_eval(ex["image"], image_size),
            "label": tf.cast(ex["label"], tf.int32),
            "method": ex["method"],
            "video_id": ex["video_id"],
            "frame_index": tf.cast(ex["frame_index"], tf.int32),
        }

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(host_batch)
    ds = ds.map(lambda b: {**b, "image": normalize(b["image"])})
    ds = ds.prefetch(_PREFETCH_BATCHES).with_options(_options())
    return _eval_batches(ds.as_numpy_iterator(), host_files, host_batch, image_size, num_batches)


# ---------------------------------------------------------------------- benchmark


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
