"""The resumable work folder and the final merge into tfds-style TFRecord shards.

While a build runs, `<out>/.work/` holds, per video key:
* `parts/<key>.rec`  - its serialised records (8-byte little-endian length + bytes, repeated);
* `parts/<key>.json` - its result; written last, so it is the completion marker;
* `landmarks/<key>.npz` - a real video's landmarks per frame, for fakes that reuse them;
* `shards/<shard>.json` - the videos a finished shard was written from (its marker).
Every file is written to a temporary name and renamed, so a killed run leaves either a whole
file or none, and a restart redoes exactly the videos without a marker.

At the end, `merge` writes `<out>/<name>-<split>.tfrecord-NNNNN-of-NNNNN` from the parts in a
fixed order (so an interrupted and resumed build gives the same files as an uninterrupted
one), and the work folder is removed.
"""

from __future__ import annotations

import glob
import json
import math
import os
import struct
from collections.abc import Iterator

import numpy as np

from data_prep.results import VideoResult
from mat_jax.data import records

WORK_DIR = ".work"
SHARD_TARGET_BYTES = 256 << 20


class SettingsMismatch(RuntimeError):
    """`--out` holds a build made with other settings."""


def atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class WorkDir:
    """`<out>/.work`: per-video part files, completion markers and landmark caches."""

    def __init__(self, out: str):
        self.out = out
        self.root = os.path.join(out, WORK_DIR)
        self.parts = os.path.join(self.root, "parts")
        self.lms = os.path.join(self.root, "landmarks")

    def exists(self) -> bool:
        return os.path.isdir(self.root)

    def open(self, settings: dict) -> None:
        """Creates the folder, or checks that an existing one was started with `settings`."""
        os.makedirs(self.parts, exist_ok=True)
        os.makedirs(self.lms, exist_ok=True)
        for tmp in glob.glob(os.path.join(self.root, "**", "*.tmp*"), recursive=True):
            os.remove(tmp)  # left by a killed run; its video has no marker and is redone
        path = os.path.join(self.root, "settings.json")
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            if old != settings:
                diff = {
                    k: (old.get(k), settings.get(k))
                    for k in set(old) | set(settings)
                    if old.get(k) != settings.get(k)
                }
                raise SettingsMismatch(
                    f"{self.out} holds an unfinished build with other settings ({diff}, as (then, now)); "
                    f"rerun with the same options to resume it, or use a new --out"
                )
        else:
            atomic_write(path, json.dumps(settings, indent=1, sort_keys=True).encode())

    def result(self, key: str) -> VideoResult | None:
        path = os.path.join(self.parts, f"{key}.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return VideoResult.from_json(json.load(f))

    def write_result(self, result: VideoResult) -> None:
        atomic_write(
            os.path.join(self.parts, f"{result.key}.json"),
            json.dumps(result.to_json(), sort_keys=True).encode(),
        )

    def write_part(self, key: str, serialized: list[bytes]) -> int:
        data = b"".join(struct.pack("<Q", len(s)) + s for s in serialized)
        atomic_write(os.path.join(self.parts, f"{key}.rec"), data)
        return len(data)

    def read_part(self, key: str) -> Iterator[bytes]:
        path = os.path.join(self.parts, f"{key}.rec")
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack_from("<Q", data, pos)
            if pos + 8 + n > len(data):
                raise ValueError(
                    f"{path} is truncated; delete it and its .json marker, then rerun to redo the video"
                )
            yield data[pos + 8 : pos + 8 + n]
            pos += 8 + n

    def save_landmarks(self, key: str, indices: np.ndarray, landmarks: np.ndarray, shape: tuple) -> None:
        path = os.path.join(self.lms, f"{key}.npz")
        tmp = f"{path}.tmp{os.getpid()}.npz"
        np.savez(tmp, indices=indices, landmarks=landmarks.astype(np.float32), shape=np.array(shape))
        os.replace(tmp, path)

    def load_landmarks(self, key: str) -> dict | None:
        path = os.path.join(self.lms, f"{key}.npz")
        if not os.path.exists(path):
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}


def auto_num_shards(total_bytes: int, num_videos: int) -> int:
    """A power of two (a multiple of any power-of-two host count) with shards of <= ~256 MiB."""
    n = 2 ** max(0, math.ceil(math.log2(max(1, total_bytes) / SHARD_TARGET_BYTES)))
    return max(1, min(n, num_videos))


def plan(results: list[VideoResult], num_shards: int = 0) -> dict[str, list[list[VideoResult]]]:
    """Per split that has records, the videos of each of its shards in write order. Videos are
    spread over shards in a fixed pseudo-random order of their sorted keys, so every run (and
    every runner: the local pool and `data_prep.beam_run`) puts the same records in the same file."""
    out = {}
    for split in records.SPLITS:
        done = sorted((r for r in results if r.split == split and r.written > 0), key=lambda r: r.key)
        if done:
            n = num_shards or auto_num_shards(sum(r.part_bytes or 0 for r in done), len(done))
            n = min(n, len(done))
            order = np.random.default_rng(0).permutation(len(done))
            out[split] = [[done[j] for j in order[s::n]] for s in range(n)]
    return out


def _shard_marker(work: WorkDir, path: str) -> str:
    return os.path.join(work.root, "shards", os.path.basename(path) + ".json")


def _sources(work: WorkDir, bucket: list[VideoResult]) -> list:
    """What a shard is written from: per video its key, record count, and its part file's size and
    modification time. A part redone after the shard was written (its marker deleted to redo the
    video) is a new file, so it no longer matches, even with the same count and size; an exact
    comparison needs no ordering between the clocks of the machines that wrote the part and the shard."""
    out = []
    for r in bucket:
        st = os.stat(os.path.join(work.parts, f"{r.key}.rec"))
        out.append([r.key, r.written, st.st_size, st.st_mtime_ns])
    return out


def _finished(work: WorkDir, path: str, want: list) -> bool:
    """Whether `path` was written, in full, from exactly these part files (`_sources`)."""
    marker = _shard_marker(work, path)
    if not (os.path.exists(path) and os.path.exists(marker)):
        return False
    with open(marker) as f:
        return json.load(f) == want


def write_shard(work: WorkDir, path: str, bucket: list[VideoResult], open_writer=None) -> int:
    """Writes one shard from its videos' part files, a video's frames together in frame order;
    returns its record count. A shard already written from the same parts is kept as it is, so a
    merge resumed after an interruption rewrites only the shards it had not finished.
    `open_writer(path)`: a TFRecord writer (context manager with `write(bytes)`); default
    TensorFlow's."""
    want = _sources(work, bucket)
    if _finished(work, path, want):
        return sum(r.written for r in bucket)
    if open_writer is None:
        import tensorflow as tf  # only the processes that write shards pay for this import

        open_writer = tf.io.TFRecordWriter
    tmp = os.path.join(work.root, f"{os.path.basename(path)}.tmp{os.getpid()}")
    count = 0
    with open_writer(tmp) as w:
        for r in bucket:
            for rec in work.read_part(r.key):
                w.write(rec)
                count += 1
    os.replace(tmp, path)
    os.makedirs(os.path.dirname(_shard_marker(work, path)), exist_ok=True)
    atomic_write(_shard_marker(work, path), json.dumps(want).encode())
    return count


def split_info(out: str, files: list[str], lengths: list[int]) -> dict:
    """What the metadata needs of one split's shards: {"files", "lengths", "bytes"}."""
    return {
        "files": files,
        "lengths": lengths,
        "bytes": sum(os.path.getsize(os.path.join(out, f)) for f in files),
    }


def remove_stale(out: str, name: str, split: str, keep: list[str]) -> None:
    """Removes the shards of `split` not named in `keep` (from an earlier merge with another shard count)."""
    for stale in glob.glob(os.path.join(out, f"{name}-{split}.tfrecord-*")):
        if os.path.basename(stale) not in keep:
            os.remove(stale)


def merge(work: WorkDir, name: str, results: list[VideoResult], num_shards: int = 0) -> dict:
    """Writes the shards of every split from the part files (`plan`, `write_shard`); returns per
    split {"files", "lengths", "bytes"}."""
    out = {}
    for split, buckets in plan(results, num_shards).items():
        files, lengths = [], []
        for s, bucket in enumerate(buckets):
            path = records.shard_path(work.out, name, split, s, len(buckets))
            lengths.append(write_shard(work, path, bucket))
            files.append(os.path.basename(path))
        out[split] = split_info(work.out, files, lengths)
    for split in records.SPLITS:
        remove_stale(work.out, name, split, out.get(split, {}).get("files", []))
    return out
