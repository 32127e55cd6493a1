"""Transparent huge pages for the commands' buffers: glibc's `glibc.malloc.hugetlb=1`, set by re-executing.

XLA:CPU allocates a step's temporaries afresh on every call, and glibc's malloc serves
blocks over 32 MiB with new mmaps whose memory the kernel then faults in 4 KiB at a time.
A B4 train step at 380 px (batch 4, 2-core AMD EPYC) took 1.06 M page faults and 2.1 s of
system time of its 4.3 s. With the tunable, malloc asks for transparent huge pages
(madvise) and the same step took 2.9 s with 2.7 k faults.

glibc reads GLIBC_TUNABLES only when a process starts, so `python -m mat_jax.<command>`
re-executes itself once with it set (`mat_jax/__init__.py` calls `reexec_for` before
anything heavy is imported). Nothing happens when the kernel gives huge pages to every
mapping anyway ("always") or to none ("never"), off Linux/glibc, when the tunable is
already set (also how the re-executed process knows it is one), or with
MAT_JAX_HUGEPAGES=0. Standard library only.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "MAT_JAX_HUGEPAGES"
# The commands that run compiled steps; the others (report, compare, ...) only read files.
COMMANDS = frozenset({"mat_jax.main", "mat_jax.bench", "mat_jax.predict", "mat_jax.serve", "mat_jax.export"})
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_MODE) -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"), None if unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def _glibc_has_tunable() -> bool:
    name, version = platform.libc_ver()
    if name != "glibc":
        return False
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 35)  # the release that added glibc.malloc.hugetlb


def wanted(environ=os.environ, mode: str | None = None) -> bool:
    """Whether re-executing with the tunable would change how memory is mapped."""
    if environ.get(OPT_OUT, "") == "0" or "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", ""):
        return False
    mode = thp_mode() if mode is None else mode
    return mode == "madvise" and sys.platform.startswith("linux") and _glibc_has_tunable()


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
    env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES", ""), TUNABLE) if t)
    return env


def reexec_for() -> None:
    """Re-executes this process with the tunable when it is `python -m` one of COMMANDS.

    Called while runpy imports the package, before the command's module and its imports
    run, so the first process wastes only the interpreter's start.
    """
    orig = getattr(sys, "orig_argv", None)
    if not orig or module_run(orig, sys.argv) not in COMMANDS or not wanted():
        return
    try:
        os.execve(sys.executable, [sys.executable, *orig[1:]], environment())
    except OSError:
        return  # run on as we are: only slower
