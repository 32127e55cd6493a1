"""Cross-entropy, standardisation and the regional independence loss against hand computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mat_jax import losses


def test_cross_entropy_and_padding_weights():
    logits = jnp.asarray([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    labels = jnp.asarray([0, 1, 1])
    nll = [np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0)), np.log1p(np.exp(10.0))]
    np.testing.assert_allclose(float(losses.cross_entropy(logits, labels)), np.mean(nll), rtol=1e-6)
    w = jnp.asarray([1.0, 1.0, 0.0])  # the third example is padding
    np.testing.assert_allclose(float(losses.cross_entropy(logits, labels, w)), np.mean(nll[:2]), rtol=1e-6)


def test_standardize_uses_unbiased_std():
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 4, 1)
    out = np.asarray(losses.standardize(jnp.asarray(x)))
    ref = (x - x.mean()) / (x.std(ddof=1) + 1e-8)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    flat = np.asarray(losses.standardize(jnp.ones((2, 3, 3, 4))))
    assert np.all(flat == 0.0)  # constant maps: no division by zero


def reference_ril(d, a, y, c, alpha, margin, inner):
    """Loop-by-loop transcription of Auxiliary_Loss_v2 (NCHW thinking, NHWC arrays)."""
    b, m = a.shape[0], a.shape[-1]
    v = np.einsum("bhwm,bhwn->bmn", a, d)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    step = np.zeros_like(c)
    for i in range(b):
        if y[i] == 0:
            step += v[i] - c
    cb = c + alpha * step / b
    intra = 0.0
    for i in range(b):
        mi = inner[y[i]]
        intra += max(np.linalg.norm(v[i] - cb) * np.sign(mi) - mi, 0.0)
    inter = 0.0
    for j in range(m):
        for k in range(j + 1, m):
            inter += max(margin - np.linalg.norm(cb[j] - cb[k]), 0.0)
    return intra / b, inter / m / alpha, v, cb


@pytest.mark.parametrize("labels", [[0, 1, 1], [0, 0, 0], [1, 1, 1]])
def test_regional_loss_matches_transcription(labels):
    rng = np.random.default_rng(0)
    d = rng.normal(size=(3, 5, 5, 6)).astype(np.float32)
    a = rng.uniform(0, 2, size=(3, 5, 5, 4)).astype(np.float32)
    c = rng.normal(size=(4, 6)).astype(np.float32) * 0.2
    y = np.asarray(labels)
    out = losses.regional_loss(d, a, y, c, alpha=0.05, margin=0.8, inner_margin=(0.2, -0.8))
    intra, inter, v, cb = reference_ril(d, a, y, c, 0.05, 0.8, (0.2, -0.8))
    np.testing.assert_allclose(np.asarray(out.feature_matrix), v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.batch_centers), cb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(out.intra), intra, rtol=1e-5)
    np.testing.assert_allclose(float(out.inter), inter, rtol=1e-5)
    np.testing.assert_allclose(float(out.loss), intra + inter, rtol=1e-5)
    if labels == [1, 1, 1]:
        # Only reals move the centres.
        np.testing.assert_array_equal(np.asarray(out.new_centers), c)


def test_negative_margin_pushes_fakes_away():
    # One head, features pooled to exactly e0; centre at 0.
    d = np.zeros((1, 2, 2, 3), np.float32)
    d[..., 0] = 1.0
    a = np.ones((1, 2, 2, 1), np.float32)
    c = np.zeros((1, 3), np.float32)
    kw = dict(alpha=0.0, margin=0.5, inner_margin=(0.2, -0.8))
    fake_far = losses.regional_loss(d, a, np.asarray([1]), c, **{**kw, "alpha": 1e-3})
    # distance 1 from the centre >= 0.8: no intra loss for a fake; M=1 has no pairs.
    assert float(fake_far.intra) == 0.0 and float(fake_far.inter) == 0.0
    real = losses.regional_loss(d, a, np.asarray([0]), c, **{**kw, "alpha": 1e-3})
    # a real at distance ~1 from c_b (moved 0.001 towards it) pays ~1 - 0.2.
    np.testing.assert_allclose(float(real.intra), 0.999 - 0.2, rtol=1e-5)


def test_gradients_and_jit_with_traced_alpha():
    rng = np.random.default_rng(1)
    d = jnp.asarray(rng.normal(size=(2, 4, 4, 5)).astype(np.float32))
    a = jnp.asarray(rng.uniform(0.1, 1, size=(2, 4, 4, 3)).astype(np.float32))
    c = jnp.asarray(rng.normal(size=(3, 5)).astype(np.float32))
    y = jnp.asarray([0, 1])

    @jax.jit
    def f(d, c, alpha):
        return losses.regional_loss(d, a, y, c, alpha=alpha, margin=0.8, inner_margin=(0.2, -0.8)).loss

    gd, gc = jax.grad(f, argnums=(0, 1))(d, c, 0.05)
    assert np.all(np.isfinite(np.asarray(gd))) and np.any(np.asarray(gd) != 0)
    assert np.all(np.asarray(gc) == 0)  # the centres are state, not parameters
    # inter scales with 1/alpha, as in the fixed official code.
    hi, lo = float(f(d, jnp.zeros_like(c), 0.05)), float(f(d, jnp.zeros_like(c), 0.025))
    assert lo > hi
