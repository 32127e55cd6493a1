"""Shape, BatchNorm and size checks for the Xception backbone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mat_jax.models.xception import Xception, XceptionConfig


def build(num_classes: int = 2) -> Xception:
    return Xception(XceptionConfig(num_classes=num_classes), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def model() -> Xception:
    return build()


def batch_stats(m: nnx.Module) -> list[np.ndarray]:
    return [np.asarray(v) for v in jax.tree.leaves(nnx.state(m, nnx.BatchStat))]


def test_endpoint_shapes_at_299(model):
    x = jax.random.normal(jax.random.key(1), (1, 299, 299, 3))
    out = nnx.jit(lambda m, x: m(x, train=False))(model, x)
    spatial = {"b0": 147, "b1": 74, "b2": 37, "b12": 10, "final": 10}
    spatial.update({f"b{i}": 19 for i in range(3, 12)})
    chans = model.endpoint_channels
    assert set(out) == set(chans) == set(spatial) | {"logits"}
    for name, size in spatial.items():
        assert out[name].shape == (1, size, size, chans[name]), name
    assert out["logits"].shape == (1, 2)
    assert chans["b3"] == chans["b11"] == 728 and chans["b12"] == 1024 and chans["final"] == 2048
    # `b0` and `final` carry the reference's in-place ReLU.
    assert float(out["b0"].min()) >= 0.0 and float(out["final"].min()) >= 0.0
    assert all(bool(jnp.isfinite(v).all()) for v in out.values())


def test_train_mode_updates_batch_stats_and_eval_does_not(model):
    m = nnx.clone(model)
    # A small input keeps this quick (maps are 2x2 by block12); any size >= 7 px works.
    x = jax.random.normal(jax.random.key(2), (2, 40, 40, 3))
    before = batch_stats(m)

    nnx.jit(lambda m, x: m(x, train=False))(m, x)
    after_eval = batch_stats(m)
    assert all(np.array_equal(a, b) for a, b in zip(before, after_eval))

    out = nnx.jit(lambda m, x: m(x, train=True))(m, x)
    assert out["logits"].shape == (2, 2)
    after_train = batch_stats(m)
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, after_train))
    # 40 BatchNorms (stem 2, three per block, bn3, bn4), each with a mean and a var,
    # and every one of them moves.
    assert len(before) == 80
    assert changed == len(before)


def test_parameter_count():
    # Parameters by hand (SeparableConv(i, o) = 9*i + i*o, BN = 2*c, no conv biases):
    #   stem: conv1 3*3*3*32 = 864, bn1 64, conv2 3*3*32*64 = 18432, bn2 128 -> 19488
    #   block1  skip 8192+256, sep(64,128) 8768, bn 256, sep(128,128) 17536, bn 256 -> 35264
    #   block2  skip 32768+512, sep(128,256) 33920, bn 512, sep(256,256) 67840, bn 512 -> 136064
    #   block3  skip 186368+1456, sep(256,728) 188672, bn 1456, sep(728,728) 536536, bn 1456
    #           -> 915944
    #   block4..11 3 x (536536 + 1456) = 1613976 each, x 8 -> 12911808
    #   block12 skip 745472+2048, sep(728,728) 536536, bn 1456, sep(728,1024) 752024, bn 2048
    #           -> 2039584
    #   conv3 sep(1024,1536) 1582080 + bn3 3072, conv4 sep(1536,2048) 3159552 + bn4 4096
    #   -> 20806952 before the head; + 2048*1000 + 1000 = 22855952 (Cadene's figure);
    #   with 2 classes the head is 2048*2 + 2 = 4098 -> 20811050.
    def count(num_classes):
        abstract = nnx.eval_shape(lambda: Xception(XceptionConfig(num_classes=num_classes), rngs=nnx.Rngs(0)))
        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))

    assert count(2) == 20811050 == 22855952 - (2048 * 998 + 998)
    assert count(1000) == 22855952


def test_conv_init_is_fan_out_normal(model):
    # normal(0, sqrt(2 / (k * k * out_channels))); the depthwise conv's out_channels = in.
    stem = np.asarray(model.conv1.kernel[...])
    depthwise = np.asarray(model.blocks[3].sep_convs[0].conv1.kernel[...])
    pointwise = np.asarray(model.blocks[3].sep_convs[0].pointwise.kernel[...])
    assert abs(stem.mean()) < 0.01
    np.testing.assert_allclose(stem.std(), np.sqrt(2 / (9 * 32)), rtol=0.1)
    np.testing.assert_allclose(depthwise.std(), np.sqrt(2 / (9 * 728)), rtol=0.05)
    np.testing.assert_allclose(pointwise.std(), np.sqrt(2 / 728), rtol=0.02)


def test_separable_conv_is_depthwise_then_pointwise(model):
    sep = model.blocks[0].sep_convs[0]
    assert sep.conv1.kernel.shape == (3, 3, 1, 64)
    assert sep.pointwise.kernel.shape == (1, 1, 64, 128)
    assert model.blocks[3].skip is None and model.blocks[3].skipbn is None
    assert model.blocks[11].sep_convs[0].pointwise.kernel.shape == (1, 1, 728, 728)
    assert model.blocks[11].sep_convs[1].pointwise.kernel.shape == (1, 1, 728, 1024)


@pytest.mark.parametrize(
    "shape, match",
    [((299, 299, 3), r"\(299, 299, 3\)"), ((1, 4, 299, 299), r"\(1, 4, 299, 299\)")],
)
def test_bad_input_raises(model, shape, match):
    with pytest.raises(ValueError, match=match):
        model(jnp.zeros(shape), train=False)
