"""The constant tables behind `mat_jax.ops`: PyTorch's resize and pooling index arithmetic
as numpy matrices. Apart from ops so that JAX-free code (attention overlays under the ONNX
backend) can use them.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of 1-D linear interpolation with align_corners=True."""
    mat = np.zeros((out_size, in_size), np.float64)
    if in_size == 1 or out_size == 1:
        # align_corners with one output sample reads the first input sample.
        mat[:, 0] = 1.0
        return mat
    scale = (in_size - 1) / (out_size - 1)
    src = np.arange(out_size) * scale
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    rows = np.arange(out_size)
    np.add.at(mat, (rows, lo), 1.0 - frac)
    np.add.at(mat, (rows, hi), frac)
    return mat


@functools.cache
def nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """Source index of legacy `mode='nearest'`: floor(dst * in / out) in float32."""
    if in_size == out_size:
        return np.arange(out_size)
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


@functools.cache
def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) averaging weights of adaptive average pooling (overlapping windows)."""
    mat = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -(-((i + 1) * in_size) // out_size)
        mat[i, start:end] = 1.0 / (end - start)
    return mat
