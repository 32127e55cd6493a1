"""Its one job: the command line `python -m mat_jax.bench`: flags in, measurements printed (and JSON).

    python -m mat_jax.bench                                   # configs/ffpp.py: B4, 380 px
    python -m mat_jax.bench --config=configs/ffpp.py:tiny --batch=8 --steps=5
    python -m mat_jax.bench --records=DIR --what=pipeline     # real records of data_prep

Measures the train step (with and without AGDA), the eval step and the input pipeline, as
`mat_jax.timing` describes: for each compiled step its compile time, seconds per step and
images/s (after one warm-up call), XLA's FLOP count per image and peak memory, on a
synthetic batch; the pipeline over `--records` or a temporary set of JPEG face crops.

`--reference=PATH` times the same steps of the official PyTorch code in a checkout at PATH
beside ours, interleaved (see mat_jax/bench_reference.py):

    python -m mat_jax.bench --reference=PATH --json=compare.json   # B4, 380 px, batch 4
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from mat_jax import bench_reference, timing

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/ffpp.py", "Config file (`path.py[:arg]`).")
flags.DEFINE_integer("batch", 4, "Global batch of the train and eval steps.")
flags.DEFINE_integer("steps", 3, "Timed steps (after one warm-up step).")
flags.DEFINE_string("records", None, "TFRecords for the pipeline benchmark (default: temporary ones).")
flags.DEFINE_integer("pipeline_batches", 20, "Batches timed in the pipeline benchmark.")
flags.DEFINE_integer("pipeline_batch", 32, "Global batch of the pipeline benchmark.")
flags.DEFINE_list("what", ["train", "train_no_agda", "eval", "pipeline"], "What to measure.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_string("reference", None, "Checkout of the official PyTorch code (yoctta/multiple-attention): "
                    "time its steps beside ours, interleaved (mat_jax/bench_reference.py).")  # fmt: skip
flags.DEFINE_integer("reference_steps", 5, "--reference: timed steps per side and case (median reported).")
flags.DEFINE_integer("reference_warmup", 1, "--reference: untimed steps per side and case before timing.")
flags.DEFINE_bool("reference_memory", False, "--reference: also measure each side's peak memory alone in a "
                  "fresh subprocess (builds and compiles everything again).")  # fmt: skip
flags.DEFINE_enum("reference_probe", None, ["ours", "official"], "Internal to --reference_memory.")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if FLAGS.reference:
        _main_reference(config, argv)
        return
    results: dict[str, Any] = {"device": timing.device_description(), "backbone": config.model.backbone,
                               "image_size": int(config.model.image_size), "dtype": config.model.dtype}
    print(f"device: {results['device']}", flush=True)
    print(f"model: {config.stage} {config.model.backbone} at {config.model.image_size} px, "
          f"{config.model.dtype}", flush=True)  # fmt: skip
    for what in FLAGS.what:
        logging.info("benchmarking %s", what)
        if what == "train":
            r = timing.bench_train(config, batch=FLAGS.batch, steps=FLAGS.steps, agda=True)
        elif what == "train_no_agda":
            r = timing.bench_train(config, batch=FLAGS.batch, steps=FLAGS.steps, agda=False)
        elif what == "eval":
            r = timing.bench_eval(config, batch=FLAGS.batch, steps=FLAGS.steps)
        elif what == "pipeline":
            r = timing.bench_pipeline(config, records_dir=FLAGS.records, batch=FLAGS.pipeline_batch,
                                      num_batches=FLAGS.pipeline_batches)  # fmt: skip
        else:
            raise app.UsageError(f"--what: unknown {what!r}; use train, train_no_agda, eval, pipeline")
        results[what] = r
        print(f"{what}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in r.items()), flush=True)  # fmt: skip
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=2)


def _main_reference(config, argv) -> None:
    # torch shares the GPU: JAX must not grab 75 % of it up front. Read when JAX starts its
    # GPU client, which nothing has done yet: importing our modules starts none, and `main`
    # calls nothing that asks JAX for a device before this.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    cases = [w for w in FLAGS.what if w != "pipeline"]
    if not cases or any(c not in bench_reference.CASES for c in cases):
        known = ", ".join(bench_reference.CASES)
        raise app.UsageError(f"--what with --reference: {cases}; use some of {known}")
    try:
        if FLAGS.reference_probe:
            r = bench_reference.probe(config, FLAGS.reference_probe, reference=FLAGS.reference,
                                      batch=FLAGS.batch, cases=cases)  # fmt: skip
            with open(FLAGS.json, "w") as f:
                json.dump(r, f)
            return
        bench_reference.compare(
            config, reference=FLAGS.reference, batch=FLAGS.batch, steps=FLAGS.reference_steps,
            warmup=FLAGS.reference_warmup, cases=cases, json_path=FLAGS.json,
            memory_argv=sys.argv[1:] if FLAGS.reference_memory else None,
        )  # fmt: skip
    except bench_reference.NotACheckout as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    jax.config.config_with_absl()
    app.run(main)
