"""Encoded face crop to model input, without randomness: JPEG/PNG decoding (of a window
only, for JPEGs), bilinear resize, the deterministic centre crop, and normalisation.

`preprocess_eval` and `normalize` are the per-record ops of evaluation
(`mat_jax.data.eval_data`); `eval_images` applies them to crops that are not in records
(`mat_jax.predict`). The training augmentation (`mat_jax.data.augment`) builds on the
decoding and resizing ops here. All of them run eagerly as well as inside tf.data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mat_jax.data.tf_env import dataset_options, tf

_JPEG_MAGIC = b"\xff\xd8\xff"
# A record whose shorter side is within this factor above the target size is centre
# cropped without resampling, as the official loader's CenterCrop(380) of the 384 px
# aligned faces; anything else is centre cropped to a square and resized.
_CROP_SLACK = 9 / 8


def decode_window(image_bytes: tf.Tensor, window_fn) -> tf.Tensor:
    """Decodes the window `window_fn(h, w) -> (y, x, hh, ww)` of an encoded image as uint8 RGB.

    JPEGs decode only the window (`decode_and_crop_jpeg` skips the work outside it); PNGs
    and other formats decode whole and are sliced.
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        window = tf.stack(window_fn(shape[0], shape[1]))
        return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def other():
        return slice_window(tf.io.decode_image(image_bytes, channels=3, expand_animations=False), window_fn)

    is_jpeg = tf.strings.substr(image_bytes, 0, len(_JPEG_MAGIC)) == _JPEG_MAGIC
    return tf.cond(is_jpeg, jpeg, other)


def slice_window(image: tf.Tensor, window_fn) -> tf.Tensor:
    """The window `window_fn(h, w) -> (y, x, hh, ww)` of a decoded image."""
    shape = tf.shape(image)
    y, x, h, w = window_fn(shape[0], shape[1])
    return image[y : y + h, x : x + w, :]


def decode_all(image_bytes: tf.Tensor) -> tf.Tensor:
    return decode_window(image_bytes, lambda h, w: (0, 0, h, w))


def resize_u8(image: tf.Tensor, size: int) -> tf.Tensor:
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


def centre_window(size: int):
    """The deterministic crop's window: centre S x S if the image is at most _CROP_SLACK * S,
    else the centre square (resized to S afterwards)."""

    def window(h, w):
        side = tf.minimum(h, w)
        crop_only = (side >= size) & (tf.cast(side, tf.float32) <= _CROP_SLACK * size)
        c = tf.where(crop_only, size, side)
        return (h - c) // 2, (w - c) // 2, c, c

    return window


def to_size(image: tf.Tensor, size: int) -> tf.Tensor:
    already = tf.reduce_all(tf.shape(image)[:2] == size)
    image = tf.cond(already, lambda: image, lambda: resize_u8(image, size))
    return tf.ensure_shape(image, [size, size, 3])


def centre(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """The deterministic crop: centre S x S if the image is at most _CROP_SLACK * S, else the centre
    square resized to S."""
    return to_size(decode_window(image_bytes, centre_window(size)), size)


def preprocess_eval(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded image -> uint8 (S, S, 3): decode and centre crop/resize, no randomness."""
    return centre(image_bytes, int(image_size))


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
    ds = ds.map(lambda b: (b, normalize(b))).with_options(dataset_options())
    pixels, images = next(iter(ds.as_numpy_iterator()))
    return pixels, images


def normalize(images: tf.Tensor) -> tf.Tensor:
    """uint8 pixels -> float32 (x / 255 - 0.5) / 0.5 in [-1, 1] (the official mean/std 0.5).

    Computed as -1 + x * 2/255 by one `Dequantize` kernel (equal to the formula within one
    float32 ulp): the plain cast-divide-subtract takes four passes over a batch and, with
    one thread per op, cost a third of the pipeline's throughput at 380 px.
    """
    return tf.quantization.dequantize(tf.bitcast(images, tf.quint8), -1.0, 1.0, mode="MIN_COMBINED")
