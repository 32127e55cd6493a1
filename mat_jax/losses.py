"""MAT's losses as pure, jittable functions of arrays.

* `cross_entropy`: softmax cross-entropy over integer labels (0 real, 1 fake).
* `regional_loss`: the regional independence loss as the official `Auxiliary_Loss_v2`
  computes it (docs/reference.md, "Regional independence loss"), returning the updated feature centres instead
  of mutating a buffer, so the train step stays a pure function.

Under a `jax.jit` whose batch is sharded over a mesh, every mean below is over the
global batch, which is what the reference's all-reduce of the centres computes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mat_jax import ops


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean softmax cross-entropy; `weights` (B,) masks padded examples (mean over the weighted ones)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels.astype(jnp.int32)[:, None], axis=-1)[:, 0]
    if weights is None:
        return jnp.mean(nll)
    weights = weights.astype(nll.dtype)
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def standardize(feature_maps_d: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Per-sample, per-channel standardisation over space with the *unbiased* std (torch.std).

    feature_maps_d: (B, h, w, N).
    """
    x = feature_maps_d.astype(jnp.float32)
    x = x - jnp.mean(x, axis=(1, 2), keepdims=True)
    n = x.shape[1] * x.shape[2]
    std = jnp.sqrt(jnp.sum(jnp.square(x), axis=(1, 2), keepdims=True) / max(n - 1, 1))
    return x / (std + eps)


class RegionalLoss(NamedTuple):
    loss: jax.Array  # intra + inter
    intra: jax.Array
    inter: jax.Array
    feature_matrix: jax.Array  # V (B, M, N): the attention-pooled, standardised D
    batch_centers: jax.Array  # c_b (M, N), with gradient into V
    new_centers: jax.Array  # stop_gradient(c_b): the centres to keep after this step


def regional_loss(
    feature_maps_d: jax.Array,
    attention_maps: jax.Array,
    labels: jax.Array,
    centers: jax.Array,
    *,
    alpha,
    margin: float,
    inner_margin: tuple[float, float],
) -> RegionalLoss:
    """Regional independence loss (`Auxiliary_Loss_v2` of the official code).

    Args:
      feature_maps_d: (B, h, w, N) the texture block's pooled D, *already standardised*
        (`standardize`).
      attention_maps: (B, h', w', M), resized to (h, w) if they differ.
      labels: (B,) int, 0 real, 1 fake.
      centers: (M, N) current feature centres (no gradient flows into them).
      alpha: centre step size (scalar, may be traced: it decays per epoch).
      margin: inter-centre margin.
      inner_margin: per-class intra margins (real, fake); a negative margin pushes that
        class *away* from the centres (the released [0.2, -0.8]).

    Returns a `RegionalLoss`. The centres move towards the batch mean of the *real*
    samples only, but the mean divides by the whole batch: c_b = c + alpha *
    mean_i((V_i - c) [y_i = 0]). Intra uses the Frobenius distance of each V_i to c_b;
    inter penalises centre pairs closer than `margin`, scaled by 1 / (M * alpha).
    """
    centers = jax.lax.stop_gradient(centers.astype(jnp.float32))
    alpha = jnp.asarray(alpha, jnp.float32)
    v = ops.feature_pooling(feature_maps_d.astype(jnp.float32), attention_maps.astype(jnp.float32))
    m = v.shape[1]
    real = (labels == 0).astype(v.dtype)[:, None, None]
    batch_centers = centers + alpha * jnp.mean((v - centers) * real, axis=0)

    margins = jnp.asarray(inner_margin, jnp.float32)[labels.astype(jnp.int32)]
    dist = ops.safe_norm((v - batch_centers).reshape(v.shape[0], -1), axis=-1)
    intra = jnp.mean(jax.nn.relu(dist * jnp.sign(margins) - margins))

    j, k = jnp.triu_indices(m, k=1)
    pair_dist = ops.safe_norm(batch_centers[j] - batch_centers[k], axis=-1)
    inter = jnp.sum(jax.nn.relu(margin - pair_dist)) / m / alpha
    return RegionalLoss(
        loss=intra + inter,
        intra=intra,
        inter=inter,
        feature_matrix=v,
        batch_centers=batch_centers,
        new_centers=jax.lax.stop_gradient(batch_centers),
    )
