"""Attention-guided data augmentation (AGDA), mode ``soft``, as pure JAX functions.

AGDA is MAT's augmentation: for every sample one attention head is drawn at random
(heads with more attention mass are more likely), its map is upsampled to the image
size and normalised to [0, 1], passed through a soft threshold, and used as a blending
mask between the image and a degraded copy of it (downscaled, Gaussian-blurred,
noised, upscaled back). The second forward pass of a training step runs on the
result, and a match loss ties the attention features of both passes together on the
heads that were *not* degraded.

Behaviour follows ``AGDA.agda`` -> ``soft_drop2`` / ``mod_func`` of the official code
(yoctta/multiple-attention), including these quirks:

* one threshold ``t ~ U(threshold)`` and one zoom ``z ~ U(zoom)`` are drawn per call,
  i.e. shared by the whole batch (the official code uses Python's ``random`` once);
  a float instead of a ``(lo, hi)`` pair means a fixed value;
* the head draw uses the *unnormalised* weights ``sqrt(sum_hw A + 1)``;
* the per-sample map is divided by its maximum + 1e-8 *after* the bilinear upsample;
* the downscale size is PyTorch's ``F.interpolate(scale_factor=s)`` size,
  ``floor(H * s)``, and with ``align_corners=True`` the sampling grid depends on the
  sizes only;
* the match loss is averaged over all ``B * M`` entries although the drawn head of
  each sample is masked out.

Everything is NHWC; randomness comes from explicit PRNG keys; the augmentation itself
is wrapped in ``stop_gradient`` (the official code runs it under ``torch.no_grad``).
Functions are jittable; sizes, kernel size, sigma and ``(lo, hi)`` ranges are static.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from mat_jax.ops import resize_bilinear_align_corners, safe_norm

__all__ = [
    "gaussian_kernel",
    "gaussian_blur",
    "soft_remap",
    "select_maps",
    "head_weights",
    "scaled_size",
    "blend",
    "agda",
    "match_loss",
]


@functools.lru_cache(maxsize=None)
def _gaussian_kernel_cached(size: int, sigma: float) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64) - size // 2
    if size % 2 == 0:
        offsets = offsets + 0.5
    weights = np.exp(-(offsets**2) / (2.0 * float(sigma) ** 2))
    kernel = weights / weights.sum()
    kernel.setflags(write=False)
    return kernel


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """1-D normalised Gaussian over offsets ``-(size//2) ... size//2`` (kornia's kernel)."""
    return _gaussian_kernel_cached(int(size), float(sigma)).copy()


def _blur_axis(x: jax.Array, kernel: np.ndarray, axis: int) -> jax.Array:
    """Depthwise 1-D correlation along `axis` with reflect padding (size preserved)."""
    size = kernel.shape[0]
    left = (size - 1) // 2
    right = size - 1 - left
    n = x.shape[axis]
    if n <= max(left, right):
        raise ValueError(f"reflect padding of {max(left, right)} needs a dimension > it, got {n}")
    pad = [(0, 0)] * x.ndim
    pad[axis] = (left, right)
    xp = jnp.pad(x, pad, mode="reflect")
    out = None
    for k in range(size):
        term = jax.lax.slice_in_dim(xp, k, k + n, axis=axis) * jnp.asarray(kernel[k], x.dtype)
        out = term if out is None else out + term
    return out


def gaussian_blur(x: jax.Array, size: int = 11, sigma: float = 7.0) -> jax.Array:
    """kornia ``GaussianBlur2d((size, size), (sigma, sigma))``, border 'reflect', on NHWC.

    Separable and depthwise: a 1-D pass over H, then over W. 'reflect' is torch's
    (and numpy's) reflection without repeating the edge sample.
    """
    kernel = _gaussian_kernel_cached(int(size), float(sigma))
    y = _blur_axis(x, kernel, axis=1)
    return _blur_axis(y, kernel, axis=2)


def soft_remap(a: jax.Array, threshold, zoom) -> jax.Array:
    """Soft threshold of ``mod_func``: maps 0 to 0, rises steeply around `threshold`.

    ``(sigmoid((a - t) z) - sigmoid(-t z)) / (1 - sigmoid(-t z))``.
    """
    t = jnp.asarray(threshold, dtype=jnp.result_type(a, jnp.float32))
    z = jnp.asarray(zoom, dtype=t.dtype)
    bottom = jax.nn.sigmoid(-t * z)
    return (jax.nn.sigmoid((a - t) * z) - bottom) / (1.0 - bottom)


def select_maps(attention_maps: jax.Array, index: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Map ``index[b]`` of each sample, upsampled to `size` and divided by its max + 1e-8.

    attention_maps: (B, h, w, M); index: (B,) int. Returns (B, H, W, 1).
    The bilinear resize acts on each map independently, so the map is selected first
    and only it is resized (same values as resizing all M maps and gathering).
    """
    index = jnp.asarray(index).astype(jnp.int32)
    picked = jnp.take_along_axis(attention_maps, index[:, None, None, None], axis=-1)
    picked = resize_bilinear_align_corners(picked, tuple(size))
    peak = jnp.max(picked, axis=(1, 2, 3), keepdims=True) + 1e-8
    return picked / peak


def head_weights(attention_maps: jax.Array) -> jax.Array:
    """Unnormalised categorical weights ``sqrt(sum_hw A + 1)`` of the heads, (B, M)."""
    return jnp.sqrt(jnp.sum(attention_maps, axis=(1, 2)) + 1.0)


def scaled_size(size: int, scale_factor: float) -> int:
    """Output length of ``F.interpolate(scale_factor=s)``: ``floor(size * s)`` in double."""
    out = int(math.floor(float(size) * float(scale_factor)))
    if out < 1:
        raise ValueError(f"scale_factor {scale_factor} shrinks {size} to {out}")
    return out


def blend(
    x: jax.Array,
    attention_maps: jax.Array,
    index: jax.Array,
    threshold,
    zoom,
    noise,
    *,
    scale_factor: float = 0.5,
    kernel_size: int = 11,
    sigma: float = 7.0,
) -> jax.Array:
    """Deterministic core of AGDA ``soft`` mode (``soft_drop2`` after the head draw).

    x: (B, H, W, C) images; attention_maps: (B, h, w, M); index: (B,) drawn heads;
    threshold, zoom: scalars; noise: array shaped like the downscaled image
    (B, floor(H*s), floor(W*s), C), already multiplied by the noise rate, or 0.
    Returns ``x * (1 - a') + degraded * a'`` with no gradient.
    """
    x = jax.lax.stop_gradient(x)
    attention_maps = jax.lax.stop_gradient(attention_maps)
    noise = jax.lax.stop_gradient(jnp.asarray(noise, dtype=x.dtype))
    _, h, w, _ = x.shape

    a = select_maps(attention_maps.astype(x.dtype), index, (h, w))
    a = soft_remap(a, threshold, zoom).astype(x.dtype)

    small = (scaled_size(h, scale_factor), scaled_size(w, scale_factor))
    degraded = resize_bilinear_align_corners(x, small)
    degraded = gaussian_blur(degraded, kernel_size, sigma)
    degraded = degraded + noise
    degraded = resize_bilinear_align_corners(degraded, (h, w))
    return jax.lax.stop_gradient(x * (1.0 - a) + degraded * a)


def _draw_scalar(key: jax.Array, spec, dtype) -> jax.Array:
    """U(lo, hi) for a (lo, hi) pair, else the fixed value."""
    if isinstance(spec, (tuple, list)):
        lo, hi = spec
        return jax.random.uniform(key, (), dtype=dtype, minval=lo, maxval=hi)
    return jnp.asarray(spec, dtype=dtype)


def agda(
    key: jax.Array,
    x: jax.Array,
    attention_maps: jax.Array,
    *,
    threshold=(0.4, 0.6),
    zoom=(3.0, 5.0),
    scale_factor: float = 0.5,
    kernel_size: int = 11,
    sigma: float = 7.0,
    noise_rate: float = 0.1,
) -> tuple[jax.Array, jax.Array]:
    """AGDA ``soft`` mode on a batch: returns (x_aug, index).

    key: PRNG key; x: (B, H, W, C); attention_maps: (B, h, w, M) (the un-dropped A of
    the clean pass). One head per sample is drawn with probability proportional to
    ``head_weights``; one t and one z are drawn for the whole batch; the noise is
    N(0, 1) * noise_rate at the downscaled size. index is (B,) int32.
    """
    key_index, key_t, key_z, key_noise = jax.random.split(key, 4)
    x = jax.lax.stop_gradient(x)
    attention_maps = jax.lax.stop_gradient(attention_maps)
    b, h, w, c = x.shape
    ftype = jnp.result_type(x.dtype, jnp.float32)

    logits = jnp.log(head_weights(attention_maps.astype(ftype)))
    index = jax.random.categorical(key_index, logits, axis=-1).astype(jnp.int32)
    t = _draw_scalar(key_t, threshold, ftype)
    z = _draw_scalar(key_z, zoom, ftype)

    small = (scaled_size(h, scale_factor), scaled_size(w, scale_factor))
    noise = jax.random.normal(key_noise, (b, *small, c), dtype=ftype) * jnp.asarray(noise_rate, ftype)

    out = blend(
        x, attention_maps, index, t, z, noise.astype(x.dtype),
        scale_factor=scale_factor, kernel_size=kernel_size, sigma=sigma,
    )
    return out, index


def match_loss(v_aug: jax.Array, v: jax.Array, index: jax.Array) -> jax.Array:
    """AGDA match loss: ``mean_{b,m} ||v_aug[b,m] - v[b,m]||_2 * (1 - onehot(index))[b,m]``.

    v_aug, v: (B, M, C) attention features of the augmented and clean pass; index: (B,).
    The drawn head is masked out but the mean divides by B * M (official code).
    Gradients flow into both inputs; at a zero difference the gradient is 0.
    """
    m = v.shape[1]
    dist = safe_norm(v_aug - v, axis=-1)
    keep = 1.0 - jax.nn.one_hot(index, m, dtype=dist.dtype)
    return jnp.mean(dist * keep)
