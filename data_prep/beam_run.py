"""`data_prep.build --runner=beam`: a build's pending videos and its shards as an Apache Beam pipeline.

The same steps as the local pool (`run.run_jobs`, then `shards.merge`), with videos as the
elements: each goes through `worker.process` (via `run.process_video`) and leaves its part file
and result marker in `<out>/.work`; the FF++ train fakes that reuse their real video's landmarks
wait for the reals (a side input is the barrier); then `shards.plan` spreads the finished videos
over shards exactly as the local merge does and each shard is written by `shards.write_shard` on
some worker. The driver (`build.prepare`) then writes the same metadata and report
(`report.finish`), so the trainer cannot tell which runner made the records.

Faults: every video runs in a child process of the Beam worker (`Sandbox`), so one that kills
its process (a segfault in a decoder, the OOM killer) becomes a "skipped" report row and the
child is restarted; a try/except in the worker could not catch that, and the runner would retry
the bundle and then fail the whole pipeline. Resuming: videos with a marker are not sent again (nor
redone by a retried bundle), and shards already written from the same parts are kept.

`--root` and `--out` must be paths that every Beam worker sees (one machine, or a filesystem
mounted at the same path on every node): the readers and the work folder use plain files.
Apache Beam is imported only here, and only when a pipeline runs: the local build needs none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import shlex
import signal
import struct
import threading
from collections.abc import Callable

from data_prep import run, shards
from data_prep.results import VideoResult
from data_prep.shards import WorkDir, atomic_write
from data_prep.sources import Video
from mat_jax.data import records
from mat_jax.faces.settings import Settings

BEAM_DIR = "beam"  # under <out>/.work: the listings the pipeline reads


def pipeline_flags(beam_options: str, workers: int) -> list[str]:
    """Beam's flags from `--beam_options`; without a `--runner` there, the DirectRunner with
    `workers` processes on this machine."""
    flags = shlex.split(beam_options)
    if not any(f == "--runner" or f.startswith("--runner=") for f in flags):
        flags = [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={max(1, workers)}",
        ] + flags
    if not any(f.startswith("--default_sdk_harness_log_level") for f in flags):
        flags.append("--default_sdk_harness_log_level=WARNING")  # the workers' INFO lines drown the summary
    return flags


# --------------------------------------------------------------------------- one video, isolated


def _serve(conn, settings: Settings, out: str, job: Callable) -> None:
    """The child process: the local pool's worker set-up, then one video after another."""
    run._init_worker(settings, out)
    while True:
        try:
            video = conn.recv()
        except EOFError:
            return
        conn.send(job(video, run._STATE))


def crash_reason(exitcode: int | None) -> str:
    how = f"signal {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0 else f"exit code {exitcode}"
    return (
        f"the process preparing it died ({how}): a crash in the decoder or the face detector, or out of "
        "memory; the build went on without it (check the file, e.g. with ffprobe, and re-encode it)"
    )


class Sandbox:
    """A child process that runs `job(video, state)` (state: the local pool's worker state) one
    video at a time, and is started again after a video killed it."""

    def __init__(self, settings: Settings, out: str, job: Callable = run.process_video):
        self.settings, self.out, self.job = settings, out, job
        self._proc = self._conn = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # the Beam worker holds threads: no fork
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.settings, self.out, self.job), daemon=True)
        self._proc.start()
        child.close()

    def run(self, video: Video) -> list[VideoResult]:
        """The job's results for `video`; a single "skipped" result (also written as its marker)
        when the child died on it."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        try:
            self._conn.send(video)
            return self._conn.recv()
        except (EOFError, ConnectionError):
            pass  # the child died on this video
        self._proc.join()
        result = VideoResult.of(video)
        result.reason = crash_reason(self._proc.exitcode)
        self.close()
        WorkDir(self.out).write_result(result)
        return [result]

    def close(self) -> None:
        if self._proc is not None:
            self._conn.close()  # the child's recv ends: it returns
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        self._proc = self._conn = None


_SANDBOX: dict = {}  # per Beam worker process: the Sandbox of the current build
_LOCK = threading.Lock()  # one video at a time per worker process, as the local pool's workers


@dataclasses.dataclass(frozen=True)
class Spec:
    """What every pipeline step needs to know of the build."""

    settings: Settings
    out: str
    name: str
    num_shards: int

    @property
    def listing(self) -> str:
        return os.path.join(WorkDir(self.out).root, BEAM_DIR)


def prepare_video(line: str, spec: Spec, *barrier) -> VideoResult:
    """One element: a video (a JSON line of the listing) prepared in this worker's sandbox, or
    its marker's result when it is already done (a retried bundle, a resumed run)."""
    video = Video(**json.loads(line))
    done = WorkDir(spec.out).result(video.key)
    if done is not None:
        return done
    with _LOCK:
        box = _SANDBOX.get("box")
        if box is None or (box.settings, box.out) != (spec.settings, spec.out):
            if box is not None:
                box.close()
            box = _SANDBOX["box"] = Sandbox(spec.settings, spec.out)
        return box.run(video)[0]


def _all_results(spec: Spec) -> list[VideoResult]:
    work = WorkDir(spec.out)
    with open(os.path.join(spec.listing, "keys.json")) as f:
        keys = json.load(f)
    results = [work.result(k) for k in keys]
    missing = [k for k, r in zip(keys, results) if r is None]
    if missing:
        raise RuntimeError(f"{len(missing)} videos have no result marker after the run (first: {missing[0]})")
    return results


def shard_tasks(_, spec: Spec, *barrier) -> list[tuple[str, int, int, list[VideoResult]]]:
    """After every video: (split, shard, shard count, its videos) for each shard of the build."""
    plans = shards.plan(_all_results(spec), spec.num_shards)
    return [
        (split, s, len(buckets), bucket)
        for split, buckets in plans.items()
        for s, bucket in enumerate(buckets)
    ]


def _masked_crc(data: bytes) -> int:
    import google_crc32c  # the beam extra's; only shard writers need it

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class _Framed:
    def __init__(self, f):
        self._f = f

    def write(self, data: bytes) -> None:
        head = struct.pack("<Q", len(data))
        self._f.write(
            head + struct.pack("<I", _masked_crc(head)) + data + struct.pack("<I", _masked_crc(data))
        )


@contextlib.contextmanager
def tfrecord_file(path: str):
    """A TFRecord file written without TensorFlow, whose import would cost every Beam worker
    seconds and half a GB for this alone: per record its length (uint64), the length's masked
    CRC-32C, the bytes and their masked CRC-32C. A test checks its shards byte for byte against
    TensorFlow's writer's (the local build's)."""
    with open(path, "wb") as f:
        yield _Framed(f)


def write_shard(task: tuple[str, int, int, list[VideoResult]], spec: Spec) -> int:
    split, s, n, bucket = task
    path = records.shard_path(spec.out, spec.name, split, s, n)
    return shards.write_shard(WorkDir(spec.out), path, bucket, open_writer=tfrecord_file)


# --------------------------------------------------------------------------- the pipeline


def _write_listing(path: str, videos: list[Video]) -> None:
    atomic_write(path, "".join(json.dumps(dataclasses.asdict(v)) + "\n" for v in videos).encode())


def run_pipeline(
    batches: list[list[Video]],
    videos: list[Video],
    settings: Settings,
    out: str,
    name: str,
    num_shards: int,
    flags: list[str],
    log=print,
) -> tuple[list[VideoResult], dict]:
    """Prepares the pending videos (`batches`: the reals, then the fakes that reuse their
    landmarks) and writes every shard of the build of `videos`, as one Beam pipeline run with
    `flags`; returns (this run's results, the shard info `report.finish` takes)."""
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError as e:
        raise RuntimeError(f"--runner=beam needs Apache Beam ({e}): pip install -e '.[prep,beam]'") from e
    spec = Spec(settings, out, name, num_shards)
    os.makedirs(spec.listing, exist_ok=True)
    # Listings are files rather than pipeline constants: a constant list of 100,000 videos
    # would make the job's graph too large for a cluster runner to accept.
    first, second = batches
    _write_listing(os.path.join(spec.listing, "first.jsonl"), first)
    _write_listing(os.path.join(spec.listing, "second.jsonl"), second)
    atomic_write(os.path.join(spec.listing, "keys.json"), json.dumps([v.key for v in videos]).encode())
    log(f"beam: {len(first) + len(second)} of {len(videos)} videos to prepare ({' '.join(flags)})")

    with beam.Pipeline(options=PipelineOptions(flags)) as p:

        def prepared(label: str, listing: str, *barrier):
            lines = p | f"read {label}" >> beam.io.ReadFromText(os.path.join(spec.listing, listing))
            # A small listing is one bundle; the reshuffle hands its videos to every worker.
            results = (
                lines
                | f"spread {label}" >> beam.Reshuffle()
                | f"prepare {label}" >> beam.Map(prepare_video, spec, *barrier)
            )
            return beam.pvalue.AsSingleton(results | f"count {label}" >> beam.combiners.Count.Globally())

        reals = prepared("reals", "first.jsonl")
        fakes = prepared("fakes", "second.jsonl", reals)  # after the reals: they reuse their landmarks
        (p | "start shards" >> beam.Create([None])
           | "plan shards" >> beam.FlatMap(shard_tasks, spec, reals, fakes)
           | "spread shards" >> beam.Reshuffle()
           | "write shards" >> beam.Map(write_shard, spec))  # fmt: skip
    box = _SANDBOX.pop("box", None)  # there when the pipeline ran in this process
    if box is not None:
        box.close()

    work = WorkDir(out)
    new_results = [work.result(v.key) for v in first + second]
    shard_info = {}
    for split, buckets in shards.plan(_all_results(spec), num_shards).items():
        files = [
            os.path.basename(records.shard_path(out, name, split, s, len(buckets)))
            for s in range(len(buckets))
        ]
        shard_info[split] = shards.split_info(out, files, [sum(r.written for r in b) for b in buckets])
    for split in records.SPLITS:
        shards.remove_stale(out, name, split, shard_info.get(split, {}).get("files", []))
    return new_results, shard_info
