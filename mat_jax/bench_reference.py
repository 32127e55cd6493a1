"""Its one job: `python -m mat_jax.bench --reference=PATH`, our steps timed beside the official code's.

    python -m mat_jax.bench --reference=PATH                     # configs/ffpp.py: B4, 380 px, batch 4
    python -m mat_jax.bench --reference=PATH --config=configs/ffpp.py:tiny --batch=2 --reference_steps=2
    python -m mat_jax.bench --reference=PATH --reference_memory --json=cmp.json

PATH is a checkout of the official PyTorch code (GitHub repository yoctta/multiple-attention).
Its modules are loaded from PATH when the benchmark runs; none of its code is copied into this
repository (it has no licence). Needs torch and kornia (`pip install -e .[reference]`); the
official AGDA.py imports kornia.

Taken from the checkout, unchanged: models/MAT.py (the model, `train_batch`, the AGDA second
pass and match loss inside `MAT.forward`, the regional loss), models/efficientnet/,
models/xception.py, AGDA.py, utils.py (`ACC`), config.py's `train_config` (fed with this
config's numbers on top of the recipe `ff-all-c23` + backbone, like main.py's `aexp`; it
builds the model, AGDA and optimiser arguments and the loss weights) and train.py's
`train_loss` (that function alone, read with `ast`: importing train.py asserts CUDA and
loads the data pipeline).

What this module does instead of train.py's loop, which needs CUDA, NCCL and DDP:
  * one process, one device: CUDA when JAX runs on a GPU and torch sees one, else the CPU.
    No DistributedDataParallel or SyncBatchNorm: at world size 1 they compute the same
    step (DDP's hook overhead is not counted);
  * the train step is the body of train.py's `run` for phase 'train': `net.train()`,
    `net(X, y, train_batch=True, AG=AG)` with AG=None without AGDA (as train.py does when
    AGDA_loss_weight is 0), `train_loss`, backward, `AdamW.step()`, `zero_grad()`, `ACC`
    on the logits; only the cross-rank metric averaging (`dist_average`) is left out;
    warnings are silenced as train.py does;
  * the eval forward is `net.eval()` and `net(X)` under `torch.no_grad()`;
  * the backbone comes from `EfficientNet.from_name` with random weights instead of
    `from_pretrained`, which downloads AdvProp weights (Xception's ImageNet download is
    skipped the same way), with this config's width/depth/drop-connect/dropout overrides
    (tiny configs). Weights do not change the time of a step;
  * if torchvision is not installed, a stub stands in for it: MAT.py imports
    torchvision.models but never uses it. A checkout without models/efficientnet/__init__.py
    gets `EfficientNet` from models/efficientnet/model.py, which is all that file would export.

Timing: per case (train step with AGDA, without, eval forward) both sides are built (our
compile excluded), run `--reference_warmup` untimed steps each, then `--reference_steps`
timed steps in turns (ours, official, ours, ...) on the same synthetic batch; the table has
the medians. torch gets as many threads as XLA's CPU client uses, the CPUs this process may
run on (its affinity mask); limit both with `taskset -c 0-3 python -m ...`.

Memory (`--reference_memory`): in one process the two sides' peaks cannot be told apart, so
each side runs again alone in a fresh subprocess (warm-up plus one step of every case) and
reports its peak RSS (VmHWM) and how far it rose above its RSS before building (ours includes
XLA compilation; both include the other side's imports, loaded but idle), and on a
GPU the device peak (JAX `peak_bytes_in_use`, torch `max_memory_allocated`).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mat_jax import bench

CASES = {"train": "train step, AGDA", "train_no_agda": "train step, no AGDA", "eval": "eval forward"}
# Present in every commit of yoctta/multiple-attention, and all of them are loaded.
REQUIRED_FILES = ("models/MAT.py", "models/efficientnet/model.py", "models/efficientnet/utils.py",
                  "models/xception.py", "AGDA.py", "utils.py", "config.py", "train.py")  # fmt: skip
# Top-level module names the official code imports itself by; ours never use them.
_OFFICIAL_TOP = ("models", "utils", "AGDA", "config")


# What the official code imports beyond torch's own packages (torchvision is stubbed).
_INSTALL = {"torch": "pip install -e .[reference]", "kornia": "pip install -e .[reference]"}


class NotACheckout(ValueError):
    """--reference does not name a usable checkout of the official code."""


# ---------------------------------------------------------------- loading the checkout
def _load(name: str, file: Path | None, package_dir: Path | None = None) -> types.ModuleType:
    if file is not None and file.is_file():
        locations = [str(package_dir)] if package_dir else None
        spec = importlib.util.spec_from_file_location(name, file, submodule_search_locations=locations)
    else:  # a folder without __init__.py: an empty package over it
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(package_dir)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    if spec.loader is not None:
        spec.loader.exec_module(module)
    return module


def _function_from(file: Path, name: str) -> Callable:
    """One top-level function of `file`, compiled alone (its module's imports never run)."""
    tree = ast.parse(file.read_text(), filename=str(file))
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if node is None:
        raise NotACheckout(f"{file}: no function {name}(); expected train.py of yoctta/multiple-attention")
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(file), "exec"), namespace)  # noqa: S102
    return namespace[name]


def _commit(root: Path) -> str:
    try:
        cmd = ["git", "-C", str(root), "rev-parse", "HEAD"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def load_official(path: str) -> types.SimpleNamespace:
    """The official model, AGDA, config and loss from the checkout at `path`."""
    root = Path(path).expanduser()
    expected = "a checkout of the official MAT code, the GitHub repository yoctta/multiple-attention"
    if not root.is_dir():
        raise NotACheckout(f"--reference={path}: no such directory; expected {expected}")
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise NotACheckout(f"--reference={path}: not {expected} (missing {', '.join(missing)}); "
                           "pass the folder that holds models/MAT.py, AGDA.py and train.py")  # fmt: skip
    root = root.resolve()
    train_loss = _function_from(root / "train.py", "train_loss")
    stub_torchvision = importlib.util.find_spec("torchvision") is None
    names = _OFFICIAL_TOP + (("torchvision",) if stub_torchvision else ())
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in names}
    for n in saved:
        del sys.modules[n]
    try:
        if stub_torchvision:
            sys.modules["torchvision"] = tv = types.ModuleType("torchvision")
            sys.modules["torchvision.models"] = tv.models = types.ModuleType("torchvision.models")
        utils = _load("utils", root / "utils.py")
        _load("models", root / "models" / "__init__.py", root / "models")
        eff = _load("models.efficientnet", root / "models" / "efficientnet" / "__init__.py",
                    root / "models" / "efficientnet")  # fmt: skip
        if not hasattr(eff, "EfficientNet"):
            eff.EfficientNet = importlib.import_module("models.efficientnet.model").EfficientNet
        mat = importlib.import_module("models.MAT")
        xception = importlib.import_module("models.xception")
        agda = _load("AGDA", root / "AGDA.py")
        config = _load("config", root / "config.py")
    except ModuleNotFoundError as e:
        fix = _INSTALL.get(e.name or "")
        if fix is None:
            raise NotACheckout(f"--reference={path}: importing the official code failed ({e})") from e
        raise NotACheckout(
            f"--reference={path}: the official code imports {e.name}, not installed here: {fix}"
        ) from e
    except Exception as e:  # noqa: BLE001 - any failure of foreign code is reported with its path
        raise NotACheckout(f"--reference={path}: importing the official code failed "
                           f"({type(e).__name__}: {e}); expected {expected}") from e  # fmt: skip
    finally:
        # The official modules keep their own references; the names go back to their owners.
        for n in [n for n in sys.modules if n.split(".")[0] in names]:
            del sys.modules[n]
        sys.modules.update(saved)
    return types.SimpleNamespace(
        root=root, commit=_commit(root), MAT=mat.MAT, EfficientNet=eff.EfficientNet, xception=xception,
        AGDA=agda.AGDA, train_config=config.train_config, train_loss=train_loss, ACC=utils.ACC,
        torchvision_stubbed=stub_torchvision,
    )  # fmt: skip


# ---------------------------------------------------------------- the official steps
def official_config(off, config, batch: int, *, agda: bool = True):
    """The checkout's `train_config` for this config's model, losses, AGDA and optimiser.

    Without AGDA its loss weight is 0: that is how train.py turns AGDA off (`run` then
    passes AG=None and `train_loss` leaves out the AGDA CE and match terms).
    """
    m, loss, o = config.model, config.loss, config.optim
    agda_cfg = config.get("agda") or {}
    size = int(m.image_size)
    params = dict(
        feature_layer="logits" if config.stage == "pretrain" else m.texture_layer,
        attention_layer=m.attention_layer, num_attentions=int(m.num_attention_maps),
        mid_dims=int(m.mid_dims), dropout_rate=float(m.head_dropout),
        drop_final_rate=float(m.final_dropout), num_classes=int(m.num_classes),
        alpha=float(loss.alpha), margin=float(loss.margin),
        inner_margin=[float(v) for v in loss.inner_margin], resize=(size, size), batch_size=batch,
        ensemble_loss_weight=float(loss.ce_weight), aux_loss_weight=float(loss.regional_weight),
        AGDA_loss_weight=float(loss.agda_ce_weight) if agda else 0.0,
        match_loss_weight=float(loss.match_weight),
        learning_rate=float(o.learning_rate), adam_betas=(float(o.b1), float(o.b2)),
        weight_decay=float(o.weight_decay),
    )  # fmt: skip
    if agda_cfg:  # AGDA.mod_func tests `type(threshold) == tuple`: keep tuples tuples
        a = agda_cfg
        params.update(AGDA_kernel_size=int(a["kernel_size"]), AGDA_sigma=float(a["sigma"]),
                      AGDA_scale_factor=float(a["scale_factor"]), AGDA_noise_rate=float(a["noise_rate"]),
                      AGDA_threshold=tuple(float(v) for v in a["threshold"]),
                      AGDA_zoom=tuple(float(v) for v in a["zoom"]))  # fmt: skip
    backbone = m.backbone.lower()
    return off.train_config("mat_jax_bench", ["ff-all-c23", backbone], **params)


@contextlib.contextmanager
def _offline_backbone(off, model_cfg):
    """MAT.__init__ downloads pretrained backbones: build them from their names instead."""
    overrides = {"drop_connect_rate": float(model_cfg.drop_connect_rate),
                 "dropout_rate": float(model_cfg.backbone_dropout)}  # fmt: skip
    for ours, theirs in (("width", "width_coefficient"), ("depth", "depth_coefficient"),
                         ("bn_momentum", "batch_norm_momentum")):  # fmt: skip
        if model_cfg.get(ours):  # 0: the variant's own
            overrides[theirs] = float(model_cfg[ours])

    def from_pretrained(cls, model_name, advprop=False, num_classes=1000, in_channels=3, escape=""):
        params = {**overrides, "num_classes": num_classes}
        return cls.from_name(model_name, override_params=params, escape=escape)

    efficientnet, zoo = off.EfficientNet, off.xception.model_zoo
    original = efficientnet.__dict__["from_pretrained"]
    efficientnet.from_pretrained = classmethod(from_pretrained)
    off.xception.model_zoo = types.SimpleNamespace(load_url=lambda *a, **k: {})
    try:
        yield
    finally:
        efficientnet.from_pretrained = original
        off.xception.model_zoo = zoo


def official_device():
    import jax
    import torch

    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def build_official(off, config, case: str, *, batch: int, device) -> Callable[[], None]:
    """A callable running one official step of `case`, returning when the device is done."""
    import torch

    cfg = official_config(off, config, batch, agda=case == "train")
    torch.manual_seed(int(config.seed))
    random.seed(int(config.seed))  # AGDA draws its threshold and steepness with `random`
    with _offline_backbone(off, config.model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = off.MAT(**cfg.net_config).to(device)
    host = bench.synthetic_host_batch(config, batch)
    x = torch.from_numpy(host["image"].transpose(0, 3, 1, 2).copy()).to(device)
    y = torch.from_numpy(host["label"].astype(np.int64)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if case == "eval":
        net.eval()

        def step():
            with torch.no_grad():
                net(x)

    else:
        # As train.py's `run`: no AGDA module when its loss weight is 0.
        ag = off.AGDA(**cfg.AGDA_config).to(device) if cfg.AGDA_loss_weight != 0 else None
        optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, betas=cfg.adam_betas,
                                      weight_decay=cfg.weight_decay)  # fmt: skip
        logits = "logits" if cfg.feature_layer == "logits" else "ensemble_logit"
        net.train()

        def step():
            with torch.set_grad_enabled(True):
                loss_pack = net(x, y, train_batch=True, AG=ag)
            off.train_loss(loss_pack, cfg).backward()
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                off.ACC(loss_pack[logits], y)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as train.py's main_worker
            step()
        sync()

    return run


def build_ours(config, case: str, *, batch: int) -> tuple[Callable[[], None], dict[str, Any]]:
    import jax

    if case == "eval":
        run, info = bench.build_eval(config, batch=batch)
    else:
        run, info = bench.build_train(config, batch=batch, agda=case == "train")
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
    import torch

    versions = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "numpy", "torch", "kornia"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu": bench.cpu_model(), "cores": os.cpu_count(), "threads": threads,
        "ours_device": bench.device_description(),
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
    import torch

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
        peak, source = bench.peak_memory_bytes()
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
    import torch

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
