"""Xception (Chollet 2017) in Flax NNX, returning the endpoint dict that MAT taps.

This is MAT's second backbone, the Cadene `pretrainedmodels` flavour of Xception
used by the official code: a VALID-padded two-conv stem, twelve residual blocks of
depthwise-separable convolutions (entry flow 1-3, middle flow 4-11, exit block 12),
then two separable convs and a linear head. Separable convs have no BatchNorm or
ReLU between their depthwise and pointwise halves, as in the reference. BatchNorm
uses PyTorch's defaults (eps 1e-5, momentum 0.1, i.e. decay 0.9).

Endpoints: `b0` (stem), `b1`..`b12` (block outputs), `final` (exit convs) and
`logits`; all NHWC. At 299 px: b0 147x147x64, b1 74x74x128, b2 37x37x256,
b3..b11 19x19x728, b12 10x10x1024, final 10x10x2048.

Xception has no dropout or drop-connect, so `key` is accepted only so that every
backbone shares one call signature, and is ignored.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from mat_jax.models import layers

# (in, out, reps, stride, start_with_relu, grow_first) of block1..block12.
BLOCKS = (
    (64, 128, 2, 2, False, True),
    (128, 256, 2, 2, True, True),
    (256, 728, 2, 2, True, True),
    *((728, 728, 3, 1, True, True),) * 8,
    (728, 1024, 2, 2, True, False),
)


def kernel_init():
    """The reference's from-scratch init: normal(0, sqrt(2 / (k * k * out_channels)))."""
    return layers.variance_scaling(2.0, "fan_out", "normal")


def max_pool(x: jax.Array, stride: int) -> jax.Array:
    """3x3 max pool with one pixel of -inf padding, as torch.nn.MaxPool2d(3, stride, 1)."""
    return jax.lax.reduce_window(
        x,
        jnp.array(-jnp.inf, x.dtype),
        jax.lax.max,
        (1, 3, 3, 1),
        (1, stride, stride, 1),
        ((0, 0), (1, 1), (1, 1), (0, 0)),
    )


@dataclasses.dataclass(frozen=True)
class XceptionConfig:
    num_classes: int = 2
    # Nominal input size (the reference trains Xception at 299 px); the network
    # itself accepts any size whose maps stay non-empty.
    resolution: int = 299
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5


class SeparableConv2d(nnx.Module):
    """Depthwise 3x3 (`conv1`) then pointwise 1x1 (`pointwise`), both bias-free."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=None):
        self.conv1 = layers.conv(
            in_features,
            in_features,
            3,
            padding=((1, 1), (1, 1)),
            groups=in_features,
            use_bias=False,
            kernel_init=kernel_init(),
            rngs=rngs,
            dtype=dtype,
        )
        self.pointwise = layers.conv(
            in_features,
            out_features,
            1,
            padding="VALID",
            use_bias=False,
            kernel_init=kernel_init(),
            rngs=rngs,
            dtype=dtype,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.pointwise(self.conv1(x))


class Block(nnx.Module):
    """Residual block: [ReLU, SepConv, BN] x reps (+ max pool) plus a 1x1 skip.

    The PyTorch module keeps these in one `nn.Sequential` (`blockN.rep.<idx>`, with
    ReLUs and the pool taking indices too); here the separable convs and their BNs
    are two parallel lists, in order, and the interop module maps the names.
    """

    def __init__(
        self,
        in_filters: int,
        out_filters: int,
        reps: int,
        stride: int,
        start_with_relu: bool,
        grow_first: bool,
        *,
        bn: dict,
        rngs: nnx.Rngs,
        dtype=None,
    ):
        self.stride = stride
        self.start_with_relu = start_with_relu
        if out_filters != in_filters or stride != 1:
            self.skip = layers.conv(
                in_filters,
                out_filters,
                1,
                stride=stride,
                padding="VALID",
                use_bias=False,
                kernel_init=kernel_init(),
                rngs=rngs,
                dtype=dtype,
            )
            self.skipbn = layers.BatchNorm(out_filters, **bn)
        else:
            self.skip = None
            self.skipbn = None

        # (in, out) of each separable conv in order; the widening one comes first or last.
        widths = [(in_filters, out_filters)] if grow_first else []
        filters = out_filters if grow_first else in_filters
        widths += [(filters, filters)] * (reps - 1)
        if not grow_first:
            widths.append((in_filters, out_filters))
        self.sep_convs = nnx.List(
            [SeparableConv2d(i, o, rngs=rngs, dtype=dtype) for i, o in widths]
        )
        self.bns = nnx.List([layers.BatchNorm(o, **bn) for _, o in widths])

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        inputs = x
        for idx, (sep, bn) in enumerate(zip(self.sep_convs, self.bns)):
            # The reference's first ReLU is out-of-place, so the skip sees the raw input.
            if idx > 0 or self.start_with_relu:
                x = jax.nn.relu(x)
            x = bn(sep(x), train=train)
        if self.stride != 1:
            x = max_pool(x, self.stride)
        if self.skip is not None:
            inputs = self.skipbn(self.skip(inputs), train=train)
        return x + inputs


class Xception(nnx.Module):
    def __init__(self, cfg: XceptionConfig, *, rngs: nnx.Rngs, dtype=None):
        self.cfg = cfg
        bn = dict(momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon)
        init = kernel_init()
        self.conv1 = layers.conv(
            3, 32, 3, stride=2, padding="VALID", use_bias=False, kernel_init=init, rngs=rngs, dtype=dtype
        )
        self.bn1 = layers.BatchNorm(32, **bn)
        self.conv2 = layers.conv(
            32, 64, 3, padding="VALID", use_bias=False, kernel_init=init, rngs=rngs, dtype=dtype
        )
        self.bn2 = layers.BatchNorm(64, **bn)
        # PyTorch names these block1..block12; block i+1 sits at index i.
        self.blocks = nnx.List(
            [
                Block(i, o, r, s, relu, grow, bn=bn, rngs=rngs, dtype=dtype)
                for i, o, r, s, relu, grow in BLOCKS
            ]
        )
        self.conv3 = SeparableConv2d(1024, 1536, rngs=rngs, dtype=dtype)
        self.bn3 = layers.BatchNorm(1536, **bn)
        self.conv4 = SeparableConv2d(1536, 2048, rngs=rngs, dtype=dtype)
        self.bn4 = layers.BatchNorm(2048, **bn)
        self.last_linear = layers.linear(2048, cfg.num_classes, rngs=rngs, dtype=dtype)

    @property
    def endpoint_channels(self) -> dict[str, int]:
        chans = {"b0": 64}
        for idx, spec in enumerate(BLOCKS, start=1):
            chans[f"b{idx}"] = spec[1]
        chans.update(final=2048, logits=self.cfg.num_classes)
        return chans

    def __call__(self, x, *, train: bool = False, key=None) -> dict[str, jax.Array]:
        """Endpoints for NHWC images; `key` is unused (Xception has no dropout)."""
        del key
        layers.check_images(x, "Xception")
        out = {}
        x = jax.nn.relu(self.bn1(self.conv1(x), train=train))
        x = self.bn2(self.conv2(x), train=train)
        # The official MAT code records bn2's output as `b0`, but the next line of its
        # forward is an in-place ReLU on that very tensor, so what its attention and
        # texture modules later read is the rectified map. The ReLU is applied here
        # before recording so `b0` matches what MAT actually consumes.
        x = jax.nn.relu(x)
        out["b0"] = x
        for idx, block in enumerate(self.blocks, start=1):
            x = block(x, train=train)
            out[f"b{idx}"] = x
        x = jax.nn.relu(self.bn3(self.conv3(x), train=train))
        x = self.bn4(self.conv4(x), train=train)
        # Likewise the official logits stage starts with an in-place ReLU on the tensor
        # it recorded as `final`, so the stored endpoint is effectively rectified.
        x = jax.nn.relu(x)
        out["final"] = x
        out["logits"] = self.last_linear(jnp.mean(x, axis=(1, 2)))
        return out
