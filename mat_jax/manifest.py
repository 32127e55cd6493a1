"""What an evaluation was made of, written beside its metrics as `manifest.json`.

So that a number in a results table can be traced and reproduced: the config, the checkpoint
(its step and a content hash of its files), the data (a fingerprint of the record files: names,
sizes and example counts), the package versions, the git commit of the code and the time.
`mat_jax.report` refuses to put two runs in one column when their data fingerprints differ.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import subprocess
from typing import Any

from etils import epath

from mat_jax.data import records, sizes
from mat_jax.data.tf_env import tf

PACKAGES = ("mat_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-cpu", "numpy")
FILE = "manifest.json"


def data_fingerprint(root: str, split: str) -> dict[str, Any]:
    """The record files of a split (names, bytes, examples) and one sha256 over all of them.

    Names, sizes and counts rather than contents: cheap on gs:// and enough to tell two builds
    (or two subsets) of a dataset apart; the names carry the dataset and the shard count.
    """
    files = records.split_files(root, split)
    counts = sizes.count_records(tuple(files)) if files else ()
    rows = [{"name": os.path.basename(f), "bytes": int(epath.Path(f).stat().length), "examples": n}
            for f, n in zip(files, counts)]
    digest = hashlib.sha256(json.dumps([split, rows], sort_keys=True).encode()).hexdigest()
    return {"root": str(root), "split": split, "files": rows, "examples": int(sum(counts)), "sha256": digest}


def checkpoint_hash(path: str) -> str:
    """sha256 over every file of a checkpoint directory (relative names and contents)."""
    digest = hashlib.sha256()
    files = sorted(os.path.join(d, f) for d, _, names in tf.io.gfile.walk(str(path)) for f in names)
    for f in files:
        digest.update(os.path.relpath(f, str(path)).encode())
        with tf.io.gfile.GFile(f, "rb") as fh:
            digest.update(fh.read())
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> dict[str, Any] | None:
    """HEAD of the checkout mat_jax runs from, and whether it had uncommitted changes (None if
    the code is not a git checkout, e.g. an installed wheel)."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        done = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return None if commit is None else {"commit": commit, "dirty": bool(status)}


def build(config, *, checkpoint: str | None, step: int | None, root: str, split: str) -> dict[str, Any]:
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": {"path": checkpoint, "step": step,
                       "sha256": checkpoint_hash(checkpoint) if checkpoint else None},
        "data": data_fingerprint(root, split),
        "packages": package_versions(),
        "code": git_commit(),
        "config": json.loads(config.to_json_best_effort()),
    }
