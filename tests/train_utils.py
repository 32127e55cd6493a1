"""Shared by the training tests: generated records, the tiny config, subprocess runs of main.

The records hold a learnable task: fakes carry a visible blended patch with its own
texture over a face-like ellipse. Subprocess runs go through the real command line
(`python -m mat_jax.main`) and share one persistent compilation cache with the same XLA
flags (conftest's TEST_XLA_FLAGS), so a program compiled by one run is reused by the next
identical one, also across pytest-xdist workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from flax import nnx

from configs.ffpp import get_config
from conftest import TEST_XLA_FLAGS
from mat_jax import checkpointing, state as state_lib
from mat_jax.data import records

ROOT = Path(__file__).resolve().parents[1]


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
    model = state_lib.create_model(config, 0)
    checkpointing.load_model(path, model)
    return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model))}


def run_env(compile_cache: str, devices: int = 1, **extra) -> dict[str, str]:
    env = dict(os.environ)
    flags = TEST_XLA_FLAGS + (f" --xla_force_host_platform_device_count={devices}" if devices > 1 else "")
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


def stage2_command(workdir, data_root, init_from, *extra) -> list[str]:
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


def run(cmd, env, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def steps(workdir) -> list[int]:
    path = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() else []


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
