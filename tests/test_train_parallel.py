"""The same training over 8 CPU devices, and over two processes joined by jax.distributed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from mat_jax import checkpointing, state as state_lib
from train_utils import ROOT, checkpoint_params, run, run_env, stage2_command, steps, tiny_config, train_scalars

pytestmark = pytest.mark.slow  # each test trains through the command line, ~1 min on 2 cores


def test_eight_devices_match_one(stage2_reference, data_root, stage1, compile_cache, tmp_path):
    """The same 4 steps with the batch of 8 split over 8 CPU devices (1 image each).

    BatchNorm statistics and the centre update are global means under jit, so the runs
    differ only by float summation order. Biases that feed a BatchNorm (directly or through
    a linear conv) have a gradient that is exactly zero in exact arithmetic: AdamW turns
    their rounding noise into steps of size ~lr in a random direction, so for them only
    |diff| <= 2 * steps * lr is meaningful; everything else must agree to 1e-4.
    """
    workdir = tmp_path / "eight"
    cmd = stage2_command(
        workdir, data_root, stage1[0], "--config.train.num_train_steps=4", "--config.train.final_eval_split="
    )
    run(cmd, run_env(compile_cache, devices=8))
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
            env = run_env(compile_cache, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
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
    assert steps(workdir) == [3, 6]
    # The checkpoint both wrote holds those parameters, and process 0 wrote the eval files.
    config = tiny_config("pretrain", "")
    model = state_lib.create_model(config, 0)
    checkpointing.load_model(workdir / "checkpoints" / "6", model)
    assert state_lib.params_fingerprint(nnx.state(model)) == prints[0]
    metrics = json.loads((workdir / "eval" / "test" / "metrics.json").read_text())
    assert metrics["metrics"]["frame"]["n"] == 24  # every test record once, from both hosts' files
