"""Checkpoints: model save/load for weight import and init_from, the training manager."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mat_jax import checkpointing
from mat_jax.models import mat as mat_lib

TINY = {"backbone": "efficientnet-b0", "width": 0.25, "depth": 0.2, "num_classes": 2}


def tiny_backbone(seed=0, **overrides):
    return mat_lib.create_backbone({**TINY, **overrides}, rngs=nnx.Rngs(seed))


def flat(module) -> dict[str, np.ndarray]:
    return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(module))}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def perturb_batch_stats(model, value: float):
    """Gives BatchNorm statistics non-default values, so a round trip has something to carry."""
    for _, bn in nnx.iter_modules(model):
        if hasattr(bn, "mean") and isinstance(bn.mean, nnx.BatchStat):
            bn.mean[...] = bn.mean[...] + value


@pytest.fixture(scope="module")
def trained():
    """A tiny backbone and AdamW state after one update (non-trivial moments and count)."""
    model = tiny_backbone(0)
    perturb_batch_stats(model, 0.25)
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3, weight_decay=1e-6), wrt=nnx.Param)

    @nnx.jit
    def update(model, optimizer):
        grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
        optimizer.update(model, grads)

    update(model, optimizer)
    return model, optimizer


def test_relative_paths_save_resolve_and_load(trained, tmp_path, monkeypatch):
    """README's commands pass relative workdirs (`--workdir=workdir/demo`); orbax wants absolute ones."""
    model, optimizer = trained
    monkeypatch.chdir(tmp_path)
    checkpointing.save_model("rel/model", model, {"source": "test"})
    mngr = checkpointing.CheckpointManager("rel/work", keep=1)
    mngr.save_best(5, model, {"note": "relative"})
    mngr.wait()
    mngr.close()
    for path in ("rel/model", "rel/work", "rel/work/best", "rel/work/best/5"):
        other = tiny_backbone(1)
        checkpointing.load_model(path, other)
        assert_same(flat(other), flat(model))
    assert checkpointing.resolve("rel/work") == tmp_path / "rel" / "work" / "best" / "5"
    assert checkpointing.read_meta("rel/work")["note"] == "relative"


def test_save_and_load_model_round_trip(trained, tmp_path):
    model, _ = trained
    path = checkpointing.save_model(tmp_path / "m", model, {"source": "test", "epoch": 3})
    other = tiny_backbone(1)
    assert not np.array_equal(flat(other)["conv_stem/kernel"], flat(model)["conv_stem/kernel"])
    meta = checkpointing.load_model(path, other)
    assert meta["source"] == "test" and meta["epoch"] == 3 and meta["model"] == "EfficientNet"
    assert_same(flat(other), flat(model))  # parameters and BatchNorm statistics
    assert checkpointing.read_meta(path)["source"] == "test"


def test_load_model_errors_name_the_directory(trained, tmp_path):
    model, _ = trained
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        checkpointing.load_model(missing, tiny_backbone())
    path = checkpointing.save_model(tmp_path / "m", model, {})
    with pytest.raises(ValueError, match=rf"{path}.*does not fit") as err:
        checkpointing.load_model(path, tiny_backbone(width=0.5))
    assert "blocks/0/bn1/bias: checkpoint (8,) vs model (16,)" in str(err.value)
    with pytest.raises(ValueError, match="not in model|missing in checkpoint"):
        checkpointing.load_model(path, tiny_backbone(depth=0.4))  # more blocks
    with pytest.raises(FileExistsError):
        checkpointing.save_model(path, model, {})  # never overwrites a checkpoint
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        checkpointing.load_model(empty, model)


def test_save_model_refuses_nan(tmp_path):
    model = tiny_backbone()
    model.fc.kernel[...] = model.fc.kernel[...].at[0, 0].set(jnp.nan)
    with pytest.raises(checkpointing.NonFiniteStateError):
        checkpointing.save_model(tmp_path / "nan", model, {})
    assert not (tmp_path / "nan").exists()


def test_manager_keep_best_and_exact_restore(trained, tmp_path):
    model, optimizer = trained
    mngr = checkpointing.CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        mngr.save(step, model, optimizer, {"epoch": step, "best_value": 0.5})
    mngr.save_best(2, model, {"best_value": 0.9})
    mngr.wait()
    assert mngr.all_steps() == [2, 3] and mngr.latest_step() == 3 and mngr.best_step() == 2
    assert mngr.save(3, model, optimizer, {}) is False  # an existing step is never rewritten
    mngr.close()

    fresh = tiny_backbone(7)
    fresh_opt = nnx.Optimizer(fresh, optax.adamw(1e-3, weight_decay=1e-6), wrt=nnx.Param)
    mngr = checkpointing.CheckpointManager(tmp_path, keep=2)
    meta = mngr.restore(fresh, fresh_opt)
    assert meta["step"] == 3 and meta["epoch"] == 3 and meta["format"] == checkpointing.TRAIN_FORMAT
    assert_same(flat(fresh), flat(model))
    assert_same(flat(fresh_opt), flat(optimizer))  # step counter, AdamW moments
    assert int(fresh_opt.step[...]) == 1
    mngr.close()
    # A workdir resolves to its best checkpoint (model only), a manager directory to its latest.
    best = checkpointing.resolve(tmp_path)
    assert best.name == "2" and best.parent.name == "best"
    assert checkpointing.resolve(tmp_path / "checkpoints").name == "3"
    assert checkpointing.read_meta(tmp_path)["best_value"] == 0.9


def test_manager_refuses_nan_state_and_keeps_previous(trained, tmp_path):
    model, optimizer = trained
    mngr = checkpointing.CheckpointManager(tmp_path, keep=3)
    mngr.save(1, model, optimizer, {})
    mngr.wait()
    broken = nnx.clone(model)
    broken.bn0.var[...] = broken.bn0.var[...].at[0].set(jnp.inf)  # not a parameter: BN statistics
    with pytest.raises(checkpointing.NonFiniteStateError, match="step 2"):
        mngr.save(2, broken, optimizer, {})
    mngr.wait()
    assert mngr.all_steps() == [1]
    restored = tiny_backbone(3)
    checkpointing.load_model(tmp_path / "checkpoints" / "1", restored)
    assert_same(flat(restored), flat(model))
    mngr.close()


def test_restore_into_another_architecture_fails_clearly(trained, tmp_path):
    model, optimizer = trained
    mngr = checkpointing.CheckpointManager(tmp_path)
    mngr.save(5, model, optimizer, {})
    mngr.wait()
    other = tiny_backbone(0, width=0.5)
    other_opt = nnx.Optimizer(other, optax.adamw(1e-3), wrt=nnx.Param)
    with pytest.raises(ValueError, match="does not fit"):
        mngr.restore(other, other_opt)
    mngr.close()
