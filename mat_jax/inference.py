"""A trained model for inference: restore it from a workdir or checkpoint, score batches of faces.

Shared by `mat_jax.predict` (videos and images in, verdicts out) and `mat_jax.export`
(analysis bundles and serving models).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mat_jax import checkpointing, parallel
from mat_jax import state as state_lib


@dataclasses.dataclass
class Trained:
    config: ml_collections.ConfigDict
    model: nnx.Module
    meta: dict[str, Any]
    path: str  # the checkpoint directory actually restored

    @property
    def is_mat(self) -> bool:
        return state_lib.is_mat(self.model)

    @property
    def image_size(self) -> int:
        return int(self.config.model.image_size)


def load_trained(checkpoint: str, config: ml_collections.ConfigDict | None = None) -> Trained:
    """Restores a model from a workdir (its best checkpoint, else its latest) or a checkpoint dir.

    The config stored with a training checkpoint is used unless `config` is given; a
    checkpoint written by `mat-jax-import` stores none, so it needs `config`.
    """
    path = checkpointing.resolve(checkpoint)
    meta = checkpointing.read_meta(path)
    try:
        config = state_lib.checkpoint_config(meta, config)
    except ValueError as e:
        raise ValueError(f"checkpoint {path} {e}") from None
    model = state_lib.create_model(config)
    checkpointing.load_model(path, model)
    return Trained(config=config, model=model, meta=meta, path=str(path))


class Scorer:
    """Jitted eval forward over fixed-size batches (one compilation whatever the input count).

    `__call__(images)` takes (n, S, S, 3) float32 in [-1, 1] (as `mat_jax.data.decode.eval_images` makes
    them) and returns numpy arrays:
    `score` (n,) P(fake), `logits` (n, C) and, for MAT, `attention_maps` (n, h, w, M) and
    `feature_matrix` (n, M, N).
    """

    def __init__(self, trained: Trained, batch_size: int = 8):
        self.batch_size = batch_size
        graphdef, state = nnx.split(trained.model)
        self._state = state
        mat = trained.is_mat

        @functools.partial(jax.jit, compiler_options=parallel.compiler_options())
        def forward(state, images):
            model = nnx.merge(graphdef, state)
            out = model(images, train=False)
            keep = {"logits": out["logits"]}
            if mat:
                keep.update(attention_maps=out["attention_maps"], feature_matrix=out["feature_matrix"])
            keep["score"] = jax.nn.softmax(out["logits"].astype(jnp.float32), axis=-1)[:, 1]
            return keep

        self._forward = forward

    def __call__(self, images: np.ndarray, pixels: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """`pixels` (the uint8 crops, which the ONNX backend scores) is not needed here."""
        del pixels
        images = np.asarray(images, np.float32)
        n = images.shape[0]
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, self.batch_size):
            chunk = images[start:start + self.batch_size]
            pad = self.batch_size - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            out = jax.device_get(self._forward(self._state, chunk))
            parts.append({k: v[: self.batch_size - pad] for k, v in out.items()})
        if not parts:
            raise ValueError("no images to score")
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

