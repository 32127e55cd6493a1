"""The training loop: `train_and_evaluate(config, workdir)`.

Both stages of the official recipe (docs/reference.md, "Training recipe"):

  * `config.stage == "pretrain"`: the backbone alone, cross-entropy on its own logits.
  * `config.stage == "mat"`: MAT, started from `config.init_from` (a stage-1 checkpoint
    loads into the backbone) or from random weights, trained with
    CE + 0.5 RIL + CE(AGDA image) + 0.1 match (`objective.mat_loss`); the centre step
    alpha decays 0.9 per epoch.

The model, optimizer and starting point come from `mat_jax.state`, the compiled step from
`mat_jax.step`; this module runs them: resume, the input stream, metrics (fetched only at
log and checkpoint steps), periodic validation and best-checkpoint selection, saves, a
NaN/Inf stop before any save of that state, SIGTERM checkpoints, the final evaluation.

Exact resume: the step is the only data position the input pipeline needs, and the
step counter, parameters, optimizer moments, BatchNorm statistics and centres are all
in the checkpoint; alpha, the learning rate and every PRNG key are functions of the
step. So a run restarted with the same command continues bit for bit.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath
from flax import nnx

from mat_jax import checkpointing, evaluate, parallel, state as state_lib, step as step_lib
from mat_jax.data import sizes, train_data


class Interrupted(RuntimeError):
    """SIGTERM (e.g. a spot VM's preemption notice): a checkpoint of `step` was saved first."""

    def __init__(self, step: int):
        super().__init__(f"stopped by SIGTERM after step {step}; its checkpoint is saved: "
                         "run the same command again to resume from it")
        self.step = step


class _StopRequest:
    """Turns SIGTERM into a flag the loop checks between steps (the handler itself does no work)."""

    def __init__(self, enabled: bool):
        self.requested = False
        self._previous = None
        # Signal handlers can only be installed from the main thread.
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def install(self) -> None:
        if self.enabled:
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint after the current step, then stopping")
        self.requested = True

    def restore(self) -> None:
        if self.enabled and self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def agreed(self, at_sync_point: bool) -> bool:
        """True when any process was asked to stop, so that all of them save the same step.

        One process answers at every step. Several agree through a collective, which blocks,
        so only at steps that sync anyway (`at_sync_point`: log and checkpoint steps).
        """
        if not self.enabled:
            return False
        if jax.process_count() == 1:
            return self.requested
        if not at_sync_point:
            return False
        return bool(np.max(parallel.allgather(np.asarray([int(self.requested)], np.int32))))


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; raised before any checkpoint is written."""


# --------------------------------------------------------------------------- building blocks


def total_steps(config, steps_per_epoch: int) -> int:
    n = int(config.train.num_train_steps)
    return n if n > 0 else int(config.train.epochs) * steps_per_epoch


def _flatten_metrics(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten_metrics(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def _check_finite(fetched: list[tuple[int, dict[str, np.ndarray]]], mngr) -> None:
    for step, m in fetched:
        bad = [k for k in ("loss",) + tuple(sorted(m)) if k in m and not np.isfinite(m[k])]
        if bad:
            latest = mngr.latest_step()
            where = f"step {latest} in {mngr.directory}" if latest is not None else "none written"
            raise NonFiniteLossError(
                f"non-finite training {bad[0]} ({float(m[bad[0]])}) at step {step} "
                f"(terms: {', '.join(f'{k}={float(v):.4g}' for k, v in sorted(m.items()))}); stopped "
                f"before writing any checkpoint of it. Last good checkpoint: {where}. Lower "
                "config.optim.learning_rate or check the data."
            )


# --------------------------------------------------------------------------- the loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, returns a summary.

    Returns {"step", "history": [(step, {metric: mean}), ...] at log points,
    "best": {"step", "metric", "value"}, "final_eval": metrics of the final eval split}.
    Raises NonFiniteLossError naming the step when a loss term or the parameter norm is NaN/Inf,
    before any checkpoint of that state is written.
    """
    workdir_path = epath.Path(workdir)
    is_main = jax.process_index() == 0

    # ----------------------------------------------------------------- Set up logging
    if is_main:
        workdir_path.mkdir(parents=True, exist_ok=True)
        (workdir_path / "config.json").write_text(config.to_json_best_effort(indent=2))
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_main, asynchronous=True)
    logging.info(
        "process %d/%d, %d local / %d global devices: %s",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
        jax.devices()[0].device_kind,
    )

    # ----------------------------------------------------------------- Set up Mesh
    mesh = parallel.create_mesh()
    parallel.check_batch_size(int(config.train.batch_size), mesh)
    parallel.check_batch_size(int(config.train.eval_batch_size), mesh)

    with jax.set_mesh(mesh):
        # ------------------------------------------------------------- Input Pipeline
        steps_per_epoch = sizes.train_steps_per_epoch(config)
        num_steps = total_steps(config, steps_per_epoch)
        t = config.train
        eval_every = int(t.eval_every_steps) or int(t.eval_every_epochs) * steps_per_epoch
        eval_split = str(config.train.eval_split)
        logging.info("%d steps per epoch, %d steps in all", steps_per_epoch, num_steps)

        # ------------------------------------------------------------- Create Model & Optimizer
        tx, schedule = state_lib.create_optimizer(config, steps_per_epoch)
        graphdef, state = state_lib.create_train_state(config, mesh, tx)
        model, optimizer = nnx.merge(graphdef, state)
        if is_main:
            n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
            writer.write_hparams({"num_params": n_params, "stage": config.stage,
                                  "backbone": config.model.backbone,
                                  "global_batch": int(config.train.batch_size)})

        # ------------------------------------------------------------- Load Checkpoint
        mngr = checkpointing.CheckpointManager(workdir, keep=int(config.train.keep_checkpoints))
        best = {"step": None, "metric": str(config.train.best_metric), "value": -math.inf}
        start_step = 0
        if mngr.latest_step() is not None:
            meta = mngr.restore(model, optimizer)
            start_step = int(meta["step"])
            if meta.get("best_value") is not None:
                best.update(step=meta.get("best_step"), value=float(meta["best_value"]))
            logging.info("resumed from %s/%d", mngr.directory, start_step)
        elif config.init_from:
            what = state_lib.init_from(config.init_from, model)
            logging.info("initialised the %s from %s", what, config.init_from)
        state = nnx.state((model, optimizer))
        if int(jax.device_get(optimizer.step[...])) != start_step:
            raise RuntimeError(f"optimizer step {optimizer.step[...]} != checkpoint step {start_step}")
        del model, optimizer  # the loop owns `state`; the step donates it

        # ------------------------------------------------------------- Update Step
        train_step = step_lib.make_train_step(config, graphdef, schedule, steps_per_epoch, mesh)

        # ------------------------------------------------------------- Setup Evals
        model_graphdef = nnx.split(nnx.merge(graphdef, state)[0])[0]
        evaluator = evaluate.Evaluator(config, model_graphdef, mesh)

        def model_state(state):
            return state[0]

        def meta_at(step: int) -> dict[str, Any]:
            return {
                "step": step,
                "epoch": step / steps_per_epoch,
                "data_position": step,  # global batches consumed; the iterator's start_step
                "alpha": float(config.loss.alpha * config.loss.alpha_decay ** (step // steps_per_epoch)),
                "learning_rate": float(schedule(step)),
                "best_step": best["step"],
                "best_value": best["value"] if math.isfinite(best["value"]) else None,
                "best_metric": best["metric"],
                "stage": config.stage,
                "model": state_lib.model_kind(config),
                "config": json.loads(config.to_json_best_effort()),
            }

        def save(step: int, state) -> None:
            model, optimizer = nnx.merge(graphdef, state)
            mngr.save(step, model, optimizer, meta_at(step))

        # ------------------------------------------------------------- Train Loop
        hooks = []
        report_progress = periodic_actions.ReportProgress(
            num_train_steps=num_steps, writer=writer, every_steps=int(config.train.log_every_steps)
        )
        if is_main:
            hooks.append(report_progress)
            if int(config.train.profile_steps) > 0:
                # A jax.profiler trace of a few steps into the workdir (TensorBoard's profile tab).
                hooks.append(periodic_actions.Profile(
                    logdir=workdir, num_profile_steps=int(config.train.profile_steps),
                    first_profile=start_step + int(config.train.profile_first_step),
                    every_secs=None,
                ))
        stop = _StopRequest(bool(config.train.checkpoint_on_sigterm))
        train_iter = train_data.create_train_iterator(config, start_step=start_step)
        pending: list[tuple[int, dict[str, jax.Array]]] = []
        history: list[tuple[int, dict[str, float]]] = []
        log_every = int(config.train.log_every_steps)
        ckpt_every = int(config.train.checkpoint_every_steps)

        def flush_metrics(step: int) -> None:
            # The only host<->device sync of the loop: every step's metrics since the last
            # flush, so a NaN is attributed to the exact step that produced it.
            fetched = [(s, {k: np.asarray(v) for k, v in m.items()}) for s, m in jax.device_get(pending)]
            pending.clear()
            if not fetched:
                return
            _check_finite(fetched, mngr)
            means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[-1][1]}
            history.append((step, means))
            writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})

        # Wall-clock split of this call (the demo prints it): compile is the first step's
        # call, eval every evaluation, train the rest of the loop.
        times = {"compile": 0.0, "train": 0.0, "eval": 0.0}
        t_loop = time.perf_counter()
        try:
            stop.install()
            logging.info("training from step %d to %d", start_step, num_steps)
            step = start_step
            for step in range(start_step + 1, num_steps + 1):
                with report_progress.timed("data"):
                    host_batch = next(train_iter)
                with report_progress.timed("train_step"):
                    t_step = time.perf_counter()
                    state, metrics = train_step(state, parallel.global_batch(host_batch, mesh))
                    if step == start_step + 1:  # the first call traces and compiles
                        times["compile"] = time.perf_counter() - t_step
                pending.append((step, metrics))
                for hook in hooks:
                    hook(step)

                is_eval = bool(eval_split) and (step % eval_every == 0 or step == num_steps)
                is_ckpt = step % ckpt_every == 0 or step == num_steps or is_eval
                if step % log_every == 0 or is_ckpt:
                    flush_metrics(step)  # raises on NaN/Inf, before the save below
                if is_eval:
                    with report_progress.timed("eval"):
                        t_eval = time.perf_counter()
                        results = evaluator.run(model_state(state), eval_split, workdir=workdir, step=step,
                                                fit=True)
                        times["eval"] += time.perf_counter() - t_eval
                    flat = _flatten_metrics(results)
                    writer.write_scalars(step, {f"{eval_split}/{k}": v for k, v in flat.items()})
                    value = flat.get(best["metric"])
                    if value is None:
                        raise KeyError(
                            f"config.train.best_metric={best['metric']!r} is not among {sorted(flat)}"
                        )
                    if value > best["value"] or best["step"] is None:
                        best.update(step=step, value=value)
                        evaluate.save_choices(workdir, eval_split, results["fitted"])
                        # Best first: a run killed between the two saves redoes this step's
                        # evaluation after resuming and finds the best already written.
                        model, _ = nnx.merge(graphdef, state)
                        mngr.save_best(step, model, meta_at(step))
                if is_ckpt:
                    with report_progress.timed("checkpoint"):
                        save(step, state)
                if stop.agreed(at_sync_point=step % log_every == 0 or is_ckpt):
                    flush_metrics(step)  # a NaN state is never saved, not even here
                    if not is_ckpt:
                        save(step, state)
                    mngr.wait()
                    raise Interrupted(step)
            flush_metrics(step)
            mngr.wait()
            writer.flush()
            times["train"] = time.perf_counter() - t_loop - times["compile"] - times["eval"]

            # ------------------------------------------------------------- Final evaluation
            fingerprint = state_lib.params_fingerprint(model_state(state))
            logging.info("process %d: final parameters sha256 %s", jax.process_index(), fingerprint)
            summary: dict[str, Any] = {
                "step": step, "history": history, "best": dict(best), "params_sha256": fingerprint,
                "times": times,
            }
            final_split = str(config.train.final_eval_split)
            if final_split:
                model, _ = nnx.merge(graphdef, state)
                best_step = mngr.best_step()
                evaluated, path = step, None
                if best_step is not None:
                    path = str(checkpointing.resolve(mngr.best_directory))
                    checkpointing.load_model(path, model)
                    evaluated = best_step
                    logging.info("final %s eval of the best checkpoint, step %d", final_split, best_step)
                t_eval = time.perf_counter()
                # Thresholds and temperature chosen on val by the model that test sees (saved when
                # that validation found it best; scored again only for runs older than that file).
                fitted = evaluate.val_choices(evaluator, nnx.state(model), config, workdir, step=evaluated,
                                              checkpoint=path, split=final_split)
                results = evaluator.run(
                    nnx.state(model), final_split, workdir=workdir, step=evaluated, checkpoint=path,
                    attention_examples=8, fitted=fitted,
                )
                times["eval"] += time.perf_counter() - t_eval
                flat = _flatten_metrics(results)
                writer.write_scalars(step, {f"{final_split}/{k}": v for k, v in flat.items()})
                summary["final_eval"] = results
        finally:
            stop.restore()
            # Also on NaN/Inf or Ctrl-C: let in-flight saves of good states finish, flush logs.
            mngr.close()
            writer.close()
    return summary
