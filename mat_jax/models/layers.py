"""Building blocks shared by the backbones and the MAT head (NHWC)."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mat_jax.models.grouped import Conv

# Initialisers draw on the host with numpy when the key is concrete. Eagerly, jax
# compiles one small program per parameter shape, and a jitted init of a whole MAT is
# one huge program: either way building a model took 20-30 s on a 2-core CPU, against
# about a second here. The numpy stream is seeded from the key's bits, so a seed still
# fixes the model; under a trace (e.g. inside jax.jit) the jax initialiser runs instead.


def _host_rng(key) -> np.random.Generator | None:
    if isinstance(key, jax.core.Tracer):
        return None
    return np.random.default_rng([int(v) for v in np.asarray(jax.random.key_data(key)).ravel()])


def _fans(shape: Sequence[int]) -> tuple[int, int]:
    # Kernels are (..., in, out): HWIO for convs, (in, out) for dense layers.
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def variance_scaling(scale: float, mode: str, distribution: str):
    """`nnx.initializers.variance_scaling` with host-side sampling for concrete keys."""
    on_device = nnx.initializers.variance_scaling(scale, mode, distribution)

    def init(key, shape, dtype=jnp.float32):
        rng = _host_rng(key)
        if rng is None:
            return on_device(key, shape, dtype)
        fan_in, fan_out = _fans(shape)
        var = scale / max(1.0, fan_in if mode == "fan_in" else fan_out)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * var)
            x = rng.uniform(-limit, limit, size=shape)
        elif distribution == "normal":
            x = rng.normal(0.0, math.sqrt(var), size=shape)
        elif distribution == "truncated_normal":
            # Normal truncated to +-2 std, rescaled so the result has variance `var`.
            x = rng.standard_normal(size=shape)
            bad = np.abs(x) > 2.0
            while bad.any():
                x[bad] = rng.standard_normal(size=int(bad.sum()))
                bad = np.abs(x) > 2.0
            x *= math.sqrt(var) / 0.87962566103423978
        else:
            raise ValueError(f"unknown distribution {distribution!r}")
        return jnp.asarray(x, dtype)

    return init


def torch_default_kernel_init():
    """PyTorch's default conv/linear init, kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))."""
    return variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        rng = _host_rng(key)
        if rng is None:
            return jax.random.uniform(key, shape, dtype, -bound, bound)
        return jnp.asarray(rng.uniform(-bound, bound, size=shape), dtype)

    return init


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    rngs: nnx.Rngs,
    stride: int = 1,
    padding: str | Sequence[tuple[int, int]] = "SAME",
    groups: int = 1,
    use_bias: bool = True,
    kernel_init=None,
    dtype=None,
) -> Conv:
    """A 2-D convolution; without `kernel_init` it is initialised as PyTorch does.

    A `grouped.Conv`: nnx.Conv's variables, but fast on CPU too.
    """
    fan_in = (in_features // groups) * kernel_size * kernel_size
    return Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=padding,
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=kernel_init or torch_default_kernel_init(),
        bias_init=torch_default_bias_init(fan_in),
        dtype=dtype,
        rngs=rngs,
    )


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=None) -> nnx.Linear:
    """A dense layer initialised as PyTorch's nn.Linear."""
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=torch_default_kernel_init(),
        bias_init=torch_default_bias_init(in_features),
        dtype=dtype,
        rngs=rngs,
    )


class BatchNorm(nnx.Module):
    """Batch normalisation with PyTorch's bookkeeping.

    Normalises with the biased batch variance but keeps the *unbiased* one in the
    running average, as `torch.nn.BatchNorm2d` does, so imported checkpoints keep
    training exactly as they would in PyTorch (flax's BatchNorm stores the biased
    variance). `momentum` is the decay of the running average (PyTorch 0.01 -> 0.99).
    Statistics are taken over every axis but the last; under a sharded `jax.jit` that
    is the global batch, which is what the reference's SyncBatchNorm computes.
    """

    def __init__(self, num_features: int, *, momentum: float, epsilon: float):
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.momentum = momentum
        self.epsilon = epsilon

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)
            n = math.prod(x.shape[:-1])
            unbiased = var * (n / max(n - 1, 1))
            m = self.momentum
            # set_value, not `[...] =`: flax's indexed assignment asks a tracer for its
            # sharding, and JAX answers with an error message that walks the whole trace
            # so far, which made tracing a train step quadratic in the model's size.
            self.mean.set_value(m * self.mean[...] + (1.0 - m) * jax.lax.stop_gradient(mean))
            self.var.set_value(m * self.var[...] + (1.0 - m) * jax.lax.stop_gradient(unbiased))
        else:
            mean, var = self.mean[...], self.var[...]
        inv = self.scale[...] * jax.lax.rsqrt(var + self.epsilon)
        y = (xf - mean) * inv + self.bias[...]
        return y.astype(x.dtype)


def dropout(x: jax.Array, rate: float, key: jax.Array | None, *, broadcast_dims=()) -> jax.Array:
    """Inverted dropout; `broadcast_dims` share one draw (e.g. per sample)."""
    if rate <= 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    if key is None:
        raise ValueError("dropout in training needs a PRNG key: call the model with key=...")
    shape = tuple(1 if i in broadcast_dims else d for i, d in enumerate(x.shape))
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def check_images(x: jax.Array, where: str) -> None:
    """Fail early, with the fix, on inputs that are not (B, H, W, 3) images."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(
            f"{where} expects a batch of images shaped (batch, height, width, 3), got "
            f"shape {shape}; add a batch axis with x[None] for a single image."
        )
    if shape[-1] != 3:
        hint = " (this looks like NCHW: transpose with x.transpose(0, 2, 3, 1))" if shape[1] == 3 else ""
        raise ValueError(
            f"{where} expects 3 RGB channels in the last axis (NHWC), got shape {tuple(shape)}{hint}."
        )
