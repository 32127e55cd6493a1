"""Convolutions (grouped, depthwise and 1x1 included) that are fast on XLA:CPU too.

XLA:CPU has no kernel for `feature_group_count > 1`: its generic grouped path ran
the texture block's 4-group convs 25-40x slower than PyTorch on a 2-core CPU, and it
expands the kernel gradient of a depthwise conv into a dense channels x channels
convolution. Together they made a B4 MAT train step 8x slower than PyTorch's. So on
CPU lowerings:
  * a depthwise conv (one group per channel) is k*k shifted multiply-adds with its own
    gradient: forward and input gradient are fused elementwise loops, the kernel
    gradient one variadic reduction that reads the activations once;
  * any other grouped conv is one dense conv per group, concatenated (as fast as
    PyTorch's grouped kernels, forward and backward);
  * a 1x1 conv with stride 1 is one (N*H*W, C_in) x (C_in, C_out) matmul. As a conv,
    its kernel gradient is a conv over the whole image that XLA:CPU feeds by transposing
    the activations and the output gradient to batch-minor layouts, slow copies that
    were 10 % of a B4 train step; the matmul's gradient reads both where they lie.
GPU and TPU keep their native convolutions (`lax.platform_dependent`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Pads = tuple[tuple[int, int], tuple[int, int]]


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" (before, after) pads of one spatial axis of length `size`."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return (total // 2, total - total // 2)


def resolve_padding(padding, in_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int]) -> Pads:
    """Explicit ((top, bottom), (left, right)) pads for "SAME", "VALID" or explicit pads."""
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return ((0, 0), (0, 0))
        if padding.upper() != "SAME":
            raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
        return tuple(same_pads(size, k, s) for size, k, s in zip(in_hw, kernel_hw, strides))
    (t, b), (l, r) = padding
    return ((int(t), int(b)), (int(l), int(r)))


def _out_size(size: int, pads: tuple[int, int], k: int, s: int) -> int:
    return (size + pads[0] + pads[1] - k) // s + 1


def _taps(xp: jax.Array, kernel_hw, strides, out_hw):
    """(di, dj, slice) for each kernel tap: the input samples that tap multiplies."""
    b, _, _, c = xp.shape
    (sh, sw), (ho, wo) = strides, out_hw
    for di in range(kernel_hw[0]):
        for dj in range(kernel_hw[1]):
            limit = (b, di + (ho - 1) * sh + 1, dj + (wo - 1) * sw + 1, c)
            yield di, dj, jax.lax.slice(xp, (0, di, dj, 0), limit, (1, sh, sw, 1))


def _forward(x, kernel, strides, pads):
    kh, kw = kernel.shape[:2]
    out_hw = (_out_size(x.shape[1], pads[0], kh, strides[0]), _out_size(x.shape[2], pads[1], kw, strides[1]))
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    acc = None
    for di, dj, tap in _taps(xp, (kh, kw), strides, out_hw):
        term = tap * kernel[di, dj, 0]
        acc = term if acc is None else acc + term
    return acc


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _shifted(x, kernel, strides, pads):
    return _forward(x, kernel, strides, pads)


def _shifted_fwd(x, kernel, strides, pads):
    return _forward(x, kernel, strides, pads), (x, kernel)


def _shifted_bwd(strides, pads, residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    (sh, sw), ((pt, _), (pl, _)) = strides, pads
    _, h, w, c = x.shape
    ho, wo = g.shape[1:3]

    # Input gradient: spread g back onto the stride-1 grid (interior zeros), padded so
    # that a stride-1 "VALID" correlation with the flipped kernel lines up with x.
    spread = jax.lax.pad(
        g,
        jnp.zeros((), g.dtype),
        (
            (0, 0, 0),
            (kh - 1 - pt, h + pt - (ho - 1) * sh - 1, sh - 1),
            (kw - 1 - pl, w + pl - (wo - 1) * sw - 1, sw - 1),
            (0, 0, 0),
        ),
    )
    dx = _forward(spread, kernel[::-1, ::-1], (1, 1), ((0, 0), (0, 0)))

    # Kernel gradient: all k*k products reduced in one pass over (batch, rows); a
    # separate reduction per tap re-reads the activations k*k times and is ~10x slower.
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    products = [tap * g for _, _, tap in _taps(xp, (kh, kw), strides, (ho, wo))]
    zeros = [jnp.zeros((), g.dtype)] * len(products)
    rows = jax.lax.reduce(products, zeros, lambda a, b: [u + v for u, v in zip(a, b)], (0, 1))
    dkernel = jnp.stack(rows).sum(axis=1).reshape(kh, kw, 1, c)
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_shifted.defvjp(_shifted_fwd, _shifted_bwd)


def _native(x, kernel, strides, pads, groups=1):
    return jax.lax.conv_general_dilated(
        x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups
    )


def _pointwise(kernel, strides, pads) -> bool:
    return kernel.shape[:2] == (1, 1) and strides == (1, 1) and pads == ((0, 0), (0, 0))


def _matmul(x, kernel):
    """A 1x1 stride-1 conv as one (N*H*W, C_in) x (C_in, C_out) matmul."""
    cin, cout = kernel.shape[2:]
    y = x.reshape(-1, cin) @ kernel.reshape(cin, cout)
    return y.reshape(*x.shape[:-1], cout)


def grouped_conv(x: jax.Array, kernel: jax.Array, groups: int, strides=(1, 1), padding="SAME") -> jax.Array:
    """NHWC convolution in `groups` groups with an HWIO kernel (kh, kw, C_in / groups, C_out).

    Same result as `lax.conv_general_dilated(..., feature_group_count=groups)`; CPU
    lowerings take the paths of the module docstring, other platforms the native op.
    """
    cin, cout = x.shape[-1], kernel.shape[-1]
    if kernel.ndim != 4 or cin % groups or cout % groups or kernel.shape[2] * groups != cin:
        raise ValueError(
            f"a {groups}-group conv of {cin} channels needs a (kh, kw, {cin // max(groups, 1)}, C_out) kernel "
            f"with C_out divisible by {groups}; got {kernel.shape}"
        )
    strides = tuple(int(s) for s in strides)
    pads = resolve_padding(padding, x.shape[1:3], kernel.shape[:2], strides)

    pointwise = _pointwise(kernel, strides, pads)
    if groups == 1 and not pointwise:
        return _native(x, kernel, strides, pads)
    if groups == 1:
        cpu = _matmul
    elif groups == cin == cout:

        def cpu(x, kernel):
            return _shifted(x, kernel, strides, pads)

    else:

        def cpu(x, kernel):
            parts = zip(jnp.split(x, groups, axis=-1), jnp.split(kernel, groups, axis=-1))
            dense = _matmul if pointwise else functools.partial(_native, strides=strides, pads=pads)
            return jnp.concatenate([dense(a, k) for a, k in parts], axis=-1)

    def native(x, kernel):
        return _native(x, kernel, strides, pads, groups)

    return jax.lax.platform_dependent(x, kernel, cpu=cpu, default=native)


def next_key(rngs: nnx.Rngs) -> jax.Array:
    """`rngs.params()`, the same key, without the cost flax's own call has under a trace.

    flax counts with `count[...] += 1`, which asks the new value for its sharding; on a
    tracer JAX answers with an error whose message walks the whole trace so far, so
    `nnx.eval_shape` of a model's init was quadratic: 6.7 s for EfficientNet-B7, most of
    it there. `set_value` stores the count without asking.
    """
    stream = rngs.params
    count = stream.count.get_value()
    stream.count.set_value(count + 1)
    return jax.random.fold_in(stream.key.get_value(), count)


class Conv(nnx.Module):
    """Drop-in for an `nnx.Conv`, using `grouped_conv`.

    It takes nnx.Conv's arguments (those this project uses) and keeps its variable
    names, shapes and draw order (`kernel` (kh, kw, C_in / groups, C_out), then the
    optional `bias`), so checkpoints, the PyTorch importer and seeded initialisations
    see no difference.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: tuple[int, int],
        *,
        feature_group_count: int,
        strides: tuple[int, int] = (1, 1),
        padding="SAME",
        use_bias: bool = True,
        kernel_init,
        bias_init,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        shape = (*kernel_size, in_features // feature_group_count, out_features)
        self.kernel = nnx.Param(kernel_init(next_key(rngs), shape, jnp.float32))
        self.bias = (
            nnx.Param(bias_init(next_key(rngs), (out_features,), jnp.float32)) if use_bias else nnx.data(None)
        )
        self.groups = feature_group_count
        self.strides = tuple(strides)
        self.padding = padding
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self.kernel[...], self.bias[...] if self.bias is not None else None
        # nnx.Conv's promotion: the configured dtype, else the inputs' common type.
        dtype = self.dtype or jnp.result_type(x, kernel)
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        bias = bias.astype(dtype) if bias is not None else None
        y = grouped_conv(x, kernel, self.groups, self.strides, self.padding)
        return y + bias if bias is not None else y
