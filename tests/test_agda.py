"""Tests of mat_jax.agda: parity with the official AGDA dump and unit behaviour."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mat_jax import agda as A

jax.config.update("jax_default_matmul_precision", "highest")

PARITY = Path(__file__).resolve().parents[1].parent / "shared/parity/reference_b4_seed0.npz"


# ---------------------------------------------------------------- parity


def test_blend_matches_official_dump():
    if not PARITY.exists():
        pytest.skip(f"parity dump not found at {PARITY}")
    z = np.load(PARITY)
    cfg = json.loads(str(z["meta"]))["agda"]
    assert cfg["mode"] == "soft" and cfg["noise_rate"] == 0.0
    x = np.transpose(z["in/x"], (0, 2, 3, 1))
    maps = np.transpose(z["out/attention_maps"], (0, 2, 3, 1))
    index = z["agda/index"]
    ref = np.transpose(z["agda/output"], (0, 2, 3, 1))

    blend = jax.jit(
        functools.partial(
            A.blend,
            scale_factor=cfg["scale_factor"],
            kernel_size=cfg["kernel_size"],
            sigma=cfg["sigma"],
        )
    )
    out = np.asarray(blend(x, maps, index, cfg["threshold"], cfg["zoom"], 0.0))
    assert out.shape == ref.shape
    diff = float(np.max(np.abs(out - ref)))
    tol = 1e-3 * float(np.max(np.abs(ref)))
    print(f"AGDA parity: max abs diff {diff:.3e} (tolerance {tol:.3e})")
    assert diff < tol
    # The augmentation must actually have changed the image (test is not vacuous).
    assert float(np.max(np.abs(ref - x))) > 10 * tol


# ---------------------------------------------------------------- pieces


def test_gaussian_kernel_normalised_symmetric():
    k = A.gaussian_kernel(11, 7.0)
    assert k.shape == (11,)
    np.testing.assert_allclose(k.sum(), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(k, k[::-1], rtol=0, atol=1e-15)
    assert np.argmax(k) == 5 and np.all(np.diff(k[:6]) > 0)
    ref = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 49.0))
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-12)


def test_gaussian_blur_matches_naive_2d_reflect():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 13, 9, 3)).astype(np.float32)
    size, sigma = 5, 1.5
    k1 = A.gaussian_kernel(size, sigma)
    k2 = np.outer(k1, k1)
    p = size // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    ref = np.zeros(x.shape, np.float64)
    for i in range(size):
        for j in range(size):
            ref += k2[i, j] * xp[:, i : i + x.shape[1], j : j + x.shape[2], :]
    out = np.asarray(A.gaussian_blur(jnp.asarray(x), size, sigma))
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # A constant image is unchanged (normalised kernel, reflect border).
    const = jnp.full((1, 12, 12, 3), 0.7, jnp.float32)
    np.testing.assert_allclose(np.asarray(A.gaussian_blur(const, 11, 7.0)), 0.7, atol=1e-6)


def test_soft_remap():
    t, zm = 0.5, 4.0
    a = jnp.linspace(0.0, 1.0, 101)
    r = np.asarray(A.soft_remap(a, t, zm))
    assert abs(r[0]) < 1e-7
    assert np.all(np.diff(r) > 0)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    expected_one = (sig((1 - t) * zm) - sig(-t * zm)) / (1 - sig(-t * zm))
    np.testing.assert_allclose(r[-1], expected_one, rtol=1e-6)
    assert 0.5 < r[-1] < 1.0


def test_scaled_size_is_floor_like_pytorch():
    assert A.scaled_size(380, 0.5) == 190
    assert A.scaled_size(299, 0.5) == 149  # floor, not round-half-even (150) or round (150)
    assert A.scaled_size(380, 0.3) == 114


def test_select_maps_and_head_weights():
    rng = np.random.default_rng(1)
    maps = jnp.asarray(rng.uniform(0, 2, size=(3, 5, 6, 4)).astype(np.float32))
    index = jnp.asarray([0, 3, 2])
    sel = np.asarray(A.select_maps(maps, index, (11, 16)))
    assert sel.shape == (3, 11, 16, 1)
    full = np.asarray(A.resize_bilinear_align_corners(maps, (11, 16)))
    for b, m in enumerate([0, 3, 2]):
        ref = full[b, :, :, m] / (full[b, :, :, m].max() + 1e-8)
        np.testing.assert_allclose(sel[b, :, :, 0], ref, rtol=1e-6, atol=1e-7)
    assert sel.min() >= 0.0 and sel.max() <= 1.0
    w = np.asarray(A.head_weights(maps))
    np.testing.assert_allclose(w, np.sqrt(np.asarray(maps).sum(axis=(1, 2)) + 1), rtol=1e-6)


def test_blend_zero_attention_is_identity():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 20, 20, 3)).astype(np.float32))
    maps = jnp.zeros((2, 5, 5, 4))
    noise = jnp.ones((2, 10, 10, 3))
    out = A.blend(x, maps, jnp.asarray([1, 2]), 0.5, 4.0, noise, scale_factor=0.5, kernel_size=5, sigma=2.0)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-7)


# ---------------------------------------------------------------- agda


def _inputs(b=2, h=32, w=32, m=4, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(-1, 1, size=(b, h, w, 3)).astype(np.float32))
    maps = jnp.asarray(rng.uniform(0, 1, size=(b, 6, 6, m)).astype(np.float32))
    return x, maps


def test_agda_deterministic_shape_index():
    x, maps = _inputs()
    key = jax.random.key(0)
    out1, idx1 = A.agda(key, x, maps, kernel_size=5, sigma=2.0)
    out2, idx2 = A.agda(key, x, maps, kernel_size=5, sigma=2.0)
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert idx1.shape == (2,)
    np.testing.assert_array_equal(np.asarray(out1), np.asarray(out2))
    np.testing.assert_array_equal(np.asarray(idx1), np.asarray(idx2))
    assert np.all((np.asarray(idx1) >= 0) & (np.asarray(idx1) < 4))
    assert np.all(np.isfinite(np.asarray(out1)))
    out3, _ = A.agda(jax.random.key(1), x, maps, kernel_size=5, sigma=2.0)
    assert not np.array_equal(np.asarray(out1), np.asarray(out3))


def test_agda_fixed_parameters_match_blend():
    x, maps = _inputs()
    key = jax.random.key(3)
    out, idx = A.agda(key, x, maps, threshold=0.5, zoom=4.0, noise_rate=0.0, kernel_size=5, sigma=2.0)
    ref = A.blend(x, maps, idx, 0.5, 4.0, 0.0, scale_factor=0.5, kernel_size=5, sigma=2.0)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)


def test_agda_prefers_heavy_head():
    x, maps = _inputs(b=2, h=16, w=16)
    heavy = maps.at[..., 2].multiply(1e5)  # head 2: weight ~ sqrt(1.8e6) ~ 1340 vs ~ 4.4
    keys = jax.random.split(jax.random.key(42), 200)
    run = jax.vmap(lambda k: A.agda(k, x, heavy, kernel_size=3, sigma=1.0)[1])
    idx = np.asarray(run(keys))
    assert idx.shape == (200, 2)
    w = np.asarray(A.head_weights(heavy))
    p = w[:, 2] / w.sum(axis=1)  # ~ 0.99 per sample
    frac = np.mean(idx == 2, axis=0)
    assert np.all(frac > 0.95), (frac, p)
    assert np.all(np.abs(frac - p) < 4 * np.sqrt(p * (1 - p) / 200) + 1e-2), (frac, p)
    # Uniform maps -> all heads drawn.
    flat = jnp.ones_like(maps)
    idx_u = np.asarray(jax.vmap(lambda k: A.agda(k, x, flat, kernel_size=3, sigma=1.0)[1])(keys))
    counts = np.bincount(idx_u.ravel(), minlength=4)
    assert np.all(counts > 60), counts


def test_agda_jits():
    x, maps = _inputs()
    fn = jax.jit(functools.partial(A.agda, kernel_size=5, sigma=2.0))
    out, idx = fn(jax.random.key(0), x, maps)
    ref, ridx = A.agda(jax.random.key(0), x, maps, kernel_size=5, sigma=2.0)
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(ridx))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
    # No gradient flows through the augmentation.
    g = jax.grad(lambda xx: jnp.sum(fn(jax.random.key(0), xx, maps)[0]))(x)
    assert np.all(np.asarray(g) == 0)


# ---------------------------------------------------------------- match loss


def test_match_loss_zero_and_finite_grad():
    rng = np.random.default_rng(4)
    v = jnp.asarray(rng.normal(size=(2, 4, 8)).astype(np.float32))
    idx = jnp.asarray([0, 3])
    assert float(A.match_loss(v, v, idx)) == 0.0
    g_aug, g_v = jax.grad(A.match_loss, argnums=(0, 1))(v, v, idx)
    assert np.all(np.isfinite(np.asarray(g_aug))) and np.all(np.asarray(g_aug) == 0)
    assert np.all(np.isfinite(np.asarray(g_v))) and np.all(np.asarray(g_v) == 0)


def test_match_loss_excludes_drawn_head_and_divides_by_bm():
    rng = np.random.default_rng(5)
    v = jnp.asarray(rng.normal(size=(2, 4, 8)).astype(np.float32))
    idx = jnp.asarray([1, 2])
    # Perturb only the drawn heads: no loss.
    v_drawn = v.at[0, 1].add(3.0).at[1, 2].add(-2.0)
    assert float(A.match_loss(v_drawn, v, idx)) == 0.0
    # Perturb a non-drawn head by a vector of norm 5: loss = 5 / (B * M).
    delta = jnp.zeros(8).at[0].set(3.0).at[1].set(4.0)
    v_other = v.at[0, 3].add(delta)
    np.testing.assert_allclose(float(A.match_loss(v_other, v, idx)), 5.0 / 8, rtol=1e-5)
    # Brute force against the formula.
    va = jnp.asarray(rng.normal(size=(2, 4, 8)).astype(np.float32))
    d = np.linalg.norm(np.asarray(va) - np.asarray(v), axis=-1)
    mask = 1.0 - np.eye(4)[np.asarray(idx)]
    np.testing.assert_allclose(float(A.match_loss(va, v, idx)), np.mean(d * mask), rtol=1e-5)
