"""EfficientNet B0-B7 under both padding policies, and MAT built on them (shapes only, cheap)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.ffpp import get_config
from mat_jax.models.efficientnet import VARIANTS, EfficientNet, EfficientNetConfig
from mat_jax.models.mat import MAT

# Endpoint channels of the published models (efficientnet_pytorch / the paper).
CHANNELS = {
    "b0": (32, 16, 24, 40, 80, 112, 192, 320, 1280),
    "b4": (48, 24, 32, 56, 112, 160, 272, 448, 1792),
    "b7": (64, 32, 48, 80, 160, 224, 384, 640, 2560),
}
ENDPOINTS = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "final")
STAGE_STRIDES = (2, 1, 2, 2, 2, 1, 2, 1, 1)  # stem, stages 1-7, head
STAGE_KERNELS = (3, 3, 3, 5, 3, 5, 5, 3, 1)


def expected_sizes(resolution: int, policy: str) -> list[int]:
    """Spatial size of each endpoint, computed independently of the model code."""
    sizes, r = [], resolution
    for s, k in zip(STAGE_STRIDES, STAGE_KERNELS):
        if policy == "same":
            r = -(-r // s)
        else:
            # Pads fixed from the nominal resolution, applied to whatever comes in.
            total = max((-(-resolution // s) - 1) * s + k - resolution, 0)
            r = (r + total - k) // s + 1
        sizes.append(r)
    return sizes


def abstract_endpoints(name: str, policy: str, batch: int = 1):
    cfg = EfficientNetConfig.named(name, padding=policy)
    model = nnx.eval_shape(lambda: EfficientNet(cfg, rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((batch, cfg.resolution, cfg.resolution, 3), jnp.float32)
    return cfg, model, nnx.eval_shape(lambda m, x: m(x, train=False), model, x)


@pytest.mark.parametrize("policy", ["reference", "same"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_endpoint_shapes(name, policy):
    cfg, model, out = abstract_endpoints(name, policy)
    assert set(out) == set(ENDPOINTS) | {"logits"}
    sizes = expected_sizes(cfg.resolution, policy)
    for key, size in zip(ENDPOINTS, sizes):
        assert out[key].shape == (1, size, size, model.endpoint_channels[key]), (name, policy, key)
    assert out["logits"].shape == (1, 2)
    if name in CHANNELS:
        assert tuple(model.endpoint_channels[k] for k in ENDPOINTS) == CHANNELS[name]


def test_b4_sizes_match_the_reference_and_tf_same():
    assert expected_sizes(380, "reference")[:7] == [190, 190, 95, 47, 23, 23, 11]
    assert expected_sizes(380, "same")[:7] == [190, 190, 95, 48, 24, 24, 12]
    _, _, out = abstract_endpoints("b4", "reference")
    assert [out[k].shape[1] for k in ("b2", "b3", "b4", "b5", "b6")] == [95, 47, 23, 23, 11]
    _, _, out = abstract_endpoints("efficientnet-b4", "same")
    assert [out[k].shape[1] for k in ("b2", "b3", "b4", "b5", "b6")] == [95, 48, 24, 24, 12]


def count_params(module) -> int:
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("name, classes, expected", [("b0", 1000, 5_288_548), ("b4", 1000, 19_341_616),
                                                     ("b7", 1000, 66_347_960), ("b4", 2, 17_552_202)])
def test_parameter_counts_match_published_models(name, classes, expected):
    cfg = EfficientNetConfig.named(name, num_classes=classes)
    assert count_params(nnx.eval_shape(lambda: EfficientNet(cfg, rngs=nnx.Rngs(0)))) == expected


def test_mat_parameter_count_and_other_m():
    cfg = get_config().model
    model = nnx.eval_shape(lambda: MAT(dict(cfg), rngs=nnx.Rngs(0)))
    assert count_params(model) == 18_826_068  # the official MAT (B4, M=4), docs/reference.md
    cfg.num_attention_maps = 8
    cfg.padding = "same"
    model = nnx.eval_shape(lambda: MAT(dict(cfg), rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((3, 380, 380, 3), jnp.float32)
    out = nnx.eval_shape(lambda m, x: m(x, train=False), model, x)
    assert out["attention_maps"].shape == (3, 24, 24, 8)
    assert out["feature_matrix"].shape == (3, 8, 32)
    assert out["texture_features"].shape == (3, 95, 95, 8, 32)
    assert out["logits"].shape == (3, 2)


def test_train_mode_drop_connect_and_batch_stats():
    cfg = EfficientNetConfig.named("b0")
    model = EfficientNet(cfg, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    before = [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]
    step = nnx.jit(lambda m, x, k: m(x, train=True, key=k)["logits"])
    a = step(model, x, jax.random.key(1))
    b = step(model, x, jax.random.key(2))
    after = [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]
    assert all(not np.array_equal(u, v) for u, v in zip(before, after))
    assert not np.allclose(np.asarray(a), np.asarray(b))  # different drop-connect / dropout draws
    with pytest.raises(ValueError, match="needs key"):
        model(x, train=True)


def test_unknown_variant_and_padding():
    with pytest.raises(ValueError, match="unknown EfficientNet variant 'b9'"):
        EfficientNetConfig.named("b9")
    with pytest.raises(ValueError, match="padding must be one of"):
        EfficientNet(EfficientNetConfig.named("b0", padding="valid"), rngs=nnx.Rngs(0))
