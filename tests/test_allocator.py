"""The commands re-execute once with glibc's malloc tunables (mat_jax/allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mat_jax import allocator

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
    assert allocator.module_run(orig, argv) == module


def test_wanted_unless_malloc_is_already_tuned():
    if not (sys.platform.startswith("linux") and allocator._glibc()):
        assert not allocator.wanted({})
        return
    assert allocator.wanted({})
    assert allocator.wanted({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=512"})
    assert not allocator.wanted({allocator.OPT_OUT: "0"})
    assert not allocator.wanted({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})  # the user's own
    assert not allocator.wanted(allocator.environment({}))  # the re-executed process


def test_environment_keeps_other_tunables():
    env = allocator.environment({"GLIBC_TUNABLES": "glibc.rtld.nns=2", "A": "b"})
    assert env["GLIBC_TUNABLES"] == env[allocator.APPLIED] == "glibc.rtld.nns=2:" + allocator.TUNABLES
    assert env["A"] == "b"
    assert allocator.environment({})["GLIBC_TUNABLES"] == allocator.TUNABLES
    assert "glibc.malloc.hugetlb=1" in allocator.TUNABLES


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="needs Linux's /proc")
def test_a_command_runs_with_the_tunable_in_the_same_process():
    # The process itself (same pid: execve, not a child) ends up with the tunables exactly
    # when `wanted` says so; read from /proc as soon as the command has started.
    drop = ("GLIBC_TUNABLES", allocator.OPT_OUT, allocator.APPLIED)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    proc = subprocess.Popen([sys.executable, "-m", "mat_jax.main", "--helpshort"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        expected = allocator.wanted(env)
        seen = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _environ(proc.pid)
            if allocator.APPLIED in seen or not expected:
                time.sleep(0.5)  # long enough for a re-exec that should not happen
                seen = _environ(proc.pid) if proc.poll() is None else seen
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    if not expected:
        assert allocator.APPLIED not in seen and "GLIBC_TUNABLES" not in seen
        return
    assert seen[allocator.APPLIED] == allocator.TUNABLES
    # What /proc shows of GLIBC_TUNABLES is glibc's parsed copy: up to the first ":" on 2.36.
    assert allocator.TUNABLES.startswith(seen["GLIBC_TUNABLES"].split(":")[0])


def test_the_reexecuted_process_passes_the_whole_value_on(monkeypatch):
    # As glibc 2.36 leaves it after parsing: cut at the first ":".
    monkeypatch.setenv(allocator.APPLIED, allocator.TUNABLES)
    monkeypatch.setenv("GLIBC_TUNABLES", allocator.TUNABLES.split(":")[0])
    allocator.reexec_for()  # returns: APPLIED says this process is the re-executed one
    assert os.environ["GLIBC_TUNABLES"] == allocator.TUNABLES
    assert not allocator.wanted()
