"""Command line entry: train or evaluate MAT.

    python -m mat_jax.main --config=configs/ffpp.py --workdir=DIR [--config.train.batch_size=32]
    python -m mat_jax.main --config=configs/ffpp.py:stage=pretrain --workdir=DIR_STAGE1
    python -m mat_jax.main --config=configs/celebdf.py --workdir=DIR --mode=eval   # cross-dataset

Flags in, one call out: the records a config can make for itself (`mat_jax.prepare`), then
`mat_jax.train` or `mat_jax.evaluate`, which tests and notebooks import. On a multi-host
system (Cloud TPU pod, SLURM, Open MPI, or JAX_COORDINATOR_ADDRESS set by hand) every
process runs the same command; importing the modules starts no JAX backend, so
`jax.distributed.initialize` still comes first.
"""

from __future__ import annotations

import os
import sys
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from mat_jax import evaluate, logs, parallel, prepare, robustness, summary, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (`path.py[:arg]`).", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and evaluation results.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "robustness"],
                  "Train (and evaluate); only evaluate a checkpoint; or score it on perturbed copies of a split.")
flags.DEFINE_string("eval_split", "test", "--mode=eval: the split to evaluate.")
flags.DEFINE_string(
    "checkpoint", None,
    "--mode=eval/robustness: checkpoint to evaluate (default: the workdir's best, else latest).",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.quiet_console(verbose=FLAGS["verbosity"].present)
    init_args = parallel.distributed_init_args(os.environ)
    if init_args is not None:
        jax.distributed.initialize(**init_args)
    log_file = logs.to_file(FLAGS.workdir, process_index=jax.process_index())
    if log_file and jax.process_index() == 0:
        print(f"full log: {log_file} (--verbosity=0 shows it on the console)", flush=True)
    logging.info(
        "JAX process %d of %d; local devices %s; %d devices in all",
        jax.process_index(), jax.process_count(), jax.local_devices(), jax.device_count(),
    )

    config = FLAGS.config
    t_start = time.perf_counter()
    if FLAGS.mode == "robustness":
        _robustness(config, FLAGS.checkpoint)
        return
    data_secs = prepare.ensure_records(config, FLAGS.workdir)
    if FLAGS.mode == "eval":
        evaluate.evaluate_checkpoint(
            config, FLAGS.workdir, checkpoint=FLAGS.checkpoint, split=FLAGS.eval_split
        )
        return
    try:
        result = train.train_and_evaluate(config, FLAGS.workdir)
    except train.Interrupted as e:
        logging.warning("%s", e)
        sys.exit(143)  # 128 + SIGTERM, as if the signal had ended the process
    if jax.process_index() == 0 and result.get("final_eval"):
        best_step = result["best"].get("step")
        print(f"\n{config.train.final_eval_split} split, best checkpoint (step {best_step}):", flush=True)
        print(summary.results_table(result["final_eval"]), flush=True)
        print(f"results, plots and checkpoints: {FLAGS.workdir}", flush=True)
        print(summary.time_split(result["times"], time.perf_counter() - t_start, data_secs), flush=True)
    if config.robustness.after_training:
        _robustness(config, None)


def _robustness(config, checkpoint: str | None) -> None:
    t0 = time.perf_counter()
    data_secs = prepare.ensure_perturbed(config, FLAGS.workdir)
    result = robustness.run(config, FLAGS.workdir, checkpoint=checkpoint)
    if jax.process_index() == 0:
        print(f"\nrobustness, step {result['step']}, {result['split']} split: video AUC per perturbation level",
              flush=True)
        print(summary.robustness_table(result), flush=True)
        data = f"perturbed copies {data_secs:.0f} s, " if data_secs is not None else ""
        print(f"table and plot: {FLAGS.workdir}/eval/robustness/ ({data}{time.perf_counter() - t0:.0f} s in all)",
              flush=True)


if __name__ == "__main__":
    jax.config.config_with_absl()
    app.run(main)
