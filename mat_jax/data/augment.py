"""The training augmentation: encoded face crop and stateless seed to an augmented uint8 image.

`Augment` holds the options, read once from `config.data`; `augment_image` runs alignment
jitter, crop, flip, colour jitter, blur and JPEG re-compression in that order, every random
draw a stateless op of the seed, so an image is a pure function of (bytes, seed, options)
whether it runs eagerly or in a parallel tf.data map. `preprocess_train` is the same for a
config.
"""

from __future__ import annotations

import dataclasses
import math

from mat_jax.data import decode
from mat_jax.data.tf_env import tf

# Random resized crop range: milder than ImageNet's (0.08, 1) because a face crop that
# loses most of the face loses the evidence.
_RRC_AREA = (0.5, 1.0)
_RRC_ASPECT = (3 / 4, 4 / 3)
_BLUR_SIGMA = (0.1, 2.0)
_BLUR_RADIUS = 6  # 13 taps cover 3 sigma at the largest sigma


@dataclasses.dataclass(frozen=True)
class Augment:
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
    def from_config(cls, config) -> Augment:
        d = config.data
        lo, hi = (int(q) for q in d.jpeg_quality)
        if (lo, hi) != (0, 0) and not 1 <= lo <= hi <= 100:
            raise ValueError(
                f"config.data.jpeg_quality must be (0, 0) (off) or 1 <= lo <= hi <= 100, got {(lo, hi)}"
            )
        jitter = float(d.color_jitter)
        blur = float(d.blur_prob)
        if jitter < 0 or not 0 <= blur <= 1:
            raise ValueError(
                f"config.data.color_jitter must be >= 0 and blur_prob in [0, 1], got {jitter}, {blur}"
            )
        shift, scale, rotation = float(d.jitter_shift), float(d.jitter_scale), float(d.jitter_rotation)
        if not (0 <= shift <= 0.25 and 0 <= scale <= 0.5 and 0 <= rotation <= 45):
            raise ValueError(
                "config.data.jitter_shift must be in [0, 0.25] (fraction of the crop side), jitter_scale in "
                f"[0, 0.5] and jitter_rotation in [0, 45] (degrees), got {shift}, {scale}, {rotation}"
            )
        return cls(
            image_size=int(config.model.image_size),
            hflip=bool(d.hflip),
            random_resized_crop=bool(d.random_resized_crop),
            color_jitter=jitter,
            jpeg_quality=(lo, hi),
            blur_prob=blur,
            jitter_shift=shift,
            jitter_scale=scale,
            jitter_rotation=rotation,
        )


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


def _align_jitter(image: tf.Tensor, seed: tf.Tensor, aug: Augment) -> tf.Tensor:
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
    transform = tf.stack([cos, sin, cx - cos * ox - sin * oy, -sin, cos, cy + sin * ox - cos * oy, 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None],
        transforms=transform[None],
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )[0]
    return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)


def augment_image(image_bytes: tf.Tensor, seed: tf.Tensor, aug: Augment) -> tf.Tensor:
    size = aug.image_size
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    # The whole crop is decoded (no JPEG window decoding) so the shift can bring its edges in.
    jittered = _align_jitter(decode.decode_all(image_bytes), seeds[5], aug) if aug.jitter else None

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
            image = decode.resize_u8(decode.slice_window(jittered, window), size)
        else:
            image = decode.resize_u8(decode.decode_window(image_bytes, window), size)
    elif aug.jitter:
        image = decode.to_size(decode.slice_window(jittered, decode.centre_window(size)), size)
    else:
        image = decode.centre(image_bytes, size)

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
    return augment_image(image_bytes, seed, Augment.from_config(config))
