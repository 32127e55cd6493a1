"""What a pipeline reads and this process's share of it: the records root and balance mode
of the config, the process index and count, and the process's files and batch.

A process reads `files[process_index::process_count]` of a split (evaluation splits by
record instead when there are fewer files than processes) and yields `global batch //
process_count` rows per batch; the global batch must divide evenly.
"""

from __future__ import annotations

from collections.abc import Sequence

_BALANCE_MODES = ("repeat", "weights", "none")


def balance_mode(config) -> str:
    mode = str(config.data.balance)
    if mode not in _BALANCE_MODES:
        raise ValueError(f"config.data.balance must be one of {_BALANCE_MODES}, got {mode!r}")
    return mode


def records_root(config, root: str | None = None) -> str:
    root = root if root is not None else config.data.root
    if not root:
        raise ValueError(
            "config.data.root is empty: set it to the directory of TFRecords written by data_prep "
            "(--config.data.root=DIR)"
        )
    return root


def processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # deferred for cost (importing JAX): only the defaults need it

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    return int(process_index), int(process_count)


def per_host_batch(global_batch: int, process_count: int, what: str) -> int:
    if global_batch <= 0 or global_batch % process_count:
        raise ValueError(
            f"{what}={global_batch} must be a positive multiple of the process count {process_count}"
        )
    return global_batch // process_count


def host_files(files: Sequence[str], process_index: int, process_count: int, split: str) -> list[str]:
    if len(files) < process_count:
        raise ValueError(
            f"the '{split}' split has {len(files)} record files for {process_count} processes: every process "
            f"needs at least one file; re-shard it with data_prep into a multiple of {process_count} files"
        )
    return list(files[process_index::process_count])
