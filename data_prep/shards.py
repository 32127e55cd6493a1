"""The resumable work folder and the final merge into tfds-style TFRecord shards.

While a build runs, `<out>/.work/` holds, per video key:
* `parts/<key>.rec`  - its serialised records (8-byte little-endian length + bytes, repeated);
* `parts/<key>.json` - its result; written last, so it is the completion marker;
* `landmarks/<key>.npz` - a real video's landmarks per frame, for fakes that reuse them.
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


def merge(work: WorkDir, name: str, results: list[VideoResult], num_shards: int = 0) -> dict:
    """Writes the shards of every split from the part files; returns per split
    {"files", "lengths", "bytes"}. Videos are spread over shards in a fixed pseudo-random
    order; a video's frames stay together, in frame order."""
    import tensorflow as tf  # only the parent process pays for this import

    out = {}
    for split in records.SPLITS:
        done = sorted((r for r in results if r.split == split and r.written > 0), key=lambda r: r.key)
        keep: set[str] = set()
        if done:
            n = num_shards or auto_num_shards(sum(r.part_bytes or 0 for r in done), len(done))
            n = min(n, len(done))
            order = np.random.default_rng(0).permutation(len(done))
            buckets = [[done[j] for j in order[s::n]] for s in range(n)]
            files, lengths = [], []
            for s, bucket in enumerate(buckets):
                path = records.shard_path(work.out, name, split, s, n)
                tmp = os.path.join(work.root, os.path.basename(path) + ".tmp")
                count = 0
                with tf.io.TFRecordWriter(tmp) as w:
                    for r in bucket:
                        for rec in work.read_part(r.key):
                            w.write(rec)
                            count += 1
                os.replace(tmp, path)
                files.append(os.path.basename(path))
                lengths.append(count)
                keep.add(path)
            out[split] = {
                "files": files,
                "lengths": lengths,
                "bytes": sum(os.path.getsize(os.path.join(work.out, f)) for f in files),
            }
        for stale in glob.glob(os.path.join(work.out, f"{name}-{split}.tfrecord-*")):
            if stale not in keep:  # from an earlier merge with another shard count
                os.remove(stale)
    return out
