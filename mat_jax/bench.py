"""Benchmark: train step (with and without AGDA), eval step and input pipeline.

    python -m mat_jax.bench                                   # configs/ffpp.py: B4, 380 px
    python -m mat_jax.bench --config=configs/ffpp.py:tiny --batch=8 --steps=5
    python -m mat_jax.bench --records=DIR --what=pipeline     # real records of data_prep

For each compiled step it reports compile time, seconds per step and images/s (after one
warm-up call), XLA's FLOP count per image (`compiled.cost_analysis()`) and peak memory:
the device's `memory_stats()["peak_bytes_in_use"]` where the backend has it (GPU, TPU),
else the process's peak resident set size (CPU). The pipeline figure is
`input_pipeline.benchmark` over TFRecords: `--records`, or a temporary set of JPEG face
crops written at the config's size + 4 px (as data_prep writes 384 px crops for 380 px).
The batch is synthetic for the steps, so the step figures exclude the pipeline.

`--reference=PATH` times the same steps of the official PyTorch code in a checkout at PATH
beside ours, interleaved (see mat_jax/bench_reference.py):

    python -m mat_jax.bench --reference=PATH --json=compare.json   # B4, 380 px, batch 4
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

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


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description() -> str:
    d = jax.devices()[0]
    host = f"{jax.local_device_count()} x {d.device_kind}" if d.platform != "cpu" else "CPU"
    return (f"{d.platform}: {host}, {jax.device_count()} device(s); host {cpu_model()}, "
            f"{os.cpu_count()} cores")  # fmt: skip


def peak_memory_bytes() -> tuple[int, str]:
    """(bytes, source): the device's peak where reported, else this process's peak RSS."""
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    # ru_maxrss is in KiB on Linux: the high-water mark of the whole process so far.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process peak RSS"


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def synthetic_host_batch(config, batch: int) -> dict[str, np.ndarray]:
    """Images uniform in [-1, 1] (B, S, S, 3) and alternating labels: the benchmarks' fixed batch."""
    rng = np.random.default_rng(0)
    size = int(config.model.image_size)
    return {
        "image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
        "label": (np.arange(batch) % 2).astype(np.int32),
    }


def _synthetic_batch(config, batch: int, mesh) -> dict[str, jax.Array]:
    from mat_jax import parallel

    return parallel.global_batch(synthetic_host_batch(config, batch // jax.process_count()), mesh)


def _time(fn, steps: int) -> float:
    t0 = time.perf_counter()
    out = None
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / steps


def build_train(config, *, batch: int, agda: bool) -> tuple[Any, dict[str, Any]]:
    """(run, info) for one stage-2 train step (stage of the config) with AGDA on or off.

    `run()` dispatches one compiled step on a fixed synthetic batch, carrying the state
    forward, and returns its metrics without waiting; `info` has init and compile times and
    XLA's FLOP count. Kept apart from the timing so `bench_reference` can interleave it.
    """
    from mat_jax import parallel, train

    config = config.copy_and_resolve_references()
    config.train.batch_size = batch
    if "agda" in config:
        config.agda.enabled = agda
    mesh = parallel.create_mesh()
    with jax.set_mesh(mesh):
        tx, schedule = train.create_optimizer(config, 1000)
        t0 = time.perf_counter()
        graphdef, state = train.create_train_state(config, mesh, tx)
        init_s = time.perf_counter() - t0
        step = train.make_train_step(config, graphdef, schedule, 1000, mesh)
        data = _synthetic_batch(config, batch, mesh)
        t0 = time.perf_counter()
        compiled = step.lower(state, data).compile()
        compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], data)
        return metrics

    return run, {"init_s": init_s, "compile_s": compile_s, "flops": _flops(compiled)}


def bench_train(config, *, batch: int, steps: int, agda: bool) -> dict[str, Any]:
    """One stage-2 train step (stage of the config) with AGDA on or off."""
    run, info = build_train(config, batch=batch, agda=agda)
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    first_s = time.perf_counter() - t0
    sec = _time(run, steps)
    mem, mem_source = peak_memory_bytes()
    flops = info["flops"]
    return {
        "stage": config.stage, "agda": agda, "batch": batch, "image_size": int(config.model.image_size),
        "init_s": info["init_s"], "compile_s": info["compile_s"], "first_step_s": first_s, "s_per_step": sec,
        "images_per_s": batch / sec, "gflops_per_image": flops / batch / 1e9 if flops else None,
        "peak_memory_gib": mem / 2**30, "memory_source": mem_source,
    }  # fmt: skip


def build_eval(config, *, batch: int) -> tuple[Any, dict[str, Any]]:
    """(run, info) for the compiled eval step; `run()` returns the scores without waiting."""
    from mat_jax import evaluate, parallel, train

    mesh = parallel.create_mesh()
    with jax.set_mesh(mesh):
        graphdef, state = train.create_model_state(config, mesh)
        evaluator = evaluate.Evaluator(config, graphdef, mesh)
        images = _synthetic_batch(config, batch, mesh)["image"]
        t0 = time.perf_counter()
        compiled = evaluator._step.lower(state, images).compile()
        compile_s = time.perf_counter() - t0
    return (lambda: compiled(state, images)), {"compile_s": compile_s, "flops": _flops(compiled)}


def bench_eval(config, *, batch: int, steps: int) -> dict[str, Any]:
    run, info = build_eval(config, batch=batch)
    jax.block_until_ready(run())
    sec = _time(run, steps)
    mem, mem_source = peak_memory_bytes()
    flops = info["flops"]
    return {
        "batch": batch, "compile_s": info["compile_s"], "s_per_step": sec, "images_per_s": batch / sec,
        "gflops_per_image": flops / batch / 1e9 if flops else None,
        "peak_memory_gib": mem / 2**30, "memory_source": mem_source,
    }  # fmt: skip


def write_bench_records(root: str, *, size: int, count: int = 128, shards: int = 4) -> str:
    """Face-like JPEG crops (q 95, `size` px) with landmarks-free records, half real, half fake."""
    import tensorflow as tf

    from mat_jax.data import records

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    recs = []
    for i in range(count):
        base = np.stack([a + b * xx + c * yy for a, b, c in rng.uniform(0.1, 0.6, (3, 3))], -1)
        face = ((yy - 0.5) / 0.38) ** 2 + ((xx - 0.5) / 0.3) ** 2 < 1
        img = np.where(face[..., None], np.array([0.85, 0.65, 0.5]), base) + rng.normal(0, 0.05, base.shape)
        jpeg = tf.io.encode_jpeg((np.clip(img, 0, 1) * 255).astype(np.uint8), quality=95).numpy()
        fake = i % 2
        recs.append(records.FaceRecord(
            image=jpeg, label=fake, dataset="bench", split="train",
            method="Deepfakes" if fake else "original", video_id=f"v{i // 8:03d}_{fake}", frame_index=i % 8,
        ))  # fmt: skip
    for s in range(shards):
        records.write(records.shard_path(root, "bench", "train", s, shards), recs[s::shards])
    return root


def bench_pipeline(config, *, records_dir: str | None, batch: int, num_batches: int) -> dict[str, Any]:
    from mat_jax import input_pipeline

    config = config.copy_and_resolve_references()
    config.train.batch_size = batch
    tmp = None
    if records_dir is None:
        tmp = tempfile.mkdtemp(prefix="mat_jax_bench_")
        records_dir = write_bench_records(tmp, size=int(config.model.image_size) + 4)
    config.data.root = records_dir
    try:
        out = input_pipeline.benchmark(config, num_batches=num_batches)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    out["records"] = "temporary JPEG crops" if tmp else records_dir
    return out


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if FLAGS.reference:
        _main_reference(config, argv)
        return
    results: dict[str, Any] = {"device": device_description(), "backbone": config.model.backbone,
                               "image_size": int(config.model.image_size), "dtype": config.model.dtype}
    print(f"device: {results['device']}", flush=True)
    print(f"model: {config.stage} {config.model.backbone} at {config.model.image_size} px, "
          f"{config.model.dtype}", flush=True)  # fmt: skip
    for what in FLAGS.what:
        logging.info("benchmarking %s", what)
        if what == "train":
            r = bench_train(config, batch=FLAGS.batch, steps=FLAGS.steps, agda=True)
        elif what == "train_no_agda":
            r = bench_train(config, batch=FLAGS.batch, steps=FLAGS.steps, agda=False)
        elif what == "eval":
            r = bench_eval(config, batch=FLAGS.batch, steps=FLAGS.steps)
        elif what == "pipeline":
            r = bench_pipeline(config, records_dir=FLAGS.records, batch=FLAGS.pipeline_batch,
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
    # GPU client, which nothing has done yet.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from mat_jax import bench_reference

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
    # bench_reference imports this module by name; as `python -m` runs it as __main__, a
    # second copy would define every flag twice.
    sys.modules.setdefault("mat_jax.bench", sys.modules[__name__])
    jax.config.config_with_absl()
    app.run(main)
