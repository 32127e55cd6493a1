"""Records a config can make for itself: run its `config.data.prepare` commands when needed.

A config names where its records live (`config.data.root`, where "{workdir}" stands for the
run's workdir) and, optionally, the data_prep command lines that make them
(`config.data.prepare`: the offline demo's `python -m data_prep.demo ...` and
`python -m data_prep.build ...`). `ensure_records` fills in the placeholders and, when the
root holds no records summary yet, runs the commands in order, each as its own process:
`mat_jax` never imports data_prep, and the console shows the exact commands a user would
type. data_prep's own resumability makes a killed preparation restartable with the same
command.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

from absl import logging

from mat_jax.data import records


def _fill(text: str, config, workdir: str) -> str:
    # str.replace, not str.format: a bucket path or a flag may hold other braces.
    values = {"{workdir}": workdir, "{root}": str(config.data.root), "{seed}": str(config.seed)}
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def _run(command: str) -> None:
    argv = shlex.split(command)
    if argv and argv[0] == "python":
        argv[0] = sys.executable
    print("+ " + " ".join(argv), flush=True)
    # data_prep runs no TensorFlow maths (only its file and metadata helpers), so oneDNN's
    # start-up notice, two lines per TensorFlow import, is only noise on the console.
    result = subprocess.run(argv, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"})
    if result.returncode != 0:
        raise RuntimeError(f"data preparation failed (exit code {result.returncode}): {command}; fix the "
                           "cause it printed above and run the same command again (it resumes)")


def _run_all(commands: list[str]) -> float:
    """Runs the commands in order; returns the seconds they took."""
    t0 = time.perf_counter()
    for command in commands:
        _run(command)
    return time.perf_counter() - t0


def ensure_perturbed(config, workdir: str) -> float | None:
    """Fills in `config.robustness.root` and runs `config.robustness.prepare` (after the clean
    records exist: the copies are cut with their landmarks). data_prep confirms copies that are
    already complete and finishes interrupted ones, so the commands always run."""
    ensure_records(config, workdir)
    config.robustness.root = _fill(str(config.robustness.root), config, workdir)
    commands = [_fill(c, config, workdir) for c in config.robustness.prepare]
    return _run_all(commands) if commands else None


def ensure_records(config, workdir: str) -> float | None:
    """Sets `config.data.root` to its filled-in path and makes the records there if the config
    says how and they are missing. Returns the seconds spent preparing, or None if nothing ran."""
    config.data.root = _fill(str(config.data.root), config, workdir)
    commands = [_fill(c, config, workdir) for c in config.data.prepare]
    if not commands or not config.data.root or records.load_summary(config.data.root) is not None:
        return None
    seconds = _run_all(commands)
    logging.info("records ready in %s after %.0f s", config.data.root, seconds)
    return seconds
