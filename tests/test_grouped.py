"""Grouped, depthwise and 1x1 convolutions: the CPU paths against XLA's native conv."""

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest
from flax import nnx

from mat_jax import parallel
from mat_jax.models import layers
from mat_jax.models.grouped import Conv, grouped_conv

CASES = [
    # (H, W, C_in, C_out, groups, kernel, stride, padding)
    (13, 11, 5, 5, 5, 3, 1, "SAME"),
    (13, 11, 5, 5, 5, 5, 2, "SAME"),
    (12, 12, 4, 4, 4, 3, 2, ((0, 1), (0, 1))),  # the reference's static "same" pads
    (9, 9, 3, 3, 3, 5, 2, ((1, 3), (2, 0))),  # asymmetric
    (10, 9, 3, 3, 3, 3, 1, "VALID"),
    (10, 9, 8, 12, 4, 3, 1, ((1, 1), (1, 1))),  # the texture block's per-head convs
    (10, 9, 8, 4, 2, 5, 2, "SAME"),
    (7, 7, 6, 6, 3, 1, 1, "VALID"),
    (7, 9, 6, 10, 1, 1, 1, "SAME"),  # 1x1: the matmul path
    (8, 8, 6, 10, 1, 1, 2, "SAME"),  # strided 1x1 and dense 3x3: native
    (8, 7, 4, 6, 1, 3, 1, "SAME"),
]


def native(x, w, groups, stride, padding):
    return jax.lax.conv_general_dilated(
        x,
        w,
        (stride, stride),
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


@pytest.mark.parametrize("h,w,cin,cout,groups,k,stride,padding", CASES)
def test_values_and_gradients_match_native(h, w, cin, cout, groups, k, stride, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, h, w, cin)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((k, k, cin // groups, cout)), jnp.float32)

    def ours(x, kernel):
        return grouped_conv(x, kernel, groups, (stride, stride), padding)

    want, want_vjp = jax.vjp(lambda x, kernel: native(x, kernel, groups, stride, padding), x, kernel)
    got = jax.jit(ours)(x, kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    g = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)
    got_dx, got_dw = jax.jit(lambda x, kernel, g: jax.vjp(ours, x, kernel)[1](g))(x, kernel, g)
    want_dx, want_dw = want_vjp(g)
    np.testing.assert_allclose(got_dx, want_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_dw, want_dw, rtol=1e-5, atol=2e-5)


def test_cpu_lowering_avoids_the_grouped_conv():
    # The whole point: on CPU neither the forward nor the gradient is a grouped conv.
    x, w = jnp.ones((2, 16, 16, 8)), jnp.ones((3, 3, 1, 8))
    step = jax.jit(jax.grad(lambda x, w: jnp.sum(grouped_conv(x, w, 8, (2, 2)) ** 2), (0, 1)))
    hlo = step.lower(x, w).compile().as_text()
    assert "feature_group_count" not in hlo and "batch_group_count" not in hlo


def test_cpu_pointwise_conv_is_a_matmul():
    # No conv, so no batch-minor transposes for its kernel gradient.
    x, w = jnp.ones((2, 6, 6, 8)), jnp.ones((1, 1, 8, 4))
    step = jax.jit(jax.grad(lambda x, w: jnp.sum(grouped_conv(x, w, 1) ** 2), (0, 1)))
    hlo = step.lower(x, w).compile().as_text()
    if jax.devices()[0].platform == "cpu":
        assert "convolution(" not in hlo


def test_bad_kernel_shape_names_the_expected_one():
    with pytest.raises(ValueError, match=r"\(kh, kw, 2, C_out\)"):
        grouped_conv(jnp.ones((1, 5, 5, 8)), jnp.ones((3, 3, 3, 8)), 4)


@pytest.mark.parametrize("k,groups,pad", [(3, 4, 1), (1, 1, 0), (3, 1, 1)])
def test_module_is_a_drop_in_for_nnx_conv(k, groups, pad):
    # Same variables, shapes and seeded values as nnx.Conv, so checkpoints and the
    # importer are unaffected; and the same output.
    pads = ((pad, pad), (pad, pad))
    ours = layers.conv(8, 12, k, groups=groups, padding=pads, rngs=nnx.Rngs(3))
    assert isinstance(ours, Conv)
    theirs = nnx.Conv(
        8, 12, (k, k), padding=pads, feature_group_count=groups,
        kernel_init=layers.torch_default_kernel_init(), bias_init=layers.torch_default_bias_init(8 // groups * k * k),
        rngs=nnx.Rngs(3),
    )  # fmt: skip
    a, b = nnx.state(ours, nnx.Param), nnx.state(theirs, nnx.Param)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 7, 7, 8)), jnp.float32)
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_cpu_compiler_options_compile_and_agree():
    options = parallel.compiler_options()
    if jax.devices()[0].platform == "cpu" and jaxlib.__version__.startswith(
        parallel.CPU_COMPILER_OPTIONS_JAXLIB
    ):
        assert options == parallel.CPU_COMPILER_OPTIONS
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 9, 9, 16)), jnp.float32)

    def f(x):  # batch normalisation statistics: the reductions the option reroutes
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        return jnp.sum(jnp.tanh((x - mean) * jax.lax.rsqrt(var + 1e-5)) * x)

    with_options = jax.jit(jax.grad(f), compiler_options=options)(x)
    np.testing.assert_allclose(with_options, jax.jit(jax.grad(f))(x), rtol=1e-5, atol=1e-5)
