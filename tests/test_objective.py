"""The stage-2 objective with AGDA's second pass on a small MAT."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from configs.ffpp import get_config
from mat_jax import objective
from mat_jax.models.mat import create_model


def test_mat_loss_with_agda_second_pass():
    config = get_config("tiny")  # B0 at width 0.25 / depth 0.2: the objective's code paths, cheap to compile
    cfg = config.model
    cfg.image_size, cfg.num_attention_maps, cfg.mid_dims = 64, 2, 16
    model = create_model(cfg, seed=0)
    x = jax.random.uniform(jax.random.key(0), (4, 64, 64, 3), minval=-1, maxval=1)
    y = np.asarray([0, 1, 0, 1])
    loss_cfg, agda_cfg = dict(config.loss), dict(config.agda)
    agda_cfg["kernel_size"] = 5  # reflect padding needs maps wider than the kernel at 32 px

    @nnx.jit
    def step(m, key):
        def fn(m):
            return objective.mat_loss(m, x, y, key, alpha=0.05, loss_cfg=loss_cfg, agda_cfg=agda_cfg)

        return nnx.value_and_grad(fn, has_aux=True)(m)

    (loss, aux), grads = step(nnx.clone(model), jax.random.key(1))
    (loss_b, _), _ = step(nnx.clone(model), jax.random.key(1))
    assert float(loss) == float(loss_b)  # deterministic for a key
    expected = aux["ce"] + 0.5 * aux["regional"] + aux["agda_ce"] + 0.1 * aux["match"]
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)
    assert float(aux["match"]) > 0
    # The augmented pass moves the centres a second time, from the clean pass's c_b.
    clean = np.asarray(aux["outputs"]["batch_centers"])
    assert np.any(clean != 0) and not np.allclose(np.asarray(aux["centers"]), clean)
    g = [np.asarray(v) for v in jax.tree.leaves(grads)]
    assert all(np.all(np.isfinite(v)) for v in g)
    assert np.any(np.asarray(grads["attentions"]["conv2"]["kernel"]) != 0)
