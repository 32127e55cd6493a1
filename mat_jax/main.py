"""Command line entry: train or evaluate MAT.

    python -m mat_jax.main --config=configs/ffpp.py --workdir=DIR [--config.train.batch_size=32]
    python -m mat_jax.main --config=configs/ffpp.py:stage=pretrain --workdir=DIR_STAGE1
    python -m mat_jax.main --config=configs/celebdf.py --workdir=DIR --mode=eval   # cross-dataset

Kept short on purpose: the logic lives in `mat_jax.train` and `mat_jax.evaluate`, which
tests and notebooks import. On a multi-host system (Cloud TPU pod, SLURM, Open MPI, or
JAX_COORDINATOR_ADDRESS set by hand) every process runs the same command.
"""

from __future__ import annotations

import os
import sys
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from mat_jax import demo, logs, parallel

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (`path.py[:arg]`).", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and evaluation results.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and evaluate), or only evaluate a checkpoint.")
flags.DEFINE_string("eval_split", "test", "--mode=eval: the split to evaluate.")
flags.DEFINE_string(
    "checkpoint", None, "--mode=eval: checkpoint to evaluate (default: the workdir's best, else latest)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.quiet_console(verbose=FLAGS["verbosity"].present)
    # TensorFlow (tf.data only) must not grab the accelerators that belong to JAX.
    import tensorflow as tf

    for kind in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], kind)
        except (RuntimeError, ValueError):
            pass

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

    from mat_jax import evaluate, train  # after distributed initialisation

    if FLAGS.mode == "train":
        t_start = time.perf_counter()
        data_secs = None
        if "demo" in FLAGS.config:  # configs/demo.py: build and prepare the offline demo data first
            demo.ensure_data(FLAGS.config, FLAGS.workdir)
            data_secs = time.perf_counter() - t_start
        try:
            summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        except train.Interrupted as e:
            logging.warning("%s", e)
            sys.exit(143)  # 128 + SIGTERM, as if the signal had ended the process
        if jax.process_index() == 0 and summary.get("final_eval"):
            split = FLAGS.config.train.get("final_eval_split", "test")
            print(f"\n{split} split, best checkpoint (step {summary['best'].get('step')}):", flush=True)
            print(demo.summary_table(summary["final_eval"]), flush=True)
            print(f"results, plots and checkpoints: {FLAGS.workdir}", flush=True)
            print(demo.time_split(summary["times"], time.perf_counter() - t_start, data_secs), flush=True)
    else:
        evaluate.evaluate_checkpoint(
            FLAGS.config, FLAGS.workdir, checkpoint=FLAGS.checkpoint, split=FLAGS.eval_split
        )


if __name__ == "__main__":
    jax.config.config_with_absl()
    app.run(main)
