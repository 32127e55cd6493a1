"""End-to-end throughput of `data_prep.build` on generated 640x480 videos.

    python -m data_prep.bench [--workers=2] [--videos=8] [--frames=64] [--sample=32] [--size=640x480]
                              [--runner=local|beam|local,beam] [--rounds=1] [--modes=reuse,detect_all]
    python -m data_prep.bench --detectors=dlib,haar,cnn,blazeface [--frames=16] [--keep=DIR]

Makes a demo tree (`videos` real videos, each with one self-blended fake, `frames` frames at
`size`, H.264 CRF 23), then times `prepare` on it twice: with FF++'s landmark reuse (train
fakes take their real video's landmarks, as in a real FF++ build where 4 of 5 videos are
fakes; the self-blended fakes are filed as a frame-aligned method for this, since SBI fakes
never reuse) and with detection on every frame. Reports face crops per second, wall clock, everything
included: process start, decoding, detection, alignment, encoding, the shard merge.

`--runner=local,beam --rounds=2` times the local pool and Beam's DirectRunner (`--workers`
processes each) on the same tree, interleaved (local, beam, local, beam) so that a load that
comes and goes on the machine falls on both, and reports each one's median and their ratio.

`--detectors` compares face detectors instead (`data_prep.detector_eval`): recall, false
positives, alignment against the true landmarks and frames/s on the awkward videos of
`data_prep.awkward` and a 640x480 demo tree; prints the JSON and README's Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

from data_prep import build, demo, detector_eval
from mat_jax.faces import frames as frames_lib
from mat_jax.faces.detect import BACKENDS, DEFAULT
from mat_jax.faces.settings import Settings
from mat_jax.machine import cpu_model

MODES = {"reuse": True, "detect_all": False}  # mode: whether train fakes reuse their real's landmarks


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the build's workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def run(
    workers: int = 2,
    videos: int = 8,
    frames: int = 64,
    sample: int = 32,
    size=(640, 480),
    recipe: str = "mat",
    keep: str | None = None,
    log=print,
    runners: tuple[str, ...] = ("local",),
    rounds: int = 1,
    modes: tuple[str, ...] = ("reuse", "detect_all"),
    detectors: tuple[str, ...] = (DEFAULT,),
) -> dict:
    """Times the build; returns {"reuse": {...}, "detect_all": {...}, "machine": ...} for one
    local round, else {"runs": [...], "median_faces_per_second": {runner: {mode: ...}},
    "beam_over_local": {mode: ...}, "machine": ...}. With several `detectors`, each run is keyed
    "<runner>/<detector>" and the medians compare them in the same interleaved run."""
    unknown = set(modes) - set(MODES) | set(runners) - set(build.RUNNERS)
    unknown |= set(detectors) - set(BACKENDS)
    if unknown or not modes or not runners or not detectors or rounds < 1:
        raise ValueError(
            f"modes from {MODES}, runners from {build.RUNNERS}, detectors from {BACKENDS}, rounds >= 1; "
            f"got {modes}, {runners}, {detectors}, {rounds}"
        )
    tmp = keep or tempfile.mkdtemp(prefix="data_prep_bench_")
    try:
        tree = os.path.join(tmp, "tree")
        if not os.path.isdir(tree):
            # Landmark reuse is a train-split option: most videos go there.
            train = max(2, videos - 4 - (videos % 2))
            demo.make_demo_tree(
                tree,
                videos_per_split=(train, 2, 2),
                frames=frames,
                size=size,
                qualities=("c23",),
                celebdf=(0, 0, 0),
                log=lambda *_: None,
            )
            man = os.path.join(tree, "ffpp", "manipulated_sequences")
            os.rename(os.path.join(man, demo.METHOD), os.path.join(man, "Deepfakes"))
        out = {
            "machine": f"{cpu_model()}, {os.cpu_count()} cores",
            "workers": workers,
            "input": f"{size[0]}x{size[1]} H.264 CRF 23, {frames} frames/video",
            "sampled_per_video": sample,
        }
        base = Settings(
            dataset="demo",
            train_sampling=frames_lib.Sampling(sample),
            eval_sampling=frames_lib.Sampling(sample),
            recipe=recipe,
        )
        runs = []
        plan = [(r, rn, d, m) for r in range(rounds) for rn in runners for d in detectors for m in modes]
        for round_, runner, detector, name in plan:
            dst = os.path.join(tmp, f"out_{name}")
            shutil.rmtree(dst, ignore_errors=True)
            t0, c0 = time.time(), _cpu_seconds()
            summary = build.prepare(
                "demo",
                tree,
                dst,
                dataclasses.replace(base, reuse_landmarks=MODES[name], detector=detector),
                workers=workers,
                progress=False,
                runner=runner,
                log=lambda *_: None,
            )
            wall, cpu = time.time() - t0, _cpu_seconds() - c0
            faces = sum(c["total"] for c in summary["counts"].values())
            proc = summary["last_run"]["process_seconds"]
            row = {
                "faces": faces,
                "seconds": round(wall, 2),
                "faces_per_second": round(faces / wall, 1),
                "video_phase_seconds": proc,
                "video_phase_faces_per_second": round(faces / proc, 1),
                "cpu_seconds": round(cpu, 2),
                "cpu_ms_per_face": round(1000 * cpu / faces, 1),
            }
            key = runner if len(detectors) == 1 else f"{runner}/{detector}"
            runs.append({"runner": key, "round": round_, "mode": name, **row})
            log(
                f"{key:5s} {name:10s}: {faces} faces in {wall:.1f} s = "
                f"{faces / wall:.1f} faces/s end to end "
                f"({faces / proc:.1f} faces/s in the {proc:.1f} s video phase, worker start-up included; "
                f"{1000 * cpu / faces:.1f} ms of CPU per face, all processes, all phases)"
            )
        if runners == ("local",) and rounds == 1 and len(detectors) == 1:
            out.update({r["mode"]: {k: v for k, v in r.items() if k not in ("runner", "round", "mode")}
                        for r in runs})  # fmt: skip
        else:
            out.update(_compare(runs))
        out["load_average_after"] = round(os.getloadavg()[0], 2)
        return out
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _compare(runs: list[dict]) -> dict:
    """The runs, each runner's median end-to-end faces/s per mode, and beam's over local's."""
    med: dict = {}
    for r in runs:
        med.setdefault(r["runner"], {}).setdefault(r["mode"], []).append(r["faces_per_second"])
    med = {rn: {m: round(statistics.median(v), 1) for m, v in ms.items()} for rn, ms in med.items()}
    out = {"runs": runs, "median_faces_per_second": med}
    if {"local", "beam"} <= set(med):
        out["beam_over_local"] = {m: round(med["beam"][m] / med["local"][m], 2) for m in med["local"]}
    if len(med) == 2 and all("/" in k for k in med):
        (a, ma), (b, mb) = med.items()
        out[f"{b.split('/')[1]}_over_{a.split('/')[1]}"] = {m: round(mb[m] / ma[m], 2) for m in ma}
    return out


def _detectors(a: argparse.Namespace) -> int:
    tmp = a.keep or tempfile.mkdtemp(prefix="mat_jax_detectors_")
    try:
        result = detector_eval.compare(tmp, tuple(a.detectors.split(",")), frames=a.frames, workers=a.workers,
                                       log=lambda *x: print(*x, file=sys.stderr))
        print(json.dumps({"cpu": cpu_model(), "workers": a.workers, "frames_per_video": a.frames,
                          "detectors": result}, indent=1))
        print(detector_eval.table(result))
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--videos", type=int, default=8, help="real videos (each gets one fake)")
    p.add_argument("--frames", type=int, default=64, help="frames per generated video")
    p.add_argument("--sample", type=int, default=32, help="frames sampled per video")
    p.add_argument("--size", default="640x480")
    p.add_argument("--recipe", default="mat")
    p.add_argument("--keep", default=None, help="work in this folder and keep it (reuses its tree)")
    p.add_argument("--runner", default="local", help="local, beam or local,beam (interleaved, with --rounds)")
    p.add_argument("--rounds", type=int, default=1, help="times each runner is timed")
    p.add_argument("--modes", default=",".join(MODES), help="reuse, detect_all or both")
    p.add_argument("--detector", default=DEFAULT, help="the build's detector; several (dlib,blazeface) are interleaved")
    p.add_argument("--detectors", default="", help="compare these face detectors instead (e.g. dlib,haar,cnn,blazeface)")
    a = p.parse_args(argv)
    if a.detectors:
        return _detectors(a)
    size = tuple(int(v) for v in a.size.split("x"))
    result = run(a.workers, a.videos, a.frames, a.sample, size, a.recipe, a.keep,
                 runners=tuple(a.runner.split(",")), rounds=a.rounds, modes=tuple(a.modes.split(",")),
                 detectors=tuple(a.detector.split(",")))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
