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
        checkpoint_every_steps=8, eval_every_steps=12,
    )
    config.optim.learning_rate = 3e-3  # a few dozen steps must visibly learn
    summary = train.train_and_evaluate(config, workdir)
    return workdir, config, summary


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
    with pytest.raises(train.NonFiniteLossError, match=r"at step 2[5-9]\b|at step 3[0-2]\b") as err:
        train.train_and_evaluate(config, str(workdir))
    assert "Last good checkpoint: step 24" in str(err.value)
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
