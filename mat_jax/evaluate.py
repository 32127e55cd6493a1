"""Evaluation: per-frame scores from a jitted eval step, frame and video metrics, result files.

The protocol of the official `evaluation.py` (docs/reference.md, "Evaluation protocol"): frame score =
softmax P(fake); video score = mean of its frame scores; ACC at 0.5, AUC (and here EER
and AP) at frame and video level, plus a per-method breakdown (each method vs the reals).
Padding rows of the last batch carry mask 0 and are dropped before any metric.

Files, written by process 0 under `<workdir>/eval/<name>/` (name defaults to the split):
  metrics.json  all metrics, the step and checkpoint evaluated, the records' root
  videos.csv    video_id, method, label, num_frames, num_tracks, score, prediction
  frames.csv    video_id, track_id, frame_index, method, label, score (a row per face)
  roc.png       frame- and video-level ROC curves (roc_methods_*.png: one curve per method)
  scores.png    histogram of P(fake) of real and fake frames
  attention.png the attention maps over a few faces (final evaluation, MAT, one process)
  history.jsonl one line of metrics per evaluation (periodic validation during training)
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from flax import nnx

from mat_jax import (assessment, checkpointing, eval_files, manifest, metrics as metrics_lib, parallel, plots,
                     state as state_lib)
from mat_jax.data import eval_data, records

THRESHOLDS_FILE = "thresholds.json"  # what a validation split chose (assessment.fit)


class Evaluator:
    """Runs the compiled eval step over a split; one instance per model graph (compiled once)."""

    def __init__(self, config, graphdef, mesh):
        self.config = config
        self.mesh = mesh

        def eval_step(model_state, images):
            model = nnx.merge(graphdef, model_state)
            logits = model(images, train=False)["logits"]
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, 1]

        # Scores stay sharded like the batch: each host later reads back its own rows.
        options = parallel.compiler_options(mesh)
        self._step = jax.jit(eval_step, out_shardings=parallel.data_sharding(mesh), compiler_options=options)

        def maps_step(model_state, images):
            return nnx.merge(graphdef, model_state)(images, train=False)["attention_maps"]

        # Compiled on first use only: the attention figure of a final evaluation.
        self._maps = jax.jit(maps_step, compiler_options=options)

    def scores(self, model_state, split: str, *, root: str | None = None) -> dict[str, np.ndarray]:
        """Per-frame P(fake) of every record of `split` (all hosts' records, padding removed)."""
        parts: dict[str, list] = {k: [] for k in ("label", "mask", "video_id", "frame_index", "track_id", "method")}
        device_scores = []
        it = eval_data.create_eval_iterator(self.config, split, root=root)
        for host_batch in it:
            images = parallel.global_batch({"image": host_batch["image"]}, self.mesh)["image"]
            # Dispatch only; scores are fetched once at the end so the loop never waits.
            device_scores.append(self._step(model_state, images))
            for k in parts:
                parts[k].append(host_batch[k])
        if not device_scores:
            raise ValueError(f"split {split!r} under {root or self.config.data.root} holds no records")
        local = {k: np.concatenate(v) for k, v in parts.items()}
        local["score"] = np.concatenate([parallel.host_local(s, self.mesh) for s in device_scores])
        out = {}
        for k, v in local.items():
            out[k] = parallel.allgather_strings(v) if v.dtype.kind in "USO" else parallel.allgather(v)
        keep = out.pop("mask") > 0
        return {k: np.asarray(v)[keep] for k, v in out.items()}

    def metrics(self, s: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """ACC / AUC / EER / AP of scored frames (`scores`), frame and video level (videos by the
        configured aggregation) and per method."""
        methods = s["method"] if np.any(s["method"] != "") else None
        return metrics_lib.compute_metrics(s["score"], s["label"], s["video_id"], methods,
                                           aggregate=assessment.aggregator(self.config, tracks=s.get("track_id")))

    def run(
        self,
        model_state,
        split: str,
        *,
        root: str | None = None,
        workdir: str | None = None,
        name: str | None = None,
        step: int | None = None,
        checkpoint: str | None = None,
        extra: Mapping[str, Any] | None = None,
        attention_examples: int = 0,
        fit: bool = False,
        fitted: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Scores `split`, computes the metrics and (process 0, with `workdir`) writes the files.

        `fit`: choose decision thresholds and a temperature on this split (a validation split),
        returned as results["fitted"] (`save_choices` keeps them); `fitted`: such choices
        from another split, reported here unchanged (`mat_jax.assessment`). With
        `attention_examples` > 0 (single process, MAT) it also draws the attention maps over
        that many faces of the split, half real and half fake, as `attention.png`.
        """
        t0 = time.perf_counter()
        s = self.scores(model_state, split, root=root)
        aggregate = assessment.aggregator(self.config, tracks=s.get("track_id"))
        results = self.metrics(s)
        results.update(assessment.assess(s, self.config, dict(fitted) if fitted is not None else None))
        ci = results["video_ci95"]
        results["video"]["ci95"] = {m: [ci[m]["low"], ci[m]["high"]] for m in ("auc", "acc", "eer")}
        if fit:
            results["fitted"] = {**assessment.fit(s, self.config), "split": split, "step": step,
                                 "checkpoint": checkpoint}
        seconds = time.perf_counter() - t0
        logging.info("eval %s: %d frames in %.1f s: %s", split, len(s["score"]), seconds, _short(results))
        if workdir is not None and jax.process_index() == 0:
            out_dir = epath.Path(workdir) / "eval" / (name or split)
            root = root or str(self.config.data.root)
            eval_files.write_results(
                out_dir, s, results,
                info={"split": split, "step": step, "root": root, "seconds": seconds,
                      **({"checkpoint": checkpoint} if checkpoint else {}), **dict(extra or {})},
                aggregate=aggregate, reliability=assessment.reliability(s, self.config),
            )
            record = manifest.build(self.config, checkpoint=checkpoint, step=step, root=root, split=split)
            (out_dir / manifest.FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            if attention_examples > 0 and jax.process_count() == 1:
                self._attention_figure(model_state, split, root, attention_examples, out_dir / "attention.png")
        return results

    def _attention_figure(self, model_state, split, root, count: int, path) -> None:
        """`count` faces of the split (the first reals and fakes read) with their attention maps."""
        if not state_lib.is_mat(self.config):  # a backbone alone has no attention maps
            return
        want = {0: (count + 1) // 2, 1: count // 2}
        picked = []
        for batch in eval_data.create_eval_iterator(self.config, split, root=root):
            for i in np.flatnonzero(batch["mask"] > 0):
                label = int(batch["label"][i])
                if want[label] > 0:
                    want[label] -= 1
                    picked.append((batch["image"][i], label, str(batch["video_id"][i])))
            if not any(want.values()):
                break
        if not picked:
            return
        images = np.stack([p[0] for p in picked])
        # Padded to whole eval batches: the batch must split evenly over the mesh.
        batch_size = int(self.config.train.eval_batch_size)
        padded = np.zeros((-(-len(images) // batch_size) * batch_size, *images.shape[1:]), images.dtype)
        padded[: len(images)] = images
        maps = self._maps(model_state, parallel.global_batch({"image": padded}, self.mesh)["image"])
        maps = np.asarray(jax.device_get(maps))[: len(picked)]
        faces = [np.clip((img * 0.5 + 0.5) * 255.0 + 0.5, 0, 255).astype(np.uint8) for img in images]
        captions = [f"{'fake' if label else 'real'}: {vid}" for _, label, vid in picked]
        plots.attention_sheet(path, faces, list(maps), captions)


def _short(results: Mapping[str, Any]) -> str:
    parts = []
    for level in ("frame", "video"):
        r = results.get(level)
        if isinstance(r, Mapping):
            parts.append(f"{level} acc {r.get('acc', float('nan')):.4f} auc {r.get('auc', float('nan')):.4f}")
    return "; ".join(parts) or str(list(results))


@contextlib.contextmanager
def restored(config, workdir: str, checkpoint: str | None = None):
    """Yields (evaluator, model state, checkpoint meta, checkpoint path) inside the device mesh: the
    model of `config` with a checkpoint's weights (default: the workdir's best, else its latest)."""
    mesh = parallel.create_mesh()
    parallel.check_batch_size(int(config.train.eval_batch_size), mesh)
    with jax.set_mesh(mesh):
        graphdef, state = state_lib.create_model_state(config, mesh)
        model = nnx.merge(graphdef, state)
        resolved = checkpointing.resolve(checkpoint or workdir)
        meta = checkpointing.load_model(resolved, model)
        yield Evaluator(config, graphdef, mesh), nnx.state(model), meta, resolved


def evaluate_checkpoint(
    config,
    workdir: str,
    *,
    checkpoint: str | None = None,
    split: str = "test",
    root: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Evaluates a trained model on `split` of `root` (default config.data.root).

    `checkpoint` defaults to `workdir`: its best checkpoint, else its latest. Results go
    to `<workdir>/eval/<name>/` (name defaults to "<dataset>_<split>" for another
    dataset's records, else the split).
    """
    with restored(config, workdir, checkpoint) as (evaluator, model_state, meta, resolved):
        logging.info(
            "evaluating %s (step %s) on %s/%s", resolved, meta.get("step"), root or config.data.root, split
        )
        if name is None:
            dataset = str(config.data.dataset)
            name = f"{dataset}_{split}" if root is not None or dataset not in ("", "ffpp") else split
        step = meta.get("step")
        fitted = val_choices(evaluator, model_state, config, workdir, step=step, checkpoint=str(resolved),
                             split=split)
        return evaluator.run(
            model_state, split, root=root, workdir=workdir, name=name, step=step,
            checkpoint=str(resolved), attention_examples=8, fitted=fitted,
        )


def val_choices(evaluator: Evaluator, model_state, config, workdir: str, *, step, checkpoint: str,
                split: str) -> dict[str, Any] | None:
    """The thresholds and temperature that this checkpoint's validation split chose, to apply to `split`.

    Read from `<workdir>/eval/<val>/thresholds.json` when it was written for this checkpoint's
    step (training's final evaluation writes it); else made by scoring the val split of
    `config.data.root` when it has one; else None (a dataset with no val split, and no FF++
    thresholds of this checkpoint beside it).
    """
    val = str(config.train.eval_split)
    if val == split:
        return None
    # A cross-dataset config has no val split of its own: the training run's "val" choices apply.
    saved = epath.Path(workdir) / "eval" / (val or "val") / THRESHOLDS_FILE
    if saved.exists():
        fitted = json.loads(saved.read_text())
        if fitted.get("step") == step:
            return fitted
    if not val or not records.split_files(str(config.data.root), val):
        return None
    fitted = evaluator.run(model_state, val, workdir=workdir, step=step, checkpoint=checkpoint, fit=True)["fitted"]
    save_choices(workdir, val, fitted)
    return fitted


def save_choices(workdir: str, split: str, fitted: Mapping[str, Any]) -> None:
    """`<workdir>/eval/<split>/thresholds.json`: what `split` chose for the checkpoint of fitted["step"]
    (training writes it whenever a validation finds a new best checkpoint)."""
    if jax.process_index() == 0:
        out = epath.Path(workdir) / "eval" / split
        out.mkdir(parents=True, exist_ok=True)
        (out / THRESHOLDS_FILE).write_text(json.dumps(eval_files.jsonable(dict(fitted)), indent=2, sort_keys=True)
                                           + "\n")
