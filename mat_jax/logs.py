"""Where log lines go: everything to a file in the workdir, progress and results to the console.

orbax, clu and TensorFlow log hundreds of INFO lines per run (handler set-up, barriers,
"Write ratio ... algo=zstd"); on the console they bury the step rate and the result. So
by default the console shows warnings and errors from anyone, and INFO lines only from
`mat_jax` itself and clu's progress notes (steps/s, ETA), while `<workdir>/logs/` gets
every line. An explicit `--verbosity=N` (absl's flag) restores the unfiltered console.
"""

from __future__ import annotations

import logging as pylog
import os

from absl import logging

_OWN = (os.sep + "mat_jax" + os.sep,)
_PROGRESS = "Setting work unit notes"  # clu.periodic_actions.ReportProgress -> local work unit


class _ConsoleFilter(pylog.Filter):
    def filter(self, record: pylog.LogRecord) -> bool:
        if record.levelno >= pylog.WARNING:
            return True
        if any(part in record.pathname for part in _OWN):
            return True
        return str(record.msg).startswith(_PROGRESS)


def quiet_console(verbose: bool) -> None:
    """Unless `verbose`, the console shows warnings, mat_jax's own lines and progress only.

    Call before TensorFlow is imported: its C++ start-up chatter is cut by the environment.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not verbose:
        logging.get_absl_handler().addFilter(_ConsoleFilter())


def to_file(workdir: str, process_index: int = 0) -> str | None:
    """Sends every line to `<workdir>/logs/main.<process>.log`; returns its path.

    None for a gs:// workdir: there the console (the VM's log) is the record.
    """
    if "://" in workdir:
        return None
    directory = os.path.join(workdir, "logs")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"main.{process_index}.log")
    handler = pylog.FileHandler(path)
    handler.setFormatter(logging.PythonFormatter())  # absl's own line format
    pylog.getLogger().addHandler(handler)
    return path
