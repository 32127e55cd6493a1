"""Resizing and pooling ops that copy PyTorch's index arithmetic exactly.

`jax.image.resize` uses half-pixel centres and antialiases when it shrinks, so it
cannot reproduce `F.interpolate(..., align_corners=True)`, legacy `nearest` or the
overlapping windows of `F.adaptive_avg_pool2d`. Each op here is a small constant
matrix (or index table) built in numpy for the static sizes and applied with an
einsum, which is exact, differentiable and cheap at the sizes MAT uses.

All arrays are NHWC.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mat_jax.resample import adaptive_pool_matrix, bilinear_matrix, nearest_index

_HIGHEST = jax.lax.Precision.HIGHEST
__all__ = ["adaptive_pool_matrix", "bilinear_matrix", "nearest_index"]  # re-exported: ops.nearest_index etc.


def _apply_separable(x: jax.Array, mat_h: np.ndarray, mat_w: np.ndarray) -> jax.Array:
    mh = jnp.asarray(mat_h, dtype=x.dtype)
    mw = jnp.asarray(mat_w, dtype=x.dtype)
    y = jnp.einsum("oh,bhwc->bowc", mh, x, precision=_HIGHEST)
    return jnp.einsum("pw,bowc->bopc", mw, y, precision=_HIGHEST)


def resize_bilinear_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """`F.interpolate(x, size, mode='bilinear', align_corners=True)` for NHWC."""
    _, h, w, _ = x.shape
    if (h, w) == tuple(size):
        return x
    return _apply_separable(x, bilinear_matrix(h, size[0]), bilinear_matrix(w, size[1]))


def resize_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """`F.interpolate(x, size, mode='nearest')` (legacy, not 'nearest-exact') for NHWC."""
    _, h, w, _ = x.shape
    x = jnp.take(x, jnp.asarray(nearest_index(h, size[0])), axis=1)
    return jnp.take(x, jnp.asarray(nearest_index(w, size[1])), axis=2)


def adaptive_avg_pool(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """`F.adaptive_avg_pool2d(x, size)` for NHWC."""
    _, h, w, _ = x.shape
    return _apply_separable(x, adaptive_pool_matrix(h, size[0]), adaptive_pool_matrix(w, size[1]))


def safe_norm(x: jax.Array, axis=-1, keepdims: bool = False) -> jax.Array:
    """Euclidean norm whose gradient at 0 is 0, as torch.norm's is (not NaN)."""
    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """`F.normalize(x, p=2, dim=axis)`: x / max(||x||, eps)."""
    return x / jnp.maximum(safe_norm(x, axis=axis, keepdims=True), eps)


def hardswish(x: jax.Array) -> jax.Array:
    """PyTorch's Hardswish: x * relu6(x + 3) / 6."""
    return x * jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


# Bilinear attention pooling (the reference's `AttentionPooling`): maps are resized to
# the feature size with align_corners=True before the weighted sum.


def texture_pooling(features: jax.Array, attention_maps: jax.Array) -> jax.Array:
    """Textural BAP: head m pools its own stack `features[..., m, :]`; rows L2-normalised.

    features (B, H, W, M, N), attention_maps (B, h, w, M) -> (B, M, N).
    """
    a = resize_bilinear_align_corners(attention_maps, features.shape[1:3])
    p = jnp.einsum("bhwm,bhwmn->bmn", a, features, precision=_HIGHEST)
    return l2_normalize(p, axis=-1)


def feature_pooling(features: jax.Array, attention_maps: jax.Array) -> jax.Array:
    """BAP of shared features (B, H, W, N) by (B, h, w, M) maps, rows L2-normalised -> (B, M, N)."""
    a = resize_bilinear_align_corners(attention_maps, features.shape[1:3])
    p = jnp.einsum("bhwm,bhwn->bmn", a, features, precision=_HIGHEST)
    return l2_normalize(p, axis=-1)


def global_pooling(features: jax.Array, attention_sum: jax.Array) -> jax.Array:
    """Attention-weighted mean (the reference's norm=1 pooling); the 1e-8 enters both sums.

    features (B, H, W, C), attention_sum (B, h, w, 1) -> (B, C).
    """
    a = resize_bilinear_align_corners(attention_sum, features.shape[1:3])[..., 0] + 1e-8
    num = jnp.einsum("bhw,bhwc->bc", a, features, precision=_HIGHEST)
    return num / jnp.sum(a, axis=(1, 2))[:, None]
