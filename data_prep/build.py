"""Prepare a dataset: raw videos -> aligned face crops in sharded TFRecords.

    python -m data_prep.build --dataset=ffpp|celebdf|dfdc|demo|... --root=RAW --out=OUT [--json=FILE] \\
        [--quality=c23] [--frames=32] [--size=380] [--workers=2] [--preset=mat] [--recipe=mat|bench]

Parallel over videos (one process per worker), with a progress bar. Resumable: each finished
video leaves a marker in OUT/.work, so the same command after a kill redoes only unfinished
videos and ends with every example exactly once. Unusable videos (missing, empty, corrupt,
no face) are skipped and listed with their reason in OUT/report.tsv. At the end the shards
`OUT/<dataset>-<split>.tfrecord-NNNNN-of-NNNNN`, the tfds description (dataset_info.json,
features.json) and OUT/summary.json are written, and a summary is printed.

`--runner=beam [--beam_options="--runner=FlinkRunner ..."]` runs the same per-video work and
merge as an Apache Beam pipeline (`beam_run`; the DirectRunner on this machine when the options
name no runner), for builds past one machine: the same shards, metadata and report.

`--perturb=all|GB:3,VC:5|...` (after the clean build, with the same options and `--out`) makes
the DeeperForensics-1.0 perturbed copies of its eval split, one records folder each under
OUT/robustness/<TYPE>-<level>/, as `data_prep.robustness` describes.

Speed: ~14 ms of CPU per face crop at 640x480 input, everything included (decoding,
detection, landmarks, bicubic 380 px alignment, JPEG, merge, process start-up), so up to
~140 crops/s with --workers=2 on two idle cores; `python -m data_prep.bench` measures it.

This module is the command line and the build's steps (`prepare`); `run` runs the videos
through the worker processes, `report` writes the summary and the report.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import time

from data_prep import __version__, beam_run, perturb, report, robustness, run, sources
from data_prep.shards import SettingsMismatch, WorkDir
from data_prep.worker import reuses_landmarks
from mat_jax.data import records
from mat_jax.faces import detect
from mat_jax.faces import frames as frames_lib
from mat_jax.faces.align import RECIPES
from mat_jax.faces.settings import Settings

RUNNERS = ("local", "beam")


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
    json_path: str = "",
    ffpp_root: str = "",
    progress: bool = True,
    keep_work: bool = False,
    perturb_spec: str = "",
    runner: str = "local",
    beam_options: str = "",
    log=print,
) -> dict:
    """Builds (or resumes, or confirms) the prepared dataset in `out`; returns its summary
    (with `perturb_spec`, the perturbed copies of the clean build in `out` instead:
    {copy name: summary}, see `data_prep.robustness.prepare`).

    Args:
      dataset: one of sources.DATASETS.
      root: the raw dataset folder.
      out: the output folder (created).
      settings: what to extract and how; default `Settings(dataset)`.
      workers: processes; <= 1 runs in this process.
      num_shards: shards per split; 0 picks a power of two giving <= ~256 MiB per shard.
      limit: if > 0, only the first `limit` videos of each (split, method) (quick trials).
      splits_dir: folder of FF++'s train/val/test.json when they are not inside `root`.
      json_path: the dataset JSON (or a folder of them) of `deepfakebench` and `df40` (`--json`).
      ffpp_root: the FF++ folder whose originals are `deeperforensics`' real videos (`--ffpp_root`).
      progress: show a progress bar.
      keep_work: keep OUT/.work (part files, landmarks) after the merge.
      perturb_spec: "" for the clean build; else which perturbed copies to make (`perturb.parse`).
      runner: "local" (the process pool of `run`) or "beam" (an Apache Beam pipeline, `beam_run`;
        the same records, metadata and report).
      beam_options: Beam's pipeline flags, e.g. "--runner=FlinkRunner ..."; without a `--runner`,
        Beam's DirectRunner with `workers` processes.
      log: where the summary lines go.
    """
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    for flag, path in (("--root", root), ("--out", out)):
        if "://" in path:
            # The readers, the decoders and the work folder use plain files; a URL would only
            # fail late, or (--out) become a local folder named "gs:".
            raise ValueError(
                f"{flag}={path}: data_prep reads and writes plain paths only; mount the bucket (e.g. "
                "gcsfuse) or a shared filesystem at the same path on every machine and pass that path"
            )
    settings = settings or Settings(dataset=dataset)
    if settings.dataset != dataset:
        raise ValueError(f"settings are for {settings.dataset!r}, not {dataset!r}")
    ident = _identity(settings, limit)
    if perturb_spec:
        if runner != "local":
            raise ValueError("--perturb runs on the local pool only; drop --runner=beam for the perturbed copies")
        perturb.parse(perturb_spec)  # a bad spec fails before the tree is listed
        listed = sources.list_videos(
            dataset, root, quality=settings.quality, methods=settings.methods, splits_dir=splits_dir,
            json_path=json_path, ffpp_root=ffpp_root,
        )
        if any(v.frames for v in listed):
            raise ValueError(f"--perturb re-reads video files; --dataset={dataset} lists folders of frames")
        _check_models(settings)
        return robustness.prepare(
            dataset, out, ident, settings, perturb_spec, select(listed, settings, limit),
            workers=workers, num_shards=num_shards, progress=progress, keep_work=keep_work, log=log,
        )  # fmt: skip
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

    listing = sources.list_videos(
        dataset, root, quality=settings.quality, methods=settings.methods, splits_dir=splits_dir,
        json_path=json_path, ffpp_root=ffpp_root,
    )
    videos = select(listing, settings, limit)
    if not videos:
        raise ValueError(f"no videos selected under {root} (splits {settings.splits}, limit {limit})")
    _check_models(settings)
    work.open(ident)
    pending = [v for v in videos if work.result(v.key) is None]
    first = [v for v in pending if not reuses_landmarks(settings, v)]
    second = [v for v in pending if reuses_landmarks(settings, v)]

    t0 = time.time()
    if runner == "local" and workers > 1 and "tensorflow" not in sys.modules:
        # The merge needs TensorFlow (seconds to import); this process only waits on the
        # workers meanwhile, so import it now rather than in the serial tail of the run.
        threading.Thread(target=importlib.import_module, args=("tensorflow",), daemon=True).start()
    shard_info = None  # the local pool's shards are written by report.finish's merge
    if runner == "beam":
        new_results, shard_info = beam_run.run_pipeline(
            [first, second], videos, settings, out, dataset, num_shards,
            beam_run.pipeline_flags(beam_options, workers), log=log,
        )
    else:
        new_results = run.run_jobs(
            [first, second], run.process_video, settings, out, workers, progress,
            done=len(videos) - len(pending), total=len(videos), desc=f"{settings.dataset} faces",
        )
    results = [work.result(v.key) for v in videos]
    summary = report.finish(out, dataset, work, results, ident, new_results, num_shards,
                            process_seconds=time.time() - t0, keep_work=keep_work, shard_info=shard_info,
                            listing_notes=[n for n in listing.notes if not n.split or n.split in settings.splits])
    report.print_summary(summary, out, log)
    return summary


def _check_models(settings: Settings) -> None:
    """Fails here, with the fix, rather than in every worker (a pool whose initializer
    raises restarts its workers forever)."""
    try:
        import dlib  # noqa: F401 - only whether it is installed (FaceFinder imports it itself)
    except ImportError as e:
        raise RuntimeError(f"dlib is missing ({e}): pip install -e '.[prep]'") from e
    detect.model_path("landmarks68")
    if settings.detector == "cnn":
        detect.model_path("mmod")


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
    p.add_argument("--detector", choices=detect.BACKENDS, default=detect.DEFAULT,
                   help="face detector (README's detector table compares them)")
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
    p.add_argument("--ffpp_root", default="", help="deeperforensics: the FaceForensics++ folder whose "
                   "original_sequences/youtube/<quality>/videos are its real videos")
    p.add_argument(
        "--json",
        default="",
        help="deepfakebench: its dataset JSON (frame paths relative to --root, or absolute ones that are "
        "found again under --root); df40: its dataset_json folder or one <method>_ff.json (default "
        "<root>/dataset_json)",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--runner",
        choices=RUNNERS,
        default="local",
        help="local: a process pool on this machine; beam: an Apache Beam pipeline (the beam extra), "
        "same records and report",
    )
    p.add_argument(
        "--beam_options",
        default="",
        help="with --runner=beam: Beam's pipeline flags, e.g. '--runner=FlinkRunner --flink_master=HOST:8081'; "
        "without a --runner there, the DirectRunner with --workers processes",
    )
    p.add_argument("--shards", type=int, default=0, help="shards per split; 0: automatic")
    p.add_argument("--limit", type=int, default=0, help="only the first N videos of each split and method")
    p.add_argument("--keep_work", action="store_true", help="keep OUT/.work after the merge")
    p.add_argument("--no_progress", action="store_true")
    p.add_argument(
        "--perturb",
        default="",
        help="after the clean build in --out (same options): make its DeeperForensics-1.0 perturbed "
        f"copies in OUT/robustness/<TYPE>-<level>/: 'all', types ({','.join(perturb.REGISTRY)}; all "
        "five levels) or TYPE:LEVEL, comma-separated, e.g. GB:3,VC:5",
    )
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
            json_path=a.json,
            ffpp_root=a.ffpp_root,
            progress=not a.no_progress,
            keep_work=a.keep_work,
            perturb_spec=a.perturb,
            runner=a.runner,
            beam_options=a.beam_options,
        )
    except (sources.LayoutError, SettingsMismatch, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
