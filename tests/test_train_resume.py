"""SIGTERM (preemption), SIGKILL and resume through the command line: same final parameters."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from mat_jax import checkpointing
from train_utils import ROOT, checkpoint_params, run, run_env, stage2_command, steps, tiny_config

pytestmark = pytest.mark.slow  # each test trains through the command line, ~1 min on 2 cores

# The final test evaluation changes no parameter and no checkpoint's metadata, and
# test_train checks it on the reference run; here it would only cost each rerun ~5 s.
NO_FINAL_EVAL = "--config.train.final_eval_split="


def _assert_same_final_params(workdir, reference) -> None:
    config = tiny_config("mat", "")
    ref = checkpoint_params(Path(reference) / "checkpoints" / "12", config)
    got = checkpoint_params(Path(workdir) / "checkpoints" / "12", config)
    assert ref.keys() == got.keys()
    for k in ref:  # bit for bit: same data, keys, alpha and learning rate after the restart
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def _signal_after_checkpoint(cmd, env, workdir, log, sig, after: int) -> int:
    """Runs `cmd`, sends `sig` once a checkpoint beyond step `after` is committed; the exit code."""
    # The log goes to a file, not a pipe that nobody reads while it runs; a step directory
    # appears only when orbax commits it (it writes to a temporary name first).
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 300
            while not any(s > after for s in steps(workdir)):
                assert proc.poll() is None, f"ended before a checkpoint beyond {after}:\n{log.read_text()[-4000:]}"
                assert time.time() < deadline, f"no checkpoint beyond {after} within 300 s"
                time.sleep(0.02)
            proc.send_signal(sig)
            return proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_preempted_then_killed_then_resumed_matches_uninterrupted(
    stage2_reference, data_root, stage1, compile_cache, tmp_path
):
    """SIGTERM (a preemption notice), then SIGKILL of the resumed run, then the same command again.

    SIGTERM: save after the current step, exit 143. SIGKILL: nothing more is written. Each rerun
    resumes from the last committed checkpoint, and the third ends with the uninterrupted run's
    final parameters and best step. Three runs in one test rather than two tests of two runs
    each: a run through the command line costs ~30 s on 2 cores.
    """
    workdir = tmp_path / "interrupted"
    cmd = stage2_command(workdir, data_root, stage1[0], NO_FINAL_EVAL)
    env = run_env(compile_cache)

    log = tmp_path / "preempted.log"
    rc = _signal_after_checkpoint(cmd, env, workdir, log, signal.SIGTERM, after=0)
    text = log.read_text()
    assert rc == 143, text[-4000:]
    assert "stopped by SIGTERM after step" in text
    saved = steps(workdir)
    stopped = max(saved)
    assert 4 < stopped < 12, saved  # a save at the step it stopped after, beyond the periodic one
    assert checkpointing.read_meta(workdir / "checkpoints" / str(stopped))["step"] == stopped

    log = tmp_path / "killed.log"
    rc = _signal_after_checkpoint(cmd, env, workdir, log, signal.SIGKILL, after=stopped)
    assert rc == -signal.SIGKILL, log.read_text()[-4000:]
    steps_at_kill = steps(workdir)
    assert 12 not in steps_at_kill, f"the run finished before the kill: {steps_at_kill}"

    run(cmd, env)
    _assert_same_final_params(workdir, stage2_reference)
    best_steps = [checkpointing.read_meta(w)["best_step"] for w in (workdir, stage2_reference)]
    assert best_steps[0] == best_steps[1]
