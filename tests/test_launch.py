"""Launchers: the commands they would issue, and the remote shell they generate, run locally."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_tpu_launcher():
    spec = importlib.util.spec_from_file_location("tpu_vm", ROOT / "launch" / "tpu_vm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dry_run(*argv: str) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "launch" / "tpu_vm.py"), *argv, "--dry-run"],
                         capture_output=True, text=True, check=True)
    return out.stdout


def test_tpu_dry_run_v4_32():
    out = dry_run("--name=mat-v4", "--zone=us-central2-b", "--type=v4-32", "--spot", "--workdir=gs://bkt/runs/a",
                  "--set=data.root=gs://bkt/records/ffpp", "--set=train.batch_size=128")
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert lines[0].startswith("gcloud compute tpus tpu-vm create mat-v4 --accelerator-type=v4-32 "
                               "--version=tpu-ubuntu2204-base --zone=us-central2-b --spot")
    assert any("git -C" in line and "archive" in line for line in lines)
    assert any(" scp " in line and "--worker=all" in line for line in lines)
    run = next(line for line in lines if "mat_jax.main" in line)
    assert "--worker=all" in run
    for flag in ("--config=configs/ffpp.py", "--workdir=gs://bkt/runs/a", "--config.data.root=gs://bkt/records/ffpp",
                 "--config.train.batch_size=128"):
        assert flag in run
    assert any("--worker=0" in line and "tail" in line for line in lines)
    assert lines[-1] == "gcloud compute tpus tpu-vm delete mat-v4 --quiet --zone=us-central2-b"
    assert "delete" not in dry_run("--name=x", "--zone=z", "--type=v4-8", "--workdir=gs://b/w", "--keep")


def test_tpu_launcher_rejects_local_workdir():
    res = subprocess.run([sys.executable, str(ROOT / "launch" / "tpu_vm.py"), "--name=x", "--zone=z",
                          "--type=v4-8", "--workdir=/tmp/w", "--dry-run"], capture_output=True, text=True)
    assert res.returncode == 2 and "must be a gs:// path" in res.stderr


def test_remote_run_and_stream_shell_work(tmp_path):
    """The ssh payloads, executed by a local bash with a stand-in worker home."""
    launcher = load_tpu_launcher()
    args = launcher.parse_args(["--name=x", "--zone=z", "--type=v4-8", "--workdir=gs://b/run dir",
                                "--set=data.root=gs://b/it's"])
    home = tmp_path / "home"
    (home / "mat_jax").mkdir(parents=True)
    python = home / "mat_jax_venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    # The worker's interpreter: prints the arguments it got, one per line, and fails with 3.
    python.write_text('#!/bin/sh\nfor a in "$@"; do echo "arg:$a"; done\nexit 3\n')
    python.chmod(0o755)
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}

    def payload(cmd):
        return next(c for c in cmd if c.startswith("--command=")).removeprefix("--command=")

    subprocess.run(["bash", "-c", payload(launcher.run_command(args))], env=env, check=True, timeout=30)
    stream = subprocess.run(["bash", "-c", payload(launcher.stream_command(args))], env=env,
                            capture_output=True, text=True, timeout=30)
    assert stream.returncode == 3  # the training exit code comes back through the stream step
    got = [line.removeprefix("arg:") for line in stream.stdout.splitlines() if line.startswith("arg:")]
    assert got == ["-m", "mat_jax.main", "--config=configs/ffpp.py", "--workdir=gs://b/run dir", "--mode=train",
                   "--config.data.root=gs://b/it's"]


def test_gpu_script_dry_run_and_lint():
    script = ROOT / "launch" / "gpu.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], check=True)
    out = subprocess.run(["bash", str(script), "--workdir=/tmp/w", "--venv=/nonexistent/venv", "--dry-run", "--",
                          "--config.train.batch_size=64"], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].endswith("-m venv /nonexistent/venv")
    assert "jax\\[cuda12\\]" in lines[2]
    assert lines[-1].strip() == ("/nonexistent/venv/bin/python -m mat_jax.main --config=configs/ffpp.py "
                                 "--workdir=/tmp/w --config.train.batch_size=64")
    bad = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--workdir=DIR is required" in bad.stderr
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script), str(ROOT / ".ci" / "run")], check=True)
    else:
        pytest.skip("shellcheck not installed: bash -n only")
