"""MAT: multi-attentional deepfake detection (Zhao et al., CVPR 2021) in Flax NNX.

Follows what the official code computes (docs/reference.md, "Model"), not the paper:
attention maps from a 3x3 conv/BN/ReLU/1x1 conv/BN/ELU+1 stack with a fixed border
mask, the "v2" texture enhancement block (tanh gate from the detached maps, per-head
grouped dense block), textural and global bilinear attention pooling, and a hardswish
head. Everything is NHWC; attention maps are (B, h, w, M), the textural feature
matrix (B, M, N).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mat_jax import ops
from mat_jax.models import layers
from mat_jax.models.efficientnet import EfficientNet, EfficientNetConfig
from mat_jax.models.xception import Xception, XceptionConfig

# The MAT modules keep PyTorch's BatchNorm2d defaults (eps 1e-5, momentum 0.1).
MAT_BN = dict(momentum=0.9, epsilon=1e-5)


class FeatureCenters(nnx.Variable):
    """Regional-independence feature centres: state updated by the train step, not by the optimizer."""


def border_mask(h: int, w: int) -> np.ndarray:
    """The official 24x24 mask (ones on [2:-2, 2:-2]) resized by legacy nearest to (h, w)."""
    base = np.zeros((24, 24), np.float32)
    base[2:-2, 2:-2] = 1.0
    rows = ops.nearest_index(24, h)
    cols = ops.nearest_index(24, w)
    return base[rows][:, cols]


class AttentionMap(nnx.Module):
    def __init__(self, in_features: int, num_maps: int, *, rngs, dtype=None):
        self.num_maps = num_maps
        self.conv_extract = layers.conv(in_features, in_features, 3, padding=((1, 1), (1, 1)), rngs=rngs, dtype=dtype)
        self.bn1 = layers.BatchNorm(in_features, **MAT_BN)
        self.conv2 = layers.conv(in_features, num_maps, 1, use_bias=False, rngs=rngs, dtype=dtype)
        self.bn2 = layers.BatchNorm(num_maps, **MAT_BN)

    def __call__(self, x, *, train: bool):
        x = jax.nn.relu(self.bn1(self.conv_extract(x), train=train))
        x = jax.nn.elu(self.bn2(self.conv2(x), train=train)) + 1.0
        mask = jnp.asarray(border_mask(x.shape[1], x.shape[2]), x.dtype)
        return x * mask[None, :, :, None]


class TextureEnhance(nnx.Module):
    """`Texture_Enhance_v2`: residual of local average pooling, gated per head, dense block per head."""

    def __init__(self, num_features: int, num_maps: int, *, rngs, dtype=None):
        n, m = num_features, num_maps
        self.num_features, self.num_maps = n, m

        def grouped(cin, cout, k):
            pad = ((k // 2, k // 2),) * 2
            return layers.conv(cin * m, cout * m, k, groups=m, padding=pad, rngs=rngs, dtype=dtype)

        self.conv_extract = layers.conv(n, n, 3, padding=((1, 1), (1, 1)), rngs=rngs, dtype=dtype)
        self.conv0 = grouped(n, n, 5)
        self.conv1 = grouped(n, n, 3)
        self.bn1 = layers.BatchNorm(n * m, **MAT_BN)
        self.conv2 = grouped(2 * n, n, 3)
        self.bn2 = layers.BatchNorm(2 * n * m, **MAT_BN)
        self.conv3 = grouped(3 * n, n, 3)
        self.bn3 = layers.BatchNorm(3 * n * m, **MAT_BN)
        self.conv_last = grouped(4 * n, n, 1)
        self.bn4 = layers.BatchNorm(4 * n * m, **MAT_BN)
        self.bn_last = layers.BatchNorm(n * m, **MAT_BN)

    def _cat(self, a, b):
        # Keep each head's channels contiguous: [head0: a, b][head1: a, b]...
        bsz, h, w, _ = a.shape
        m = self.num_maps
        c = jnp.concatenate([a.reshape(bsz, h, w, m, -1), b.reshape(bsz, h, w, m, -1)], axis=-1)
        return c.reshape(bsz, h, w, -1)

    def __call__(self, features, attention_maps, *, train: bool) -> dict[str, jax.Array]:
        bsz, h, w, n = features.shape
        size = attention_maps.shape[1:3]
        f = self.conv_extract(features)
        extracted = f
        pooled = ops.adaptive_avg_pool(f, size)
        if h > size[0]:
            f = f - ops.resize_nearest(pooled, (h, w))
        gate = jnp.tanh(ops.resize_bilinear_align_corners(jax.lax.stop_gradient(attention_maps), (h, w)))
        t = (f[:, :, :, None, :] * gate[..., None]).reshape(bsz, h, w, -1)
        x0 = self.conv0(t)
        x1 = self.conv1(jax.nn.relu(self.bn1(x0, train=train)))
        x01 = self._cat(x0, x1)
        x2 = self.conv2(jax.nn.relu(self.bn2(x01, train=train)))
        x012 = self._cat(x01, x2)
        x3 = self.conv3(jax.nn.relu(self.bn3(x012, train=train)))
        x0123 = self._cat(x012, x3)
        out = self.conv_last(jax.nn.relu(self.bn4(x0123, train=train)))
        out = jax.nn.relu(self.bn_last(out, train=train))
        return {
            "texture_features": out.reshape(bsz, h, w, self.num_maps, n),
            "feature_maps_d": pooled,
            "texture_extract": extracted,
            "texture_modulated": t,
        }


def create_backbone(model_cfg: Mapping[str, Any], *, rngs, dtype=None):
    name = model_cfg["backbone"].lower()
    if name.startswith("efficientnet"):
        cfg = EfficientNetConfig.named(
            name,
            padding=model_cfg.get("padding", "reference"),
            drop_connect_rate=model_cfg.get("drop_connect_rate"),
            dropout=model_cfg.get("backbone_dropout"),
            num_classes=model_cfg.get("num_classes", 2),
            # Optional scaling overrides (0 or None: the variant's own), for tiny test models.
            width=model_cfg.get("width") or None,
            depth=model_cfg.get("depth") or None,
            # Decay of the backbone's BatchNorm averages (0 or None: the official 0.99). Short
            # runs from scratch need a faster one, or eval-mode statistics lag far behind.
            bn_momentum=model_cfg.get("bn_momentum") or None,
        )
        return EfficientNet(cfg, rngs=rngs, dtype=dtype)
    if name == "xception":
        return Xception(XceptionConfig(num_classes=model_cfg.get("num_classes", 2)), rngs=rngs, dtype=dtype)
    raise ValueError(f"unknown backbone {model_cfg['backbone']!r}: use efficientnet-b0..b7 or xception")


class MAT(nnx.Module):
    """The full model. `model(x, train=False)` with x (B, H, W, 3) in [-1, 1].

    Returns a dict: `logits` (B, C), `attention_maps` (B, h, w, M) (never dropped),
    `feature_matrix` (B, M, N) (textural BAP before head dropout), `feature_maps_d`
    (B, h, w, N) (the pooled D the regional loss uses), `texture_features`,
    `global_pooled`, `local_proj`, `global_proj`, `ensemble_in`, `layers` (the
    backbone endpoints) and the texture block's `texture_extract`/`texture_modulated`.

    In training (`train=True`) BatchNorm uses and updates batch statistics and the
    official dropouts apply: drop-connect in the backbone, a per-(sample, head) dropout
    of the textural rows and of the maps entering global pooling (the 3-D `Dropout2d`
    of the reference), and element-wise dropout of the pooled global feature. They
    need `key`.
    """

    def __init__(self, model_cfg: Mapping[str, Any], *, rngs: nnx.Rngs):
        cfg = dict(model_cfg)
        dtype = jnp.dtype(cfg.get("dtype", "float32"))
        m = int(cfg["num_attention_maps"])
        if m < 1:
            raise ValueError(f"num_attention_maps must be >= 1, got {m}")
        self.num_maps = m
        self.texture_layer = cfg["texture_layer"]
        self.attention_layer = cfg["attention_layer"]
        self.head_dropout = float(cfg.get("head_dropout", 0.25))
        self.final_dropout = float(cfg.get("final_dropout", 0.5))
        mid = int(cfg.get("mid_dims", 256))
        num_classes = int(cfg.get("num_classes", 2))

        self.backbone = create_backbone(cfg, rngs=rngs, dtype=dtype)
        chans = self.backbone.endpoint_channels
        for role, name in (("texture_layer", self.texture_layer), ("attention_layer", self.attention_layer)):
            if name not in chans or name in ("final", "logits"):
                raise ValueError(f"{role}={name!r} is not a feature endpoint of {cfg['backbone']}: {sorted(chans)}")
        n = chans[self.texture_layer]
        self.attentions = AttentionMap(chans[self.attention_layer], m, rngs=rngs, dtype=dtype)
        self.texture_enhance = TextureEnhance(n, m, rngs=rngs, dtype=dtype)
        self.projection_local = nnx.List(
            [layers.linear(m * n, mid, rngs=rngs, dtype=dtype), layers.linear(mid, mid, rngs=rngs, dtype=dtype)]
        )
        self.project_final = layers.linear(chans["final"], mid, rngs=rngs, dtype=dtype)
        self.ensemble_classifier = nnx.List(
            [layers.linear(2 * mid, mid, rngs=rngs, dtype=dtype), layers.linear(mid, num_classes, rngs=rngs, dtype=dtype)]
        )
        self.centers = FeatureCenters(jnp.zeros((m, n), jnp.float32))

    def __call__(self, x, *, train: bool = False, key=None) -> dict[str, Any]:
        layers.check_images(x, "MAT")
        if train and key is None:
            raise ValueError("MAT in training mode needs key=... (dropout and drop-connect)")
        keys = jax.random.split(key, 3) if key is not None else (None, None, None)
        feats = self.backbone(x, train=train, key=keys[0])
        attention_maps = self.attentions(feats[self.attention_layer], train=train)
        tex = self.texture_enhance(feats[self.texture_layer], attention_maps, train=train)
        feature_matrix = ops.texture_pooling(tex["texture_features"], attention_maps)

        bsz = x.shape[0]
        head_mask = jnp.ones((bsz, self.num_maps), attention_maps.dtype)
        if train:
            k_head, k_final = jax.random.split(keys[1])
            head_mask = layers.dropout(head_mask, self.head_dropout, k_head)
        local = feature_matrix * head_mask[..., None]
        local = local.reshape(bsz, -1)
        local = ops.hardswish(self.projection_local[1](ops.hardswish(self.projection_local[0](local))))

        attention_sum = jnp.sum(attention_maps * head_mask[:, None, None, :], axis=-1, keepdims=True)
        pooled = ops.global_pooling(feats["final"], attention_sum)
        dropped = layers.dropout(pooled, self.final_dropout, k_final) if train else pooled
        global_proj = ops.hardswish(self.project_final(dropped))

        ensemble_in = jnp.concatenate([local, global_proj], axis=-1)
        logits = self.ensemble_classifier[1](ops.hardswish(self.ensemble_classifier[0](ensemble_in)))
        return {
            "logits": logits,
            "attention_maps": attention_maps,
            "feature_matrix": feature_matrix,
            "global_pooled": pooled,
            "local_proj": local,
            "global_proj": global_proj,
            "ensemble_in": ensemble_in,
            "layers": feats,
            **tex,
        }


def create_model(model_cfg: Mapping[str, Any], seed: int = 0) -> MAT:
    """Builds MAT from `config.model` with its parameters drawn from `seed`."""
    return MAT(dict(model_cfg), rngs=nnx.Rngs(seed))
