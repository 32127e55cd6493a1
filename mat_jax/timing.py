"""What `python -m mat_jax.bench` measures: our compiled steps and input pipeline on this machine.

* `build_train` / `build_eval`: a compiled stage-2 train step (AGDA on or off) or eval step on a
  fixed synthetic batch (`synthetic_host_batch`), as a callable plus its init and compile times
  and XLA's FLOP count (`compiled.cost_analysis()`). Timing is kept apart so that
  `mat_jax.bench_reference` can interleave the calls with the official code's.
* `bench_train` / `bench_eval`: one warm-up call, then seconds per step and images/s over
  `steps` calls, FLOPs per image and peak memory (`peak_memory_bytes`): the device's
  `memory_stats()["peak_bytes_in_use"]` where the backend has it (GPU, TPU), else the
  process's peak resident set size (CPU). The batch is synthetic, so these figures exclude
  the pipeline.
* `bench_pipeline`: `mat_jax.data.train_data.benchmark` over TFRecords, given ones or a
  temporary set of JPEG face crops (`write_bench_records`) at the config's size + 4 px (as
  data_prep writes 384 px crops for 380 px).
* `cpu_model` / `device_description`: the machine, for the printed header.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from typing import Any

import jax
import numpy as np

from mat_jax import evaluate, parallel, state as state_lib, step as step_lib
from mat_jax.machine import cpu_model
from mat_jax.data import records, train_data
from mat_jax.data.tf_env import tf


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
    config = config.copy_and_resolve_references()
    config.train.batch_size = batch
    config.agda.enabled = agda
    mesh = parallel.create_mesh()
    with jax.set_mesh(mesh):
        tx, schedule = state_lib.create_optimizer(config, 1000)
        t0 = time.perf_counter()
        graphdef, state = state_lib.create_train_state(config, mesh, tx)
        init_s = time.perf_counter() - t0
        step = step_lib.make_train_step(config, graphdef, schedule, 1000, mesh)
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
    mesh = parallel.create_mesh()
    with jax.set_mesh(mesh):
        graphdef, state = state_lib.create_model_state(config, mesh)
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
    config = config.copy_and_resolve_references()
    config.train.batch_size = batch
    tmp = None
    if records_dir is None:
        tmp = tempfile.mkdtemp(prefix="mat_jax_bench_")
        records_dir = write_bench_records(tmp, size=int(config.model.image_size) + 4)
    config.data.root = records_dir
    try:
        out = train_data.benchmark(config, num_batches=num_batches)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    out["records"] = "temporary JPEG crops" if tmp else records_dir
    return out
