"""Prepare a dataset: raw videos -> aligned face crops in sharded TFRecords.

    python -m data_prep.build --dataset=ffpp|celebdf|dfdc|demo --root=RAW --out=OUT \\
        [--quality=c23] [--frames=32] [--size=380] [--workers=2] [--preset=mat] [--recipe=mat|bench]

Parallel over videos (one process per worker), with a progress bar. Resumable: each finished
video leaves a marker in OUT/.work, so the same command after a kill redoes only unfinished
videos and ends with every example exactly once. Unusable videos (missing, empty, corrupt,
no face) are skipped and listed with their reason in OUT/report.tsv. At the end the shards
`OUT/<dataset>-<split>.tfrecord-NNNNN-of-NNNNN`, the tfds description (dataset_info.json,
features.json) and OUT/summary.json are written, and a summary is printed.

Speed: ~14 ms of CPU per face crop at 640x480 input, everything included (decoding,
detection, landmarks, bicubic 380 px alignment, JPEG, merge, process start-up), so up to
~140 crops/s with --workers=2 on two idle cores; `python -m data_prep.bench` measures it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import shutil
import sys
import threading
import time

from data_prep import __version__, sources
from data_prep import frames as frames_lib
from data_prep.shards import SettingsMismatch, WorkDir, atomic_write, merge
from data_prep.worker import Settings, process
from mat_jax.data import records

REPORT_FILE = "report.tsv"

_STATE: dict = {}  # per worker process: settings, face finder, work folder


def _init_worker(settings: Settings, out: str) -> None:
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the processes
    # Broken videos are expected and land in the report; FFmpeg's and OpenCV's own console
    # messages about them would only garble the progress bar.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    from data_prep.faces import FaceFinder

    _STATE["settings"] = settings
    _STATE["finder"] = FaceFinder(settings.detector, settings.detect_size, settings.min_face)
    _STATE["work"] = WorkDir(out)


def _run_one(video: sources.Video) -> dict:
    return process(video, _STATE["settings"], _STATE["finder"], _STATE["work"])


def select(videos: list[sources.Video], settings: Settings, limit: int = 0) -> list[sources.Video]:
    """Videos of the requested splits; with `limit`, the first `limit` of each (split, method)."""
    rows = [v for v in videos if v.split in settings.splits]
    if limit:
        seen: dict[tuple[str, str], int] = {}
        kept = []
        for v in rows:
            k = (v.split, v.method)
            if seen.get(k, 0) < limit:
                seen[k] = seen.get(k, 0) + 1
                kept.append(v)
        rows = kept
    keys = [v.key for v in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("two videos share a video_id; the dataset listing is inconsistent")
    return rows


def _identity(settings: Settings, limit: int) -> dict:
    # Through JSON so it compares equal to the copy read back from settings.json / summary.json.
    return json.loads(json.dumps({"tool_version": __version__, "limit": limit, **settings.to_json()}))


def prepare(
    dataset: str,
    root: str,
    out: str,
    settings: Settings | None = None,
    *,
    workers: int = 1,
    num_shards: int = 0,
    limit: int = 0,
    splits_dir: str | None = None,
    progress: bool = True,
    keep_work: bool = False,
    log=print,
) -> dict:
    """Builds (or resumes, or confirms) the prepared dataset in `out`; returns its summary.

    Args:
      dataset: one of sources.DATASETS.
      root: the raw dataset folder.
      out: the output folder (created).
      settings: what to extract and how; default `Settings(dataset)`.
      workers: processes; <= 1 runs in this process.
      num_shards: shards per split; 0 picks a power of two giving <= ~256 MiB per shard.
      limit: if > 0, only the first `limit` videos of each (split, method) (quick trials).
      splits_dir: folder of FF++'s train/val/test.json when they are not inside `root`.
      progress: show a progress bar.
      keep_work: keep OUT/.work (part files, landmarks) after the merge.
      log: where the summary lines go.
    """
    settings = settings or Settings(dataset=dataset)
    if settings.dataset != dataset:
        raise ValueError(f"settings are for {settings.dataset!r}, not {dataset!r}")
    ident = _identity(settings, limit)
    os.makedirs(out, exist_ok=True)
    work = WorkDir(out)
    done_summary = records.load_summary(out)
    if done_summary is not None and not work.exists():
        if done_summary.get("settings") != ident:
            raise SettingsMismatch(
                f"{out} already holds a finished build with other settings; use a new --out (or delete it)"
            )
        log(f"{out} is already prepared (same settings); nothing to do")
        return done_summary

    videos = select(
        sources.list_videos(
            dataset, root, quality=settings.quality, methods=settings.methods, splits_dir=splits_dir
        ),
        settings,
        limit,
    )
    if not videos:
        raise ValueError(f"no videos selected under {root} (splits {settings.splits}, limit {limit})")
    _check_models(settings)
    work.open(ident)
    pending = [v for v in videos if work.result(v.key) is None]
    first = [v for v in pending if not settings.reuses_landmarks(v)]
    second = [v for v in pending if settings.reuses_landmarks(v)]

    t0 = time.time()
    if workers > 1 and "tensorflow" not in sys.modules:
        # The merge needs TensorFlow (seconds to import); this process only waits on the
        # workers meanwhile, so import it now rather than in the serial tail of the run.
        threading.Thread(target=importlib.import_module, args=("tensorflow",), daemon=True).start()
    new_results = _run(
        first, second, settings, out, workers, progress, done=len(videos) - len(pending), total=len(videos)
    )
    t1 = time.time()
    results = [work.result(v.key) for v in videos]
    shard_info = merge(work, dataset, results, num_shards)
    summary = _summary(dataset, ident, results, shard_info, new_results)
    records.write_tfds_metadata(
        out,
        dataset,
        __version__,
        {s: i["lengths"] for s, i in shard_info.items()},
        {s: i["bytes"] for s, i in shard_info.items()},
        _description(summary),
    )
    _write_report(os.path.join(out, REPORT_FILE), results)
    t2 = time.time()
    summary["last_run"].update(
        seconds=round(t2 - t0, 2), process_seconds=round(t1 - t0, 2), merge_seconds=round(t2 - t1, 2)
    )
    summary["last_run"]["faces_per_second"] = round(summary["last_run"]["faces"] / max(t2 - t0, 1e-9), 2)
    atomic_write(os.path.join(out, records.SUMMARY_FILE), json.dumps(summary, indent=1).encode())
    if not keep_work:
        shutil.rmtree(work.root)
    _print_summary(summary, out, log)
    return summary


def _check_models(settings: Settings) -> None:
    """Fails here, with the fix, rather than in every worker (a pool whose initializer
    raises restarts its workers forever)."""
    from data_prep import faces

    try:
        import dlib  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"dlib is missing ({e}): pip install -e '.[prep]'") from e
    faces.model_path("landmarks68")
    if settings.detector == "cnn":
        faces.model_path("mmod")


def _run(first, second, settings, out, workers, progress, done, total) -> list[dict]:
    from tqdm import tqdm

    results: list[dict] = []
    bar = tqdm(
        total=total,
        initial=done,
        unit="video",
        disable=not progress,
        dynamic_ncols=True,
        desc=f"{settings.dataset} faces",
    )
    t0, frames = time.time(), 0

    def note(r):
        nonlocal frames
        results.append(r)
        frames += r["written"]
        bar.update(1)
        bar.set_postfix(
            faces=frames,
            fps=f"{frames / max(time.time() - t0, 1e-6):.1f}",
            skipped=sum(x["status"] == "skipped" for x in results),
            refresh=False,
        )

    try:
        if workers <= 1:
            _init_worker(settings, out)
            for v in first + second:  # reals before the fakes that reuse their landmarks
                note(_run_one(v))
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
            with ctx.Pool(workers, initializer=_init_worker, initargs=(settings, out)) as pool:
                for batch in (first, second):
                    for r in pool.imap_unordered(_run_one, batch, chunksize=1):
                        note(r)
    finally:
        bar.close()
    return results


def _summary(dataset, ident, results, shard_info, new_results) -> dict:
    counts, videos = {}, {}
    for split in ident["splits"]:
        rs = [r for r in results if r["split"] == split]
        if not rs:
            continue
        methods: dict[str, int] = {}
        for r in rs:
            if r["written"]:
                methods[r["method"]] = methods.get(r["method"], 0) + r["written"]
        real = sum(r["written"] for r in rs if r["label"] == records.LABEL_REAL)
        fake = sum(r["written"] for r in rs if r["label"] == records.LABEL_FAKE)
        counts[split] = {
            "total": real + fake,
            "real": real,
            "fake": fake,
            "methods": dict(sorted(methods.items())),
        }
        videos[split] = {s: sum(r["status"] == s for r in rs) for s in ("ok", "partial", "skipped")}
        videos[split]["real"] = sum(r["written"] > 0 and r["label"] == records.LABEL_REAL for r in rs)
        videos[split]["fake"] = sum(r["written"] > 0 and r["label"] == records.LABEL_FAKE for r in rs)
        # Faces cut with another video's landmarks (train-split FF++ fakes only): 0 on val/test.
        counts[split]["reused_landmarks"] = sum(r.get("reused_landmarks", 0) for r in rs)
    written = sum(r["written"] for r in new_results)
    return {
        "dataset": dataset,
        "version": __version__,
        "settings": ident,
        "counts": counts,
        "videos": videos,
        "shards": {s: i["files"] for s, i in shard_info.items()},
        "report": REPORT_FILE,
        # Timings are filled in by `prepare` once the metadata is written.
        "last_run": {
            "videos": len(new_results),
            "faces": written,
            "decoded_frames": sum(r["decoded_frames"] for r in new_results),
        },
    }


def _description(summary: dict) -> str:
    s = summary["settings"]
    return (
        f"{summary['dataset']} face crops by mat_jax data_prep {summary['version']}: one aligned face per "
        f"sampled frame ({s['crop']['recipe']} recipe, {s['crop']['size']} px, "
        f"margin {s['crop']['margin_scale']}), "
        f"detector {s['detector']}, {s['landmarks']}; {_reuse_text(s)}; "
        f"train sampling {s['train_sampling']}, "
        f"eval sampling {s['eval_sampling']}. Counts: {json.dumps(summary['counts'])}"
    )


def _reuse_text(s: dict) -> str:
    splits = s.get("landmark_reuse_splits") or []
    if not splits:
        return "landmarks detected on every video"
    return (
        f"{'/'.join(splits)} fakes of frame-aligned methods reuse their source real video's "
        "landmarks; every other video has its own"
    )


def _write_report(path: str, results: list[dict]) -> None:
    lines = ["status\tsplit\tlabel\tvideo_id\tpath\treason"]
    for r in sorted(results, key=lambda r: (r["status"] != "skipped", r["key"])):
        if r["status"] != "ok":
            lines.append(
                "\t".join(
                    [
                        r["status"],
                        r["split"],
                        "fake" if r["label"] else "real",
                        r["video_id"],
                        r["path"],
                        r["reason"].replace("\t", " ").replace("\n", " "),
                    ]
                )
            )
    atomic_write(path, ("\n".join(lines) + "\n").encode())


def _print_summary(summary: dict, out: str, log) -> None:
    log(f"prepared {summary['dataset']} into {out} ({_reuse_text(summary['settings'])})")
    for split, c in summary["counts"].items():
        v = summary["videos"][split]
        log(
            f"  {split:5s}: {c['total']} faces ({c['real']} real, {c['fake']} fake) from {v['real']} real + "
            f"{v['fake']} fake videos; {v['skipped']} skipped, {v['partial']} partial; "
            f"per method {c['methods']}; {c.get('reused_landmarks', 0)} faces with reused landmarks"
        )
    skipped = sum(v["skipped"] for v in summary["videos"].values())
    partial = sum(v["partial"] for v in summary["videos"].values())
    if skipped or partial:
        log(f"  {skipped} videos skipped, {partial} partial: reasons in {os.path.join(out, REPORT_FILE)}")
    r = summary["last_run"]
    log(
        f"  this run: {r['videos']} videos, {r['faces']} faces in {r['seconds']} s "
        f"({r['faces_per_second']} faces/s; {r['decoded_frames']} frames decoded; "
        f"videos {r['process_seconds']} s, merge and metadata {r['merge_seconds']} s)"
    )


def settings_from_args(a: argparse.Namespace) -> Settings:
    if a.preset == "mat":
        train, evaluation = frames_lib.PRESETS["mat_train"], frames_lib.PRESETS["mat_eval"]
    else:
        train = frames_lib.Sampling(a.frames, a.stride)
        evaluation = frames_lib.Sampling(a.eval_frames or a.frames, a.stride)
    return Settings(
        dataset=a.dataset,
        quality=a.quality,
        train_sampling=train,
        eval_sampling=evaluation,
        recipe=a.recipe,
        size=a.size,
        scale=a.scale,
        detector=a.detector,
        detect_size=a.detect_size,
        min_face=a.min_face,
        image_format=a.format,
        jpeg_quality=a.jpeg_quality,
        reuse_landmarks=not a.no_reuse_landmarks,
        methods=tuple(a.methods.split(",")) if a.methods else None,
        splits=tuple(a.splits.split(",")) if a.splits else records.SPLITS,
    )


def parser() -> argparse.ArgumentParser:
    from data_prep.align import RECIPES
    from data_prep.faces import BACKENDS

    p = argparse.ArgumentParser(
        prog="python -m data_prep.build",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", required=True, choices=sources.DATASETS)
    p.add_argument("--root", required=True, help="the raw dataset folder")
    p.add_argument("--out", required=True, help="output folder for shards, summary and report")
    p.add_argument("--quality", default="c23", help="FF++ compression: c0 (raw), c23 or c40")
    p.add_argument("--frames", type=int, default=32, help="frames per video (evenly spaced unless --stride)")
    p.add_argument("--eval_frames", type=int, default=0, help="frames per val/test video; 0: --frames")
    p.add_argument("--stride", type=int, default=0, help="take every STRIDE-th frame from frame 0 instead")
    p.add_argument(
        "--preset",
        choices=["mat"],
        default=None,
        help="mat: the official sampling (train 50 frames stride 10, val/test 20 stride 5)",
    )
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="mat",
        help="mat: aligned 384 -> centre 380 (paper); bench: ArcFace template, scale 1.3, 256",
    )
    p.add_argument("--size", type=int, default=0, help="crop side in px; 0: the recipe's (380 / 256)")
    p.add_argument("--scale", type=float, default=0.0, help="crop margin scale; 0: the recipe's (1.0 / 1.3)")
    p.add_argument("--detector", choices=BACKENDS, default="dlib")
    p.add_argument("--detect_size", type=int, default=320, help="long side of the coarse detection image")
    p.add_argument("--min_face", type=int, default=20, help="smallest face (px) of the Haar fallback")
    p.add_argument("--format", choices=["jpeg", "png"], default="jpeg", help="crop encoding")
    p.add_argument("--jpeg_quality", type=int, default=95)
    p.add_argument(
        "--no_reuse_landmarks",
        action="store_true",
        help="detect faces in FF++ train fakes too, instead of reusing their source real video's "
        "landmarks (val/test fakes always detect their own, as a deployed detector must)",
    )
    p.add_argument("--methods", default="", help="comma-separated FF++ methods; default: all present")
    p.add_argument("--splits", default="", help="comma-separated splits to prepare; default: all")
    p.add_argument("--splits_dir", default=None, help="folder with FF++ train/val/test.json if not in --root")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--shards", type=int, default=0, help="shards per split; 0: automatic")
    p.add_argument("--limit", type=int, default=0, help="only the first N videos of each split and method")
    p.add_argument("--keep_work", action="store_true", help="keep OUT/.work after the merge")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        settings = settings_from_args(a)
        prepare(
            a.dataset,
            a.root,
            a.out,
            settings,
            workers=a.workers,
            num_shards=a.shards,
            limit=a.limit,
            splits_dir=a.splits_dir,
            progress=not a.no_progress,
            keep_work=a.keep_work,
        )
    except (sources.LayoutError, SettingsMismatch, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
