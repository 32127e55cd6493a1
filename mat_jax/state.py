"""The model and its state: what a config builds, how it starts, and which model a checkpoint holds.

The one owner of these questions; train, evaluate, inference, bench, export and the weight
importer ask here:

* `model_kind(config)` / `is_mat(...)`: "MAT" for stage 2, else the backbone alone (its class
  name, e.g. "EfficientNet" or "Xception"). Checkpoints store it as `meta["model"]`.
* `create_model(config)`: the model of `config.stage`, parameters drawn from `config.seed`.
* `create_optimizer(config, steps_per_epoch)`: AdamW and its step-decay schedule.
* `create_train_state` / `create_model_state`: (graphdef, state) replicated over a mesh.
* `init_from(path, model)`: a stage-1 run or imported weights into the model (or into MAT's
  backbone when the checkpoint holds a backbone alone).
* `checkpoint_config(meta, config)`: the config a checkpoint was trained with, made to build
  the model that checkpoint holds.
* `params_fingerprint(state)`: a hash of a process's weights (equal on every host).
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from mat_jax import checkpointing, parallel
from mat_jax.models import mat as mat_lib

MAT = "MAT"
STAGES = ("pretrain", "mat")
_BACKBONE_CLASSES = {"efficientnet": "EfficientNet", "xception": "Xception"}


def model_kind(config) -> str:
    """The class of the model `config` builds: "MAT" (stage "mat") or the backbone's class name."""
    if config.stage not in STAGES:
        raise ValueError(f"config.stage must be 'pretrain' or 'mat', got {config.stage!r}")
    if config.stage == "mat":
        return MAT
    name = str(config.model.backbone).lower()
    for prefix, cls in _BACKBONE_CLASSES.items():
        if name.startswith(prefix):
            return cls
    raise ValueError(f"unknown backbone {config.model.backbone!r}: use efficientnet-b0..b7 or xception")


def is_mat(what) -> bool:
    """Whether a config, a checkpoint's meta dict or a model is (or holds) the full MAT."""
    if isinstance(what, nnx.Module):
        return isinstance(what, mat_lib.MAT)
    if isinstance(what, ml_collections.ConfigDict):
        return model_kind(what) == MAT
    if isinstance(what, Mapping):
        return what.get("model") == MAT
    raise TypeError(f"is_mat: expected a config, a checkpoint's meta or a model, got {type(what).__name__}")


def create_model(config, seed: int | None = None) -> nnx.Module:
    """The model of `config.stage`: the backbone alone (pretrain) or MAT, drawn from `seed`
    (default `config.seed`)."""
    seed = int(config.seed if seed is None else seed)
    if model_kind(config) == MAT:
        return mat_lib.MAT(config.model, rngs=nnx.Rngs(seed))
    return mat_lib.create_backbone(config.model, rngs=nnx.Rngs(seed), dtype=jnp.dtype(config.model.dtype))


# --------------------------------------------------------------------------- optimizer


def create_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """StepLR as the reference: lr * decay ** (epoch // decay_epochs), epoch = step // steps_per_epoch."""
    o = config.optim
    return optax.exponential_decay(
        init_value=float(o.learning_rate),
        transition_steps=max(1, int(o.lr_decay_epochs) * steps_per_epoch),
        decay_rate=float(o.lr_decay),
        staircase=True,
    )


def create_optimizer(config, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with PyTorch's defaults (eps 1e-8, decoupled decay on every parameter)."""
    schedule = create_schedule(config, steps_per_epoch)
    o = config.optim
    tx = optax.adamw(schedule, b1=float(o.b1), b2=float(o.b2), eps=1e-8, weight_decay=float(o.weight_decay))
    return tx, schedule


# --------------------------------------------------------------------------- state on a mesh


def _replicate(state, mesh):
    # Every process holds the same host values: device_put onto a global sharding is what
    # multi-host JAX expects then.
    return jax.device_put(jax.tree.map(np.asarray, state), parallel.replicated(mesh))


def create_train_state(config, mesh, tx: optax.GradientTransformation):
    """(graphdef, state) of (model, optimizer), every array replicated over `mesh`.

    The model is initialised on the host (the model code draws concrete-key parameters
    with numpy, ~1 s for B4), identically on every process from `config.seed`.
    """
    model = create_model(config)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    return graphdef, _replicate(state, mesh)


def create_model_state(config, mesh):
    """(graphdef, state) of the model alone, replicated over `mesh` (evaluation, benchmarks)."""
    graphdef, state = nnx.split(create_model(config))
    return graphdef, _replicate(state, mesh)


# --------------------------------------------------------------------------- starting points


def init_from(path: str, model: nnx.Module) -> str:
    """Loads `config.init_from` into the model, or into MAT's backbone when the checkpoint holds
    a backbone alone (a stage-1 run, `mat-jax-import --target=backbone`); returns which."""
    meta = checkpointing.read_meta(path)
    target, what = model, "model"
    if is_mat(model) and not is_mat(meta):
        target, what = model.backbone, "backbone"
    checkpointing.load_model(path, target)
    return what


def checkpoint_config(meta: Mapping[str, Any], config: ml_collections.ConfigDict | None = None):
    """The config to rebuild a checkpoint's model: `config` if given, else the one stored with it.

    A MAT checkpoint read with a stage-1 config (the imported official weights with
    configs/ffpp.py:stage=pretrain, say) builds MAT, not the backbone. The result is locked.
    """
    if config is None:
        if "config" not in meta:
            raise ValueError(
                "stores no config (made by mat-jax-import?): pass --config=configs/ffpp.py "
                "(or the config it was trained with)"
            )
        config = ml_collections.ConfigDict(meta["config"])
    else:
        config = config.copy_and_resolve_references()
    if is_mat(meta) and config.stage != "mat":
        config.stage = "mat"
    config.lock()
    return config


def params_fingerprint(model_state) -> str:
    """sha256 of this process's own copy of every parameter, BatchNorm statistic and centre.

    Replicated arrays live once per host; equal fingerprints across processes show that
    every host holds bit-identical weights (logged at the end of training).
    """
    digest = hashlib.sha256()
    for path, value in sorted(nnx.to_flat_state(model_state), key=lambda kv: tuple(map(str, kv[0]))):
        array = value.get_value() if hasattr(value, "get_value") else value
        local = np.asarray(array.addressable_data(0)) if isinstance(array, jax.Array) else np.asarray(array)
        digest.update("/".join(map(str, path)).encode())
        digest.update(np.ascontiguousarray(local).tobytes())
    return digest.hexdigest()
