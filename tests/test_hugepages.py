"""The commands re-execute once with glibc's huge-page tunable (mat_jax/hugepages.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mat_jax import hugepages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "orig,argv,module",
    [
        (["python", "-m", "mat_jax.main", "--config=x"], ["-m", "--config=x"], "mat_jax.main"),
        (["python", "-u", "-X", "dev", "-m", "mat_jax.bench"], ["-m"], "mat_jax.bench"),
        (["python", "-u", "-mmat_jax.predict", "a.mp4"], ["-m", "a.mp4"], "mat_jax.predict"),
        (["python", "script.py", "-m"], ["script.py", "-m"], None),  # a script, not -m
        (["python", "-c", "pass"], ["-c"], None),
    ],
)
def test_module_run(orig, argv, module):
    assert hugepages.module_run(orig, argv) == module


def test_wanted_only_where_it_changes_something():
    if not (sys.platform.startswith("linux") and hugepages._glibc_has_tunable()):
        assert not hugepages.wanted({}, mode="madvise")
        return
    assert hugepages.wanted({}, mode="madvise")
    assert not hugepages.wanted({}, mode="always")  # every mapping already gets huge pages
    assert not hugepages.wanted({}, mode="never")
    assert not hugepages.wanted({}, mode=None) or hugepages.thp_mode() == "madvise"
    assert not hugepages.wanted({hugepages.OPT_OUT: "0"}, mode="madvise")
    assert not hugepages.wanted({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, mode="madvise")


def test_environment_keeps_other_tunables():
    env = hugepages.environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert env["A"] == "b"
    assert hugepages.environment({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_thp_mode_reads_the_bracketed_mode(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert hugepages.thp_mode(str(f)) == "madvise"
    assert hugepages.thp_mode(str(tmp_path / "missing")) is None


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="needs Linux's /proc")
def test_a_command_runs_with_the_tunable_in_the_same_process():
    # The process itself (same pid: execve, not a child) ends up with the tunable exactly
    # when `wanted` says so; read from /proc as soon as the command has started.
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hugepages.OPT_OUT)}
    proc = subprocess.Popen([sys.executable, "-m", "mat_jax.main", "--helpshort"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        expected = hugepages.wanted(env)
        seen = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _environ(proc.pid).get("GLIBC_TUNABLES")
            if seen or not expected:
                time.sleep(0.5)  # long enough for a re-exec that should not happen
                seen = _environ(proc.pid).get("GLIBC_TUNABLES") if proc.poll() is None else seen
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert (seen == hugepages.TUNABLE) if expected else seen is None
