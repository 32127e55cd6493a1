"""EfficientNet B0-B7 in Flax NNX, returning the endpoint dict that MAT taps.

The structure follows efficientnet_pytorch 0.6.3 as vendored by the official MAT
code (so its ImageNet/AdvProp and MAT checkpoints load by name): MBConv blocks with
squeeze-excitation sized from the block's *input* filters, swish, drop-connect on
identity blocks, BatchNorm eps 1e-3 / decay 0.99.

Padding policies:
  * "reference": the official code's `Conv2dStaticSamePadding`, whose pads are
    computed once from the nominal image size for every layer. At 380 px the maps are
    190/95/47/23/23/11, and the same pads are used whatever the input size.
  * "same": TF "SAME" from each layer's actual input (190/95/48/24/24/12 at 380 px).

Endpoints: `b0` (stem), `b1`..`b7` (last block of each stage), `final` (head conv,
BN, swish) and `logits`; all NHWC.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from mat_jax.models import grouped, layers

# (kernel, stride, expand ratio, input filters, output filters, repeats) of B0.
BASE_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)

# width, depth, resolution, top dropout (the paper's values; MAT's recipe zeroes the
# top dropout of B4 through its config).
VARIANTS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}

PADDINGS = ("reference", "same")


@dataclasses.dataclass(frozen=True)
class EfficientNetConfig:
    width: float
    depth: float
    resolution: int
    dropout: float
    drop_connect_rate: float = 0.2
    se_ratio: float = 0.25
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    num_classes: int = 2
    padding: str = "reference"

    @classmethod
    def named(cls, name: str, **overrides) -> "EfficientNetConfig":
        """`EfficientNetConfig.named("b4", padding="same")`; accepts "efficientnet-b4" too."""
        key = name.lower().removeprefix("efficientnet-").removeprefix("efficientnet_")
        if key not in VARIANTS:
            raise ValueError(f"unknown EfficientNet variant {name!r}; choose one of {sorted(VARIANTS)}")
        width, depth, resolution, dropout = VARIANTS[key]
        fields = dict(width=width, depth=depth, resolution=resolution, dropout=dropout)
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)

    def filters(self, n: int) -> int:
        divisor = 8
        scaled = n * self.width
        rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
        if rounded < 0.9 * scaled:  # never round down by more than 10 %
            rounded += divisor
        return int(rounded)

    def repeats(self, n: int) -> int:
        return int(math.ceil(self.depth * n))


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    kernel: int
    stride: int
    expand: int
    in_filters: int
    out_filters: int
    stage: int  # 1-based stage number
    last_in_stage: bool


def block_specs(cfg: EfficientNetConfig) -> list[BlockSpec]:
    specs = []
    for stage, (k, s, e, i, o, r) in enumerate(BASE_STAGES, start=1):
        in_f, out_f, reps = cfg.filters(i), cfg.filters(o), cfg.repeats(r)
        for j in range(reps):
            specs.append(
                BlockSpec(
                    kernel=k,
                    stride=s if j == 0 else 1,
                    expand=e,
                    in_filters=in_f if j == 0 else out_f,
                    out_filters=out_f,
                    stage=stage,
                    last_in_stage=j == reps - 1,
                )
            )
    return specs


def conv_padding(policy: str, kernel: int, stride: int, image_size: int):
    """Padding argument for one conv under `policy` (see the module docstring)."""
    if policy == "same":
        return "SAME"
    if policy != "reference":
        raise ValueError(f"padding must be one of {PADDINGS}, got {policy!r}")
    pad = grouped.same_pads(image_size, kernel, stride)
    return (pad, pad)


class MBConv(nnx.Module):
    """Mobile inverted bottleneck with squeeze-excitation."""

    def __init__(self, spec: BlockSpec, cfg: EfficientNetConfig, drop_rate: float, *, rngs, dtype=None):
        bn = dict(momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon)
        init = layers.variance_scaling(2.0, "fan_out", "truncated_normal")
        mid = spec.in_filters * spec.expand
        self.spec = spec
        self.drop_rate = drop_rate
        if spec.expand != 1:
            self.expand_conv = layers.conv(
                spec.in_filters, mid, 1, use_bias=False, kernel_init=init, rngs=rngs, dtype=dtype
            )
            self.bn0 = layers.BatchNorm(mid, **bn)
        else:
            self.expand_conv = None
            self.bn0 = None
        self.depthwise_conv = layers.conv(
            mid,
            mid,
            spec.kernel,
            stride=spec.stride,
            groups=mid,
            padding=conv_padding(cfg.padding, spec.kernel, spec.stride, cfg.resolution),
            use_bias=False,
            kernel_init=init,
            rngs=rngs,
            dtype=dtype,
        )
        self.bn1 = layers.BatchNorm(mid, **bn)
        squeezed = max(1, int(spec.in_filters * cfg.se_ratio))
        self.se_reduce = layers.conv(mid, squeezed, 1, kernel_init=init, rngs=rngs, dtype=dtype)
        self.se_expand = layers.conv(squeezed, mid, 1, kernel_init=init, rngs=rngs, dtype=dtype)
        self.project_conv = layers.conv(
            mid, spec.out_filters, 1, use_bias=False, kernel_init=init, rngs=rngs, dtype=dtype
        )
        self.bn2 = layers.BatchNorm(spec.out_filters, **bn)

    @property
    def identity(self) -> bool:
        return self.spec.stride == 1 and self.spec.in_filters == self.spec.out_filters

    def __call__(self, x, *, train: bool, key=None):
        inputs = x
        if self.expand_conv is not None:
            x = jax.nn.silu(self.bn0(self.expand_conv(x), train=train))
        x = jax.nn.silu(self.bn1(self.depthwise_conv(x), train=train))
        squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
        squeezed = self.se_expand(jax.nn.silu(self.se_reduce(squeezed)))
        x = jax.nn.sigmoid(squeezed) * x
        x = self.bn2(self.project_conv(x), train=train)
        if self.identity:
            if train and self.drop_rate > 0:
                x = layers.dropout(x, self.drop_rate, key, broadcast_dims=(1, 2, 3))
            x = x + inputs
        return x


class EfficientNet(nnx.Module):
    def __init__(self, cfg: EfficientNetConfig, *, rngs: nnx.Rngs, dtype=None):
        if cfg.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {cfg.padding!r}")
        self.cfg = cfg
        bn = dict(momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon)
        init = layers.variance_scaling(2.0, "fan_out", "truncated_normal")
        stem = cfg.filters(32)
        self.conv_stem = layers.conv(
            3,
            stem,
            3,
            stride=2,
            padding=conv_padding(cfg.padding, 3, 2, cfg.resolution),
            use_bias=False,
            kernel_init=init,
            rngs=rngs,
            dtype=dtype,
        )
        self.bn0 = layers.BatchNorm(stem, **bn)
        specs = block_specs(cfg)
        self.blocks = nnx.List(
            [
                MBConv(spec, cfg, cfg.drop_connect_rate * idx / len(specs), rngs=rngs, dtype=dtype)
                for idx, spec in enumerate(specs)
            ]
        )
        head_in, head_out = specs[-1].out_filters, cfg.filters(1280)
        self.conv_head = layers.conv(
            head_in, head_out, 1, use_bias=False, kernel_init=init, rngs=rngs, dtype=dtype
        )
        self.bn1 = layers.BatchNorm(head_out, **bn)
        self.fc = layers.linear(head_out, cfg.num_classes, rngs=rngs, dtype=dtype)

    @property
    def endpoint_channels(self) -> dict[str, int]:
        chans = {"b0": self.cfg.filters(32), "final": self.cfg.filters(1280), "logits": self.cfg.num_classes}
        for spec in block_specs(self.cfg):
            chans[f"b{spec.stage}"] = spec.out_filters
        return chans

    def __call__(self, x, *, train: bool = False, key=None) -> dict[str, jax.Array]:
        layers.check_images(x, "EfficientNet")
        if train and key is None and (self.cfg.drop_connect_rate > 0 or self.cfg.dropout > 0):
            raise ValueError("EfficientNet in training mode needs key=... for drop-connect and dropout")
        out = {}
        x = jax.nn.silu(self.bn0(self.conv_stem(x), train=train))
        out["b0"] = x
        for idx, block in enumerate(self.blocks):
            block_key = jax.random.fold_in(key, idx) if key is not None else None
            x = block(x, train=train, key=block_key)
            if block.spec.last_in_stage:
                out[f"b{block.spec.stage}"] = x
        x = jax.nn.silu(self.bn1(self.conv_head(x), train=train))
        out["final"] = x
        pooled = jnp.mean(x, axis=(1, 2))
        if train:
            top_key = jax.random.fold_in(key, len(self.blocks)) if key is not None else None
            pooled = layers.dropout(pooled, self.cfg.dropout, top_key)
        out["logits"] = self.fc(pooled)
        return out
