"""The training objective of MAT: one function of (model, batch, key) -> (loss, aux).

It composes the model with the pure losses and AGDA as the official `train_batch`
does (docs/reference.md, "AGDA and the training objective"):

    L = ce_w * CE(clean) + regional_w * RIL(clean)
        + agda_ce_w * CE(AGDA image) + match_w * match(V_aug, V)

The second pass on the AGDA image is a full training pass: new dropout draws, BatchNorm
statistics updated again and the centres moved a second time (its RIL value is not
added to the loss, but its centre update is kept, as in the reference). The stage-1
objective (backbone only, CE on the backbone's own logits) is `backbone_loss`.

The model is mutated only through NNX variables (BatchNorm statistics); the centres
are returned in `aux["centers"]` and written back by the caller, so this function can
sit inside `nnx.value_and_grad` and a jitted train step.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from mat_jax import agda as agda_lib
from mat_jax import losses


def _clean_and_ril(model, images, labels, centers, key, alpha, loss_cfg, weights):
    out = model(images, train=True, key=key)
    ce = losses.cross_entropy(out["logits"], labels, weights)
    ril = losses.regional_loss(
        losses.standardize(out["feature_maps_d"]),
        out["attention_maps"],
        labels,
        centers,
        alpha=alpha,
        margin=float(loss_cfg["margin"]),
        inner_margin=tuple(loss_cfg["inner_margin"]),
    )
    return out, ce, ril


def mat_loss(
    model,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    alpha,
    loss_cfg: Mapping[str, Any],
    agda_cfg: Mapping[str, Any] | None = None,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Stage-2 loss of one batch; returns (loss, aux) with aux["centers"] the new centres.

    images (B, H, W, 3) in [-1, 1]; labels (B,) int; key: PRNG key of this step;
    alpha: current centre step (traced scalar). With `agda_cfg.enabled` false (or its
    weights zero) the second pass is skipped.
    """
    k_clean, k_agda, k_aug = jax.random.split(key, 3)
    centers = model.centers[...]
    out, ce, ril = _clean_and_ril(model, images, labels, centers, k_clean, alpha, loss_cfg, weights)
    loss = loss_cfg["ce_weight"] * ce + loss_cfg["regional_weight"] * ril.loss
    aux = {
        "ce": ce,
        "regional": ril.loss,
        "intra": ril.intra,
        "inter": ril.inter,
        "logits": out["logits"],
        "centers": ril.new_centers,
        # Arrays for tests and analysis; jit drops whatever the caller does not use.
        "outputs": {
            "attention_maps": out["attention_maps"],
            "feature_matrix": out["feature_matrix"],
            "regional_features": ril.feature_matrix,
            "batch_centers": ril.batch_centers,
        },
    }
    use_agda = bool(agda_cfg and agda_cfg.get("enabled", False)) and (
        loss_cfg["agda_ce_weight"] > 0 or loss_cfg["match_weight"] > 0
    )
    if use_agda:
        x_aug, index = agda_lib.agda(
            k_agda,
            images,
            out["attention_maps"],
            threshold=tuple(agda_cfg["threshold"]),
            zoom=tuple(agda_cfg["zoom"]),
            scale_factor=float(agda_cfg["scale_factor"]),
            kernel_size=int(agda_cfg["kernel_size"]),
            sigma=float(agda_cfg["sigma"]),
            noise_rate=float(agda_cfg["noise_rate"]),
        )
        _, ce_aug, ril_aug = _clean_and_ril(
            model, x_aug.astype(images.dtype), labels, ril.new_centers, k_aug, alpha, loss_cfg, weights
        )
        match = agda_lib.match_loss(ril_aug.feature_matrix, ril.feature_matrix, index)
        loss = loss + loss_cfg["agda_ce_weight"] * ce_aug + loss_cfg["match_weight"] * match
        aux.update(agda_ce=ce_aug, match=match, centers=ril_aug.new_centers)
    aux["loss"] = loss
    return loss, aux


def backbone_loss(model, images, labels, key, *, weights=None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Stage-1 loss: CE on the backbone's own logits (the reference's `feature_layer='logits'`)."""
    out = model(images, train=True, key=key)
    ce = losses.cross_entropy(out["logits"], labels, weights)
    return ce, {"ce": ce, "loss": ce, "logits": out["logits"]}


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
