"""The machine a figure was measured on, named beside every benchmark figure (standard library only,
so data_prep's benchmark can use it without loading JAX or TensorFlow)."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's model name, e.g. "AMD EPYC 7B13" (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
