"""Shared fixtures: the parity dump of the official PyTorch model, read from ../shared."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

# XLA:CPU compiles the tiny test models 2-4x faster without its expensive LLVM passes,
# and for them compilation, not execution, is most of a test's time; its older fusion
# emitters halve that again (the tiny stage-2 train step: 12.2 s -> 6.2 s to compile,
# 85 -> 96 ms a step). And each computation runs on one thread: the two pytest-xdist
# workers already fill the 2 cores, and for these models Eigen's thread pool only adds
# hand-offs (a warm stage-2 run through the command line took 27.6 s against 32.0 s, two
# side by side 37 s against 42-52 s; 2-core AMD EPYC). Set before JAX starts its backend;
# subprocesses started by the tests inherit it. The parity tests pass under these flags and
# without them.
TEST_XLA_FLAGS = (
    "--xla_llvm_disable_expensive_passes=true --xla_backend_optimization_level=0 "
    "--xla_cpu_multi_thread_eigen=false --xla_cpu_use_fusion_emitters=false"
)
os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)
# For the same reason the commands the tests start keep glibc's default malloc: huge pages
# (mat_jax/allocator.py) make a B4 step faster but compilation slower, and the two-process
# test took 57 s with them against 42-51 s without (2-core AMD EPYC). test_allocator
# clears this to check the re-execution itself.
os.environ.setdefault("MAT_JAX_TUNE_MALLOC", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Parity tolerances assume float32 matmuls at full precision on the CPU.
jax.config.update("jax_default_matmul_precision", "highest")

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT.parent / "shared" / "parity" / "reference_b4_seed0.npz"

# ------------------------------------------------------------------------- test order
# pytest-xdist (README's `-n 2 --dist loadfile`) hands each worker whole files, in the
# order the workers collected them, and a worker takes a new file while its current one
# has two tests or fewer left. By default xdist first sorts the files by how many tests
# they hold, which put the few-test, minute-long training files last: one worker ran them
# for 160 s after the other had finished. So the suite keeps collection order, and the
# files below (the longest, ~1 min or more each) come first, in an order where the file
# that makes the shared training runs (stage 1, stage 2) starts before the files that
# read them, and the demo's files run beside it.
SLOW_FILES_FIRST = (
    "test_train.py",  # makes data_root, stage1 and stage2_reference
    "test_demo.py",  # makes demo_run
    "test_train_parallel.py",
    "test_readme.py",
    "test_train_resume.py",
    "test_serve.py",
    "test_efficientnet.py",
    "test_parity.py",
    "test_onnx.py",
    "test_objective.py",
    "test_beam.py",
    "test_detectors.py",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def parity():
    """The whole dump as a dict of numpy arrays (read once; ~131 MB)."""
    if not PARITY.exists():
        pytest.fail(f"parity dump missing: expected {PARITY} (the project's ../shared folder)")
    with np.load(PARITY) as z:
        data = {k: z[k] for k in z.files}
    data["meta"] = json.loads(str(data["meta"]))
    return data


@pytest.fixture(scope="session")
def parity_state_dict(parity):
    """Only the PyTorch state-dict entries of the dump (names without a '/')."""
    return {k: v for k, v in parity.items() if "/" not in k and k != "meta"}


# --------------------------------------------------------------------------- training runs
# The training tests live in several files so that pytest-xdist spreads them over workers;
# the reference runs they compare against are made once per pytest run, by whichever
# worker asks first, and read by the others (a file lock between workers).


def _run_dir(tmp_path_factory) -> Path:
    """A folder shared by every worker of this pytest run (one per run, not per worker)."""
    base = tmp_path_factory.getbasetemp()  # under xdist: <run>/popen-gwN
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _once(tmp_path_factory, name: str, make):
    """`make(folder)` run once per pytest run; every worker gets its (pickled) result."""
    from filelock import FileLock

    root = _run_dir(tmp_path_factory)
    result = root / f"{name}.pickle"
    with FileLock(str(root / f"{name}.lock")):
        if not result.exists():
            folder = root / name
            folder.mkdir()
            result.write_bytes(pickle.dumps(make(folder)))
    return pickle.loads(result.read_bytes())


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    from train_utils import make_dataset

    return _once(tmp_path_factory, "records", make_dataset)


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """One persistent XLA cache for this pytest run: both workers and every command they start.

    The training runs (`train_utils.run_env`) store every program; elsewhere JAX's default
    keeps those that took a second or more to compile. Sharing it beyond the training runs
    took the suite from 10 min 05 s to 9 min 17 s (2-core AMD EPYC).
    """
    path = _run_dir(tmp_path_factory) / "jax_cache"
    path.mkdir(exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)
    return str(path)


@pytest.fixture(scope="session")
def stage1(data_root, tmp_path_factory):
    """Stage 1 (backbone CE) for 24 steps of 8: the reference run for several tests."""
    from mat_jax import train
    from train_utils import tiny_config

    def make(folder):
        config = tiny_config(
            "pretrain", data_root, steps_per_epoch=8, epochs=3, log_every_steps=4,
            checkpoint_every_steps=8, eval_every_steps=12, profile_steps=2, profile_first_step=3,
        )
        config.optim.learning_rate = 3e-3  # a few dozen steps must visibly learn
        summary = train.train_and_evaluate(config, str(folder))
        return str(folder), config, summary

    return _once(tmp_path_factory, "stage1", make)


@pytest.fixture(scope="session")
def stage2_reference(data_root, stage1, compile_cache, tmp_path_factory):
    """An uninterrupted stage-2 run (MAT + AGDA, from the stage-1 checkpoint) on 1 device."""
    from train_utils import run, run_env, stage2_command

    def make(folder):
        run(stage2_command(folder, data_root, stage1[0]), run_env(compile_cache))
        return folder

    return _once(tmp_path_factory, "stage2_ref", make)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`python -m mat_jax.main --config=configs/demo.py:small`: data_prep, training, evaluation.

    Returns (workdir, console output); made once per pytest run.
    """
    import subprocess
    import sys

    def make(folder):
        workdir = folder / "work"
        res = subprocess.run(
            [sys.executable, "-m", "mat_jax.main", "--config=configs/demo.py:small", f"--workdir={workdir}"],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
        )
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return workdir, res.stdout

    return _once(tmp_path_factory, "demo", make)
