"""glibc malloc settings for the commands: huge pages, and memory kept between steps, by re-executing.

XLA:CPU allocates a step's temporaries afresh on every call. With glibc's defaults the big
blocks are new mmaps (or a heap trimmed and regrown), faulted in 4 KiB at a time: a B4
train step at 380 px (batch 4, 2-core AMD EPYC) took 1.06 M page faults and 2.1 s of
system time of its 4.3 s. Transparent huge pages alone (`glibc.malloc.hugetlb=1`) brought
that to 2.7 k faults and 2.9 s, but then each step still maps fresh memory, and once
another process (the official code, in `bench --reference`) had fragmented physical
memory the kernel spent 1.7-8 s per step compacting it into huge pages. So TUNABLES also
keeps the memory: one arena, no mmaps, no trimming. The step then takes no page faults
at all and 0.03 s of system time, alone or interleaved; the process keeps its peak
resident size until it exits.
Huge pages still pay on top of that (2.87-2.91 s a step against 3.23-3.54 s with the
retention alone, runs taken in turns) but slow compile-bound runs of tiny models: the
test suite keeps glibc's defaults (tests/conftest.py).

glibc reads GLIBC_TUNABLES only when a process starts, so `python -m mat_jax.<command>`
re-executes itself once with it set (`mat_jax/__init__.py` calls `reexec_for` while runpy
imports the package, before anything heavy is imported). Nothing happens off Linux/glibc,
when GLIBC_TUNABLES already names a malloc tunable (yours win), or with
MAT_JAX_TUNE_MALLOC=0. glibc 2.36 cuts the variable at its first ":" while parsing it, so
the whole value also travels in APPLIED: the re-executed process knows by it that it is
one, and puts GLIBC_TUNABLES back whole for the processes it starts. Standard library only.
"""

from __future__ import annotations

import os
import sys

TUNABLES = ":".join([
    "glibc.malloc.hugetlb=1",  # madvise(MADV_HUGEPAGE) on what malloc maps (glibc >= 2.35)
    "glibc.malloc.arena_max=1",  # big blocks of other threads' arenas would be mmaps anyway
    "glibc.malloc.mmap_max=0",  # every block from the heap ...
    "glibc.malloc.trim_threshold=68719476736",  # ... which is never given back (64 GiB)
])  # fmt: skip
OPT_OUT = "MAT_JAX_TUNE_MALLOC"
APPLIED = "MAT_JAX_GLIBC_TUNABLES"
# The commands that run compiled steps; the others (report, compare, ...) only read files.
COMMANDS = frozenset({"mat_jax.main", "mat_jax.bench", "mat_jax.predict", "mat_jax.serve", "mat_jax.export"})


def _glibc() -> bool:
    # The C library this process runs on, e.g. "glibc 2.36" (platform.libc_ver would scan
    # the interpreter's binary for it instead).
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = (int(p) for p in version.split(".")[:2])
    except (AttributeError, ValueError, OSError):
        return False
    return name == "glibc" and (major, minor) >= (2, 26)  # the release that added GLIBC_TUNABLES


def wanted(environ=os.environ) -> bool:
    """Whether this process should re-execute with TUNABLES."""
    if environ.get(OPT_OUT, "") == "0" or APPLIED in environ:
        return False
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return False
    return sys.platform.startswith("linux") and _glibc()


def module_run(orig_argv, argv) -> str | None:
    """The module of `python [options] -m MODULE ARGS`, while runpy is finding it.

    Then `argv` is ["-m", *ARGS] and `orig_argv` (sys.orig_argv) ends with MODULE, ARGS
    (or "-mMODULE", ARGS), whatever interpreter options came before.
    """
    if not argv or argv[0] != "-m" or len(orig_argv) < len(argv) + 1:
        return None
    module = orig_argv[-len(argv)]
    if module.startswith("-m") and orig_argv[-len(argv) - 1] != "-m":
        module = module[2:]
    return module or None


def environment(environ=os.environ) -> dict[str, str]:
    env = dict(environ)
    env["GLIBC_TUNABLES"] = env[APPLIED] = ":".join(t for t in (env.get("GLIBC_TUNABLES", ""), TUNABLES) if t)
    return env


def reexec_for() -> None:
    """Re-executes this process with TUNABLES when it is `python -m` one of COMMANDS."""
    if APPLIED in os.environ:
        os.environ["GLIBC_TUNABLES"] = os.environ[APPLIED]  # whole again for our children
        return
    orig = getattr(sys, "orig_argv", None)
    if not orig or module_run(orig, sys.argv) not in COMMANDS or not wanted():
        return
    try:
        os.execve(sys.executable, [sys.executable, *orig[1:]], environment())
    except OSError:
        return  # run on as we are: only slower
