"""End-to-end training on generated records: learning, evaluation files, NaN stop, bad data,
kill-and-resume, 8 devices vs 1, and two processes joined by jax.distributed.

Everything uses the `tiny` model (EfficientNet-B0 at width 0.25 / depth 0.2, 64 px, M=2).
The records hold a learnable task: fakes carry a visible blended patch with its own
texture over a face-like ellipse. Multi-device and multi-process runs go through the real
command line (`python -m mat_jax.main`) in subprocesses that share one persistent
compilation cache, so a program compiled by one run is reused by the next identical one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from configs.ffpp import get_config
from mat_jax import checkpointing, records, train

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- data


def face_image(rng: np.random.Generator, size: int, fake: bool) -> np.ndarray:
    """A face-like ellipse on a gradient; fakes get a blended, textured patch."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    bg = np.stack([a + b * xx + c * yy for a, b, c in rng.uniform(0.1, 0.6, (3, 3))], -1)
    cy, cx = 0.5 + rng.uniform(-0.05, 0.05, 2)
    face = ((yy - cy) / 0.38) ** 2 + ((xx - cx) / 0.3) ** 2 < 1
    skin = np.array([0.85, 0.65, 0.5]) * rng.uniform(0.7, 1.1)
    img = np.where(face[..., None], skin, bg) + rng.normal(0, 0.03, (size, size, 3))
    if fake:
        h = size // 3
        y0, x0 = int(size * 0.4) + rng.integers(-3, 4), int(size * 0.35) + rng.integers(-3, 4)
        patch = rng.uniform(0, 1, (h, h, 3)) * 0.5 + np.array([0.9, 0.3, 0.3]) * 0.5
        img[y0 : y0 + h, x0 : x0 + h] = 0.3 * img[y0 : y0 + h, x0 : x0 + h] + 0.7 * patch
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_dataset(root, videos=None, frames: int = 4, size: int = 72, shards: int = 2, seed: int = 0) -> str:
    """Writes FF++-shaped records (reals "original", fakes of two methods) for train/val/test."""
    import tensorflow as tf

    videos = videos or {"train": 16, "val": 6, "test": 6}
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in videos.items():
        recs = []
        for v in range(n):
            fake = v % 2 == 1
            method = ("Deepfakes", "FaceSwap")[(v // 2) % 2] if fake else records.REAL_METHOD
            for f in range(frames):
                png = tf.io.encode_png(face_image(rng, size, fake)).numpy()
                recs.append(
                    records.FaceRecord(
                        image=png, label=int(fake), dataset="synth", split=split, method=method,
                        video_id=f"{method}/{split}_{v:03d}", frame_index=5 * f,
                    )
                )
        for s in range(shards):
            records.write(records.shard_path(str(root), "synth", split, s, shards), recs[s::shards])
    return str(root)


def tiny_config(stage: str, root: str, **train_overrides):
    config = get_config(f"stage={stage},tiny,smoke")
    config.data.root = root
    config.train.batch_size = 8
    config.train.eval_batch_size = 8
    for key, value in train_overrides.items():
        config.train[key] = value
    return config


def checkpoint_params(path, config) -> dict[str, np.ndarray]:
    """Flat {path: array} of the model state stored at `path` (any form `resolve` accepts)."""
    model = train.create_model(config, 0)
    checkpointing.load_model(path, model)
    return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model))}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("records"))


# --------------------------------------------------------------------------- in process: stage 1


@pytest.fixture(scope="module")
def stage1(data_root, tmp_path_factory):
    """Stage 1 (backbone CE) for 24 steps of 8: the reference run for several tests."""
    workdir = str(tmp_path_factory.mktemp("stage1"))
    config = tiny_config(
        "pretrain", data_root, steps_per_epoch=8, epochs=3, log_every_steps=4,
        checkpoint_every_steps=8, eval_every_steps=12, profile_steps=2, profile_first_step=3,
    )
    config.optim.learning_rate = 3e-3  # a few dozen steps must visibly learn
    summary = train.train_and_evaluate(config, workdir)
    return workdir, config, summary


def test_profile_trace_written(stage1):
    traces = list(Path(stage1[0]).glob("plugins/profile/*/*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0


def test_stage1_loss_falls_and_eval_files(stage1):
    workdir, _, summary = stage1
    history = summary["history"]
    assert [s for s, _ in history] == [4, 8, 12, 16, 20, 24]
    first, last = history[0][1], history[-1][1]
    assert last["loss"] < 0.7 * first["loss"], history
    assert last["accuracy"] > 0.8
    for _, m in history:
        assert {"loss", "ce", "accuracy", "learning_rate", "grad_norm"} <= set(m)
    assert history[0][1]["learning_rate"] == pytest.approx(3e-3)
    # The best checkpoint is chosen on "val" (evaluated at 12 and 24), never on "test".
    assert summary["best"]["step"] in (12, 24) and summary["best"]["metric"] == "frame/auc"
    # No claim on eval accuracy: after 24 steps the BatchNorm running averages (decay 0.99)
    # are still mostly their initial values, so eval-mode scores are not yet informative.
    assert 0.0 <= summary["final_eval"]["frame"]["auc"] <= 1.0
    assert summary["final_eval"]["video"]["n"] == 6
    for split in ("val", "test"):
        out = Path(workdir) / "eval" / split
        for name in ("metrics.json", "videos.csv", "frames.csv", "roc.png", "history.jsonl"):
            assert (out / name).stat().st_size > 0, out / name
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["split"] == split and metrics["metrics"]["frame"]["n"] == 24
        assert len((out / "frames.csv").read_text().splitlines()) == 1 + 24
        assert len((out / "videos.csv").read_text().splitlines()) == 1 + 6
    assert len((Path(workdir) / "eval" / "val" / "history.jsonl").read_text().splitlines()) == 2
    assert sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit()) == [
        12, 16, 24
    ]  # keep 3: periodic (8, 16, 24) and evaluation (12, 24) saves
    assert list(Path(workdir).glob("events.out.tfevents.*")), "no TensorBoard events"


def test_nan_stops_before_checkpoint(stage1, tmp_path):
    """A diverging continuation stops at the first non-finite step; checkpoint 24 survives."""
    src, config, _ = stage1
    workdir = tmp_path / "nan"
    shutil.copytree(src, workdir)
    before = checkpoint_params(workdir / "checkpoints" / "24", config)
    config = config.copy_and_resolve_references()
    config.optim.learning_rate = 1e30
    config.train.epochs = 4  # 8 more steps; a checkpoint would be due at step 32
    config.train.log_every_steps = 100  # the save at 32 must still check every step's loss
    with pytest.raises(train.NonFiniteLossError, match=r"at step 25\b") as err:
        train.train_and_evaluate(config, str(workdir))
    # The first update after the restart overflows the weights: its loss was still finite,
    # the parameter norm after it is not, and the next step's loss would be NaN.
    assert "param_norm (inf)" in str(err.value) and "Last good checkpoint: step 24" in str(err.value)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 24
    after = checkpoint_params(workdir / "checkpoints" / "24", config)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_corrupt_record_names_the_file(data_root, tmp_path):
    root = tmp_path / "corrupt"
    shutil.copytree(data_root, root)
    victim = sorted(root.glob("*-train.tfrecord-*"))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncated mid-record
    config = tiny_config("pretrain", str(root), steps_per_epoch=2, epochs=1)
    with pytest.raises(Exception, match=victim.name):
        train.train_and_evaluate(config, str(tmp_path / "work"))


# --------------------------------------------------------------------------- subprocesses


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))


# Halves XLA's CPU compile time (the MAT + AGDA step: ~40 s -> ~12 s on 2 cores) at no cost
# in step time for these tiny models; every subprocess run uses the same flags, so runs
# that are compared compile the same programs.
FAST_COMPILE = "--xla_llvm_disable_expensive_passes=true --xla_backend_optimization_level=0"


def _env(compile_cache: str, devices: int = 1, **extra) -> dict[str, str]:
    env = dict(os.environ)
    flags = FAST_COMPILE + (f" --xla_force_host_platform_device_count={devices}" if devices > 1 else "")
    env.update(
        XLA_FLAGS=flags,
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=compile_cache,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def _stage2_command(workdir, data_root, init_from, *extra) -> list[str]:
    """The stage-2 command line of the subprocess runs: 3 epochs of 4 steps of 8 images."""
    return [
        sys.executable, "-m", "mat_jax.main", "--config=configs/ffpp.py:tiny,smoke", f"--workdir={workdir}",
        f"--config.data.root={data_root}", f"--config.init_from={init_from}",
        "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
        "--config.train.steps_per_epoch=4", "--config.train.epochs=3",
        "--config.train.checkpoint_every_steps=4", "--config.train.eval_every_steps=6",
        "--config.train.keep_checkpoints=10", "--config.train.log_every_steps=2",
        *extra,
    ]  # fmt: skip


def _run(cmd, env, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def _steps(workdir) -> list[int]:
    path = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() else []


@pytest.fixture(scope="module")
def stage2_reference(data_root, stage1, compile_cache, tmp_path_factory):
    """An uninterrupted stage-2 run (MAT + AGDA, from the stage-1 checkpoint) on 1 device."""
    workdir = tmp_path_factory.mktemp("stage2_ref")
    _run(_stage2_command(workdir, data_root, stage1[0]), _env(compile_cache))
    return workdir


def test_stage2_from_stage1_writes_everything(stage2_reference, stage1):
    workdir = Path(stage2_reference)
    assert _steps(workdir) == [4, 6, 8, 12]  # periodic (4, 8, 12) and evaluation (6, 12) saves
    meta = checkpointing.read_meta(workdir / "checkpoints" / "12")
    assert meta["step"] == meta["data_position"] == 12 and meta["stage"] == "mat"
    assert meta["alpha"] == pytest.approx(0.05 * 0.9**3) and meta["learning_rate"] == pytest.approx(1e-4)
    assert meta["best_metric"] == "frame/auc" and meta["best_step"] in (6, 12)
    for name in ("metrics.json", "videos.csv", "frames.csv", "roc.png"):
        assert (workdir / "eval" / "test" / name).exists()
    # The backbone started from stage 1: 4 AdamW steps moved it by at most ~4 lr.
    config = tiny_config("mat", "")
    mat = checkpoint_params(workdir / "checkpoints" / "4", config)
    backbone = checkpoint_params(Path(stage1[0]) / "best", stage1[1])
    kernel = "conv_stem/kernel"
    assert np.max(np.abs(mat[f"backbone/{kernel}"] - backbone[kernel])) < 1e-2
    assert np.any(mat["centers"] != 0)  # the centre update was written back


def _signal_after_first_checkpoint(cmd, env, workdir, log, sig) -> int:
    """Runs `cmd`, sends `sig` once checkpoint 4 is committed, returns the exit code."""
    # The log goes to a file, not a pipe that nobody reads while it runs; the step directory
    # appears only when orbax commits it (it writes to a temporary name first).
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 300
            while not (workdir / "checkpoints" / "4").exists():
                assert proc.poll() is None, f"ended before its first checkpoint:\n{log.read_text()[-4000:]}"
                assert time.time() < deadline, "no checkpoint within 300 s"
                time.sleep(0.02)
            proc.send_signal(sig)
            return proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _assert_same_final_params(workdir, reference) -> None:
    config = tiny_config("mat", "")
    ref = checkpoint_params(Path(reference) / "checkpoints" / "12", config)
    got = checkpoint_params(Path(workdir) / "checkpoints" / "12", config)
    assert ref.keys() == got.keys()
    for k in ref:  # bit for bit: same data, keys, alpha and learning rate after the restart
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_kill_and_resume_matches_uninterrupted(stage2_reference, data_root, stage1, compile_cache, tmp_path):
    """SIGKILL after the first checkpoint, rerun the same command: same final parameters."""
    workdir = tmp_path / "killed"
    cmd = _stage2_command(workdir, data_root, stage1[0])
    env = _env(compile_cache)
    _signal_after_first_checkpoint(cmd, env, workdir, tmp_path / "killed.log", signal.SIGKILL)
    steps_at_kill = _steps(workdir)
    assert 12 not in steps_at_kill, f"the run finished before the kill: {steps_at_kill}"
    _run(cmd, env)
    assert _steps(workdir)[-1] == 12
    _assert_same_final_params(workdir, stage2_reference)
    best_steps = [checkpointing.read_meta(w)["best_step"] for w in (workdir, stage2_reference)]
    assert best_steps[0] == best_steps[1]


def test_sigterm_checkpoints_then_resume_matches(stage2_reference, data_root, stage1, compile_cache, tmp_path):
    """SIGTERM (a preemption notice): save after the current step, exit 143; a rerun ends identical."""
    workdir = tmp_path / "preempted"
    cmd = _stage2_command(workdir, data_root, stage1[0])
    env = _env(compile_cache)
    log = tmp_path / "preempted.log"
    rc = _signal_after_first_checkpoint(cmd, env, workdir, log, signal.SIGTERM)
    text = log.read_text()
    assert rc == 143, text[-4000:]
    assert "stopped by SIGTERM after step" in text
    steps = _steps(workdir)
    stopped = max(steps)
    assert 4 < stopped < 12, steps  # a save at the step it stopped after, beyond the periodic one
    assert checkpointing.read_meta(workdir / "checkpoints" / str(stopped))["step"] == stopped
    _run(cmd, env)
    _assert_same_final_params(workdir, stage2_reference)


def train_scalars(workdir) -> dict[int, dict[str, float]]:
    """The "train/*" scalars the run wrote to TensorBoard, by step."""
    import tensorflow as tf

    out: dict[int, dict[str, float]] = {}
    for path in sorted(Path(workdir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                if v.tag.startswith("train/"):
                    out.setdefault(event.step, {})[v.tag[6:]] = float(tf.make_ndarray(v.tensor))
    return out


def test_eight_devices_match_one(stage2_reference, data_root, stage1, compile_cache, tmp_path):
    """The same 4 steps with the batch of 8 split over 8 CPU devices (1 image each).

    BatchNorm statistics and the centre update are global means under jit, so the runs
    differ only by float summation order. Biases that feed a BatchNorm (directly or through
    a linear conv) have a gradient that is exactly zero in exact arithmetic: AdamW turns
    their rounding noise into steps of size ~lr in a random direction, so for them only
    |diff| <= 2 * steps * lr is meaningful; everything else must agree to 1e-4.
    """
    workdir = tmp_path / "eight"
    cmd = _stage2_command(
        workdir, data_root, stage1[0], "--config.train.num_train_steps=4", "--config.train.final_eval_split="
    )
    _run(cmd, _env(compile_cache, devices=8))
    config = tiny_config("mat", "")
    ref = checkpoint_params(Path(stage2_reference) / "checkpoints" / "4", config)
    got = checkpoint_params(workdir / "checkpoints" / "4", config)
    lr, steps = config.optim.learning_rate, 4
    off = {}
    for k in ref:
        scale = max(1.0, float(np.max(np.abs(ref[k]))))
        diff = float(np.max(np.abs(got[k] - ref[k])))
        tol = 2 * steps * lr if k.endswith("/bias") else 1e-4 * scale
        if diff > tol:
            off[k] = diff
    assert not off, off
    # Loss terms, accuracy and gradient norm of every logged interval (steps 1-2, 3-4).
    ref_m, got_m = train_scalars(stage2_reference), train_scalars(workdir)
    for step in (2, 4):
        for name in ("loss", "ce", "regional", "agda_ce", "match", "accuracy", "grad_norm", "alpha"):
            assert got_m[step][name] == pytest.approx(ref_m[step][name], rel=1e-4, abs=1e-6), (step, name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together(data_root, compile_cache, tmp_path):
    """Two CPU processes joined by jax.distributed on localhost, each reading its own files."""
    workdir = tmp_path / "two"
    port = _free_port()
    cmd = [
        sys.executable, "-m", "mat_jax.main", "--config=configs/ffpp.py:stage=pretrain,tiny,smoke",
        f"--workdir={workdir}", f"--config.data.root={data_root}",
        "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
        "--config.train.steps_per_epoch=3", "--config.train.epochs=2", "--config.train.log_every_steps=3",
        "--config.train.checkpoint_every_steps=3", "--config.train.eval_every_steps=6",
    ]  # fmt: skip
    # Logs go to files: a process blocked on a full pipe would stall the other in a collective.
    log_paths = [tmp_path / f"process{i}.log" for i in range(2)]
    procs = []
    for i, path in enumerate(log_paths):
        with path.open("w") as err:
            env = _env(compile_cache, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                       JAX_PROCESS_ID=str(i))  # fmt: skip
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err))
    deadline = time.time() + 600
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [path.read_text() for path in log_paths]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-6000:]
    prints = []
    for i, log in enumerate(logs):
        assert f"JAX process {i} of 2" in log
        line = [l for l in log.splitlines() if "final parameters sha256" in l]
        assert len(line) == 1, log[-3000:]
        prints.append(line[0].split()[-1])
    assert prints[0] == prints[1]
    assert _steps(workdir) == [3, 6]
    # The checkpoint both wrote holds those parameters, and process 0 wrote the eval files.
    config = tiny_config("pretrain", "")
    model = train.create_model(config, 0)
    checkpointing.load_model(workdir / "checkpoints" / "6", model)
    assert train.params_fingerprint(nnx.state(model)) == prints[0]
    metrics = json.loads((workdir / "eval" / "test" / "metrics.json").read_text())
    assert metrics["metrics"]["frame"]["n"] == 24  # every test record once, from both hosts' files
