"""Checkpoints: the only module of `mat_jax` that imports orbax (v0 API).

Two kinds of checkpoint, both orbax composite directories with the same item names:

  * a *model* checkpoint (`save_model` / `load_model`): item "model" (the pure-dict
    `nnx.state(model)`: parameters, BatchNorm statistics, feature centres) and item
    "meta" (JSON). The weight importer writes these, and `config.init_from` starts from
    them.
  * a *training* checkpoint (`CheckpointManager`): items "model", "opt" (the optimizer
    state: step counter and AdamW moments) and "meta" (epoch, step, data position,
    alpha, best validation AUC, config). `<workdir>/checkpoints/<step>/` keeps the N
    latest (periodic and final saves); `<workdir>/best/<step>/` keeps the one with the
    best validation metric.

Model state is stored as a pure dict (`nnx.to_pure_dict`), so a checkpoint does not
depend on NNX's Variable classes and can be read by other tools. Saves are atomic
(orbax writes to a temporary directory and renames it on commit), and every save first
checks on the device that all saved arrays are finite: a NaN state raises
`NonFiniteStateError` and leaves the previous checkpoints as they were.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

MODEL, OPT, META = "model", "opt", "meta"
MODEL_FORMAT = "mat_jax.model/1"
TRAIN_FORMAT = "mat_jax.train/1"


# orbax's default replica-parallel save has every replica write a slice of each replicated
# array, and it cuts those slices with a program compiled per array shape: on 8 CPU devices
# that was 14.6 s of each save of MAT's ~200 small arrays, against well under a second with
# one replica writing each array whole. MAT's state (~80 MB at B4) gains nothing from the split.
ocp.type_handlers.register_type_handler(
    jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True
)


class NonFiniteStateError(FloatingPointError):
    """Raised instead of writing a checkpoint whose arrays hold NaN or Inf."""


# --------------------------------------------------------------------------- helpers


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a/b/0/c": leaf}; keys stringified (orbax stores them as strings)."""
    if isinstance(tree, Mapping):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}/"))
        return out
    return {prefix[:-1]: tree}


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _check_finite(tree, what: str) -> None:
    # One small reduction on the device and a single scalar to the host: cheap
    # compared with writing the checkpoint, and it catches a NaN that slipped past the
    # loss check (e.g. in BatchNorm statistics).
    if not bool(_all_finite(tree)):
        raise NonFiniteStateError(f"refusing to save {what}: the state holds NaN or Inf values")


def _abstract(tree):
    """Shape/dtype/sharding targets so that orbax restores straight onto our shardings."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _describe_mismatch(directory, stored: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    """None if `stored` (flattened checkpoint metadata) fits `target`, else a readable report."""
    missing = sorted(set(target) - set(stored))
    unexpected = sorted(set(stored) - set(target))
    shapes = [
        f"{k}: checkpoint {tuple(stored[k].shape)} vs model {tuple(target[k].shape)}"
        for k in sorted(set(stored) & set(target))
        if tuple(getattr(stored[k], "shape", ())) != tuple(np.shape(target[k]))
    ]
    if not (missing or unexpected or shapes):
        return None
    lines = [f"checkpoint {directory} does not fit the model:"]
    for title, items in (("missing in checkpoint", missing), ("not in model", unexpected), ("shape", shapes)):
        if items:
            more = f" ... (+{len(items) - 8} more)" if len(items) > 8 else ""
            lines.append(f"  {title} ({len(items)}): {', '.join(items[:8])}{more}")
    return "\n".join(lines)


def _checkpointer() -> ocp.Checkpointer:
    # Handlers named per item, so that metadata and partial restores work on a
    # checkpoint this process did not write.
    return ocp.Checkpointer(
        ocp.CompositeCheckpointHandler(
            **{
                MODEL: ocp.StandardCheckpointHandler(),
                OPT: ocp.StandardCheckpointHandler(),
                META: ocp.JsonCheckpointHandler(),
            }
        )
    )


def _tree_metadata(step_dir: epath.Path, item: str) -> dict[str, Any]:
    ckptr = _checkpointer()
    meta = ckptr.metadata(step_dir).item_metadata
    tree = meta[item]
    if tree is None:
        raise ValueError(f"checkpoint {step_dir} has no {item!r} item")
    return _flatten(tree.tree if hasattr(tree, "tree") else tree)


def _read_json(step_dir: epath.Path) -> dict[str, Any]:
    path = step_dir / META / "metadata"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _is_composite(path: epath.Path) -> bool:
    return (path / MODEL).is_dir()


def _step_dirs(path: epath.Path) -> list[int]:
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and _is_composite(p))


def _absolute(directory: str | os.PathLike) -> epath.Path:
    """`directory` as orbax accepts it: local paths made absolute (orbax refuses relative ones)."""
    path = epath.Path(directory)
    return path if "://" in str(directory) else path.absolute()


def resolve(directory: str | os.PathLike) -> epath.Path:
    """The composite checkpoint directory that `directory` names.

    Accepts a model checkpoint (`save_model`), one step of a training run
    (`<workdir>/checkpoints/1000`), a manager directory (`<workdir>/checkpoints` or
    `<workdir>/best`: its latest step) or a workdir (its best checkpoint if there is
    one, else its latest).
    """
    path = _absolute(directory)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if _is_composite(path):
        return path
    for sub in ("", "best", "checkpoints"):
        steps = _step_dirs(path / sub if sub else path)
        if steps:
            return (path / sub if sub else path) / str(steps[-1])
    raise FileNotFoundError(
        f"no checkpoint in {directory}: expected a 'model' item, numbered step directories, "
        "or a workdir with best/ or checkpoints/"
    )


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON meta of the checkpoint `directory` resolves to (see `resolve`)."""
    return _read_json(resolve(directory))


# --------------------------------------------------------------------------- model checkpoints


def save_model(directory: str | os.PathLike, model: nnx.Module, meta: Mapping[str, Any] | None = None) -> str:
    """Writes `nnx.state(model)` and `meta` as an orbax checkpoint; returns its path.

    The directory must not exist yet (a good checkpoint is never overwritten). `meta`
    must be JSON-serialisable; "format" and "model" (the class name) are added.
    """
    path = _absolute(directory)
    if path.exists():
        raise FileExistsError(f"refusing to overwrite existing checkpoint {path}")
    state = nnx.to_pure_dict(nnx.state(model))
    _check_finite(state, f"model checkpoint {path}")
    full_meta = {"format": MODEL_FORMAT, "model": type(model).__name__, **dict(meta or {})}
    ckptr = _checkpointer()
    items = {MODEL: ocp.args.StandardSave(state), META: ocp.args.JsonSave(full_meta)}
    ckptr.save(path, args=ocp.args.Composite(**items))
    return str(path)


def load_model(directory: str | os.PathLike, model: nnx.Module) -> dict[str, Any]:
    """Restores a model checkpoint (or the model part of a training one) into `model`.

    `model` is updated in place, keeping its arrays' shardings; returns the meta dict.
    Raises FileNotFoundError / ValueError naming `directory` if there is no checkpoint
    or its names or shapes do not fit `model`.
    """
    step_dir = resolve(directory)
    state = nnx.state(model)
    target = nnx.to_pure_dict(state)
    report = _describe_mismatch(step_dir, _tree_metadata(step_dir, MODEL), _flatten(target))
    if report:
        raise ValueError(report)
    ckptr = _checkpointer()
    items = {MODEL: ocp.args.StandardRestore(_abstract(target))}
    restored = ckptr.restore(step_dir, args=ocp.args.Composite(**items))
    nnx.replace_by_pure_dict(state, restored[MODEL])
    nnx.update(model, state)
    return _read_json(step_dir)


# --------------------------------------------------------------------------- training checkpoints


def _item_handlers():
    return {MODEL: ocp.StandardCheckpointHandler(), OPT: ocp.StandardCheckpointHandler(),
            META: ocp.JsonCheckpointHandler()}


class CheckpointManager:
    """Training checkpoints of one workdir.

    `<workdir>/checkpoints/<step>/` keeps the `keep` most recent saves (the trainer saves
    periodically, at evaluation points and at the end); `<workdir>/best/<step>/` keeps the
    single checkpoint with the best validation metric, chosen by the caller. Both hold
    the items "model", "opt" and "meta". Saves are asynchronous (the arrays are copied
    off the device before `save` returns, so the next donated step is safe) and atomic:
    a run killed mid-save leaves only a temporary directory, ignored on restore.
    """

    def __init__(self, workdir: str | os.PathLike, *, keep: int = 3):
        root = _absolute(workdir)
        self.root = root
        # The trainer decides when to save; orbax keeps the `keep` newest and removes the
        # temporary directories of saves that a killed run left unfinished.
        self._latest = self._manager(root / "checkpoints", keep, "latest")
        self._best = self._manager(root / "best", 1, "best")

    @staticmethod
    def _manager(directory: epath.Path, keep: int, name: str) -> ocp.CheckpointManager:
        # Each manager needs barrier names of its own. orbax names the barrier of an async
        # save after the step directory alone ("async_write_complete.<step>"), so with
        # several processes the best and the latest save of the same step (an eval step
        # is also a checkpoint step) met in one barrier: "Barrier ... is already
        # ongoing", or a hang in the final wait. A prefix per manager keeps them apart.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name),
        )
        return ocp.CheckpointManager(directory, options=options, item_handlers=_item_handlers())

    # ---- queries
    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._latest.all_steps())

    def best_step(self) -> int | None:
        return self._best.latest_step()

    @property
    def directory(self) -> epath.Path:
        return self.root / "checkpoints"

    @property
    def best_directory(self) -> epath.Path:
        return self.root / "best"

    # ---- saving
    def _save(self, mngr, step: int, model, optimizer, meta: Mapping[str, Any], what: str) -> bool:
        items = {MODEL: nnx.to_pure_dict(nnx.state(model))}
        if optimizer is not None:
            items[OPT] = nnx.to_pure_dict(nnx.state(optimizer))
        _check_finite(items, f"{what} checkpoint at step {step}")
        args = {k: ocp.args.StandardSave(v) for k, v in items.items()}
        args[META] = ocp.args.JsonSave({"format": TRAIN_FORMAT, "step": int(step), **dict(meta)})
        if step in mngr.all_steps():
            return False  # already saved (e.g. a resumed run at its restore step)
        return mngr.save(int(step), args=ocp.args.Composite(**args), force=True)

    def save(self, step: int, model, optimizer, meta: Mapping[str, Any]) -> bool:
        """Saves model, optimizer and meta at `step`; NonFiniteStateError on NaN/Inf state."""
        return self._save(self._latest, step, model, optimizer, meta, "training")

    def save_best(self, step: int, model, meta: Mapping[str, Any]) -> bool:
        """Replaces the best checkpoint with this one (model and meta only)."""
        return self._save(self._best, step, model, None, meta, "best")

    def wait(self) -> None:
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self._latest.close()
        self._best.close()

    # ---- restoring
    def restore(self, model, optimizer, step: int | None = None) -> dict[str, Any]:
        """Restores model and optimizer in place from `step` (default: latest); returns meta."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no training checkpoint under {self.directory}")
        step_dir = self.directory / str(step)
        model_state, opt_state = nnx.state(model), nnx.state(optimizer)
        targets = {MODEL: nnx.to_pure_dict(model_state), OPT: nnx.to_pure_dict(opt_state)}
        for item, target in targets.items():
            report = _describe_mismatch(step_dir / item, _tree_metadata(step_dir, item), _flatten(target))
            if report:
                raise ValueError(report)
        args = {k: ocp.args.StandardRestore(_abstract(v)) for k, v in targets.items()}
        args[META] = ocp.args.JsonRestore()
        restored = self._latest.restore(step, args=ocp.args.Composite(**args))
        nnx.replace_by_pure_dict(model_state, restored[MODEL])
        nnx.replace_by_pure_dict(opt_state, restored[OPT])
        nnx.update(model, model_state)
        nnx.update(optimizer, opt_state)
        return dict(restored[META])
