"""The train step: one compiled pure function of (state, batch) -> (new state, metrics).

Forward, AGDA second pass, losses (`objective`), optax update, BatchNorm statistics and the
regional loss's centre update, with the state donated. Every PRNG key and the
centre step alpha are functions of the optimizer's step counter, so a resumed run draws what
an uninterrupted one draws.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mat_jax import objective, parallel, state as state_lib


def alpha_at(config, step, steps_per_epoch: int):
    """The centre step of the regional loss: alpha * decay ** epoch (a buffer in the reference)."""
    epoch = step // steps_per_epoch
    return config.loss.alpha * jnp.power(jnp.float32(config.loss.alpha_decay), epoch.astype(jnp.float32))


def make_train_step(config, graphdef, schedule: optax.Schedule, steps_per_epoch: int, mesh) -> Callable:
    """The compiled train step: (state, batch) -> (new state, metrics), state donated.

    `batch` holds global arrays "image" (B, S, S, 3) and "label" (B,). The PRNG key of a
    step is the config seed folded with the optimizer's step counter, so a resumed run
    draws the same dropout masks and AGDA parameters as one that never stopped.
    """
    mat = state_lib.is_mat(config)
    loss_cfg = dict(config.loss)
    agda_cfg = dict(config.agda)
    seed = int(config.seed)

    def train_step(state, batch):
        model, optimizer = nnx.merge(graphdef, state)
        step = optimizer.step[...]
        key = jax.random.fold_in(jax.random.key(seed), step)
        images, labels = batch["image"], batch["label"]
        alpha = alpha_at(config, step, steps_per_epoch)

        def loss_fn(model):
            if not mat:
                return objective.backbone_loss(model, images, labels, key)
            return objective.mat_loss(
                model, images, labels, key, alpha=alpha, loss_cfg=loss_cfg, agda_cfg=agda_cfg
            )

        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        if mat:
            model.centers.set_value(aux["centers"])  # not `[...] =`: see layers.BatchNorm
        metrics = {
            "loss": loss,
            "ce": aux["ce"],
            "accuracy": objective.accuracy(aux["logits"], labels),
            "learning_rate": schedule(step),
            "grad_norm": optax.tree.norm(grads),
            # After the update: a step that blows the weights up is caught at that step,
            # before its state can be saved, even though its own loss was still finite.
            "param_norm": optax.tree.norm(nnx.state(model, nnx.Param)),
        }
        if mat:
            metrics.update(alpha=alpha, regional=aux["regional"], intra=aux["intra"], inter=aux["inter"])
            for name in ("agda_ce", "match"):
                if name in aux:
                    metrics[name] = aux[name]
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return nnx.state((model, optimizer)), metrics

    replicated = parallel.replicated(mesh)
    return jax.jit(
        train_step,
        donate_argnums=(0,),
        out_shardings=(replicated, replicated),
        compiler_options=parallel.compiler_options(mesh),
    )
