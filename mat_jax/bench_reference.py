"""Its one job: `python -m mat_jax.bench --reference=PATH`, our steps timed beside the official code's.

    python -m mat_jax.bench --reference=PATH                     # configs/ffpp.py: B4, 380 px, batch 4
    python -m mat_jax.bench --reference=PATH --config=configs/ffpp.py:tiny --batch=2 --reference_steps=2
    python -m mat_jax.bench --reference=PATH --reference_memory --json=cmp.json

PATH is a checkout of the official PyTorch code (GitHub repository yoctta/multiple-attention);
`mat_jax.reference_code` loads it and builds its steps (what is taken from it unchanged, and
what stands in for its train.py loop), `mat_jax.timing` builds ours. Here: the interleaved
timing, the table, the JSON and the memory probes.

Timing: per case (train step with AGDA, without, eval forward) both sides are built (our
compile excluded), run `--reference_warmup` untimed steps each, then `--reference_steps`
timed steps in turns (ours, official, ours, ...) on the same synthetic batch; the table has
the medians. torch gets as many threads as XLA's CPU client uses, the CPUs this process may
run on (its affinity mask); limit both with `taskset -c 0-3 python -m ...`.

Memory (`--reference_memory`): in one process the two sides' peaks cannot be told apart, so
each side runs again alone in a fresh subprocess (warm-up plus one step of every case) and
reports its peak RSS (VmHWM) and how far it rose above its RSS before building (ours includes
XLA compilation; both include the other side's imports, loaded but idle: every module of both
sides is imported before that start, so the rise is the building and running alone), and on a
GPU the device peak (JAX `peak_bytes_in_use`, torch `max_memory_allocated`).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from mat_jax import timing
from mat_jax.machine import cpu_model

# F401: NotACheckout, what `compare` and `probe` raise for a bad PATH; the CLI and tests take it from here.
from mat_jax.reference_code import NotACheckout, build_official, load_official, official_device  # noqa: F401

CASES = {"train": "train step, AGDA", "train_no_agda": "train step, no AGDA", "eval": "eval forward"}


# ---------------------------------------------------------------- our side
def build_ours(config, case: str, *, batch: int) -> tuple[Callable[[], None], dict[str, Any]]:
    """(run, info): our compiled step of `case`, `run()` returning when the device is done."""
    if case == "eval":
        run, info = timing.build_eval(config, batch=batch)
    else:
        run, info = timing.build_train(config, batch=batch, agda=case == "train")
    return (lambda: jax.block_until_ready(run())), info


# ---------------------------------------------------------------- timing and the table
def interleaved(fns: Mapping[str, Callable[[], Any]], *, steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each of `steps` calls per callable, called in turns after `warmup` untimed calls.

    Each callable must return only when its work is done. Taking turns spreads slow drifts
    of a shared machine (other load, clock speed, heat) over all sides alike.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def comparison_row(what: str, ours: Sequence[float], official: Sequence[float], batch: int) -> dict[str, Any]:
    o, r = statistics.median(ours), statistics.median(official)
    return {"what": what, "ours_s_per_step": o, "official_s_per_step": r, "ratio": o / r,
            "ours_images_per_s": batch / o, "official_images_per_s": batch / r,
            "ours_steps_s": list(ours), "official_steps_s": list(official)}  # fmt: skip


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("what", "ours s/step", "official s/step", "ratio (ours/official)", "ours img/s", "official img/s")
    body = [(r["what"], f"{r['ours_s_per_step']:.4g}", f"{r['official_s_per_step']:.4g}", f"{r['ratio']:.3f}",
             f"{r['ours_images_per_s']:.4g}", f"{r['official_images_per_s']:.4g}") for r in rows]  # fmt: skip
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def xla_cpu_threads() -> int:
    # XLA's CPU client sizes its thread pool to the CPUs this process may be scheduled on
    # (tsl's NumSchedulableCPUs reads the affinity mask), so torch gets the same number.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info(device, threads: int) -> dict[str, Any]:
    import torch  # deferred: heavy, and needed only with --reference

    versions = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "numpy", "torch", "kornia"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads,
        "ours_device": timing.device_description(),
        "official_device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "versions": versions,
    }  # fmt: skip


# ---------------------------------------------------------------- memory, one side per process
def _status_bytes(field: str) -> int | None:
    """A /proc/self/status figure: VmRSS now, VmHWM its peak. Not ru_maxrss: Linux carries that
    over from the parent through fork and exec, so a probe would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None


def probe(config, side: str, *, reference: str, batch: int, cases: Sequence[str]) -> dict[str, Any]:
    """One side alone in this (fresh) process: warm-up plus one step of each case, then its peaks."""
    import torch  # deferred: heavy, and needed only with --reference

    torch.set_num_threads(xla_cpu_threads())
    off = load_official(reference) if side == "official" else None
    device = official_device()
    base = _status_bytes("VmRSS")
    device_peak = None
    for case in cases:
        if off is not None:
            run = build_official(off, config, case, batch=batch, device=device)
        else:
            run = build_ours(config, case, batch=batch)[0]
        run(), run()
        del run
    if side == "ours":
        peak, source = timing.peak_memory_bytes()
        device_peak = peak if source.startswith("device") else None
    elif device.type == "cuda":
        device_peak = torch.cuda.max_memory_allocated(device)
    peak_rss = _status_bytes("VmHWM")
    gib = lambda b: None if b is None else b / 2**30  # noqa: E731
    return {"side": side, "rss_before_build_gib": gib(base), "peak_rss_gib": gib(peak_rss),
            "peak_rss_above_start_gib": gib(peak_rss - base) if None not in (base, peak_rss) else None,
            "device_peak_gib": gib(device_peak)}  # fmt: skip


def measure_memory(argv: Sequence[str]) -> dict[str, Any]:
    """Runs `python -m mat_jax.bench ARGV --reference_probe=SIDE` for each side, one at a time."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="mat_jax_probe_") as tmp:
        for side in ("ours", "official"):
            path = os.path.join(tmp, f"{side}.json")
            cmd = [sys.executable, "-m", "mat_jax.bench", *argv, "--noreference_memory",
                   f"--reference_probe={side}", f"--json={path}"]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"memory probe of {side} failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
            with open(path) as f:
                out[side] = json.load(f)
    return out


# ---------------------------------------------------------------- the command
def compare(
    config, *, reference: str, batch: int, steps: int, warmup: int, cases: Sequence[str],
    memory_argv: Sequence[str] | None = None, json_path: str | None = None,
) -> dict[str, Any]:
    """Builds and times each case on both sides, prints the table, returns (and writes) the results."""
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        raise ValueError(f"--what with --reference: unknown or none of {unknown}; use {', '.join(CASES)}")
    off = load_official(reference)
    import torch  # deferred: heavy, and needed only with --reference

    threads = xla_cpu_threads()
    torch.set_num_threads(threads)
    device = official_device()
    m = config.model
    results: dict[str, Any] = {
        "machine": machine_info(device, threads), "official_checkout": str(off.root),
        "official_commit": off.commit,
        "torchvision_stubbed": off.torchvision_stubbed, "stage": config.stage, "backbone": m.backbone,
        "image_size": int(m.image_size), "batch": batch, "dtype": m.dtype, "steps": steps, "warmup": warmup,
        "rows": [],
    }  # fmt: skip
    mach = results["machine"]
    print(f"machine: {mach['cpu']}, {mach['cores']} cores; "
          f"threads: {threads} (XLA's CPU pool, and torch.set_num_threads)")
    print(f"ours: {mach['ours_device']}; official: {mach['official_device']}, "
          f"checkout {off.root} @ {off.commit}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in mach["versions"].items()))
    print(f"model: {config.stage} {m.backbone} at {m.image_size} px, batch {batch}, {m.dtype}; "
          f"median of {steps} interleaved steps after {warmup} warm-up", flush=True)  # fmt: skip
    for case in cases:
        ours, info = build_ours(config, case, batch=batch)
        official = build_official(off, config, case, batch=batch, device=device)
        times = interleaved({"ours": ours, "official": official}, steps=steps, warmup=warmup)
        row = comparison_row(CASES[case], times["ours"], times["official"], batch)
        row.update(case=case, ours_compile_s=info["compile_s"])
        results["rows"].append(row)
        print(f"{case}: ours {row['ours_s_per_step']:.4g} s, official {row['official_s_per_step']:.4g} s "
              f"(our compile {info['compile_s']:.1f} s, excluded)", flush=True)  # fmt: skip
        del ours, official
    print()
    print(format_table(results["rows"]))
    print("ratio < 1: mat_jax is faster; images/s = batch / median s/step")
    if memory_argv is not None:
        results["memory"] = measure_memory(memory_argv)
        for side, r in results["memory"].items():
            above = r["peak_rss_above_start_gib"]
            above = f" ({above:.3f} GiB above its RSS before building)" if above is not None else ""
            dev = f", device peak {r['device_peak_gib']:.3f} GiB" if r["device_peak_gib"] is not None else ""
            peak = "n/a (no /proc)" if r["peak_rss_gib"] is None else f"{r['peak_rss_gib']:.3f} GiB"
            print(f"memory, {side} alone in a fresh process: peak RSS {peak}{above}{dev}")
    else:
        print("memory: not measured (one process holds both sides); --reference_memory measures each alone")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)
    return results
