"""`data_prep.build --runner=beam` (Beam's DirectRunner, several processes): README's command gives
the local build's shards, metadata and report byte for byte; a video that kills its process is a
report row; a run resumed after an interruption redoes only the unfinished work."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faults import CRASHING_VIDEO, crash_on_one
from test_readme import bash_lines

from data_prep import build, demo, report
from data_prep.beam_run import Sandbox
from data_prep.shards import WorkDir
from data_prep.sources import list_videos
from mat_jax.faces.settings import Settings

# None of the imports above needs Beam: data_prep.beam_run imports it when a pipeline runs.
pytest.importorskip("apache_beam", reason="the beam extra: pip install -e '.[beam]'")

RAW = os.path.join("workdir", "demo", "demo_data", "raw")
CORRUPT = "original/c23/003"  # a val-split real video, truncated below


def _beam_line() -> str:
    lines = [l for l in bash_lines() if "data_prep.build" in l and "--runner=beam" in l]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder laid out as after README's set-up command, its demo tree tiny: `.venv` is this
    interpreter's environment. The fakes are filed as a frame-aligned method so that the train
    fakes reuse their real video's landmarks (the pipeline's second stage); one real video is
    truncated (a report row)."""
    site = tmp_path_factory.mktemp("site")
    (site / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    raw = str(site / RAW)
    demo.make_demo_tree(raw, videos_per_split=(2, 2, 2), frames=8, size=(160, 128), qualities=("c23",),
                        celebdf=(0, 0, 0), seed=0, log=lambda *_: None)  # fmt: skip
    man = os.path.join(raw, "ffpp", "manipulated_sequences")
    os.rename(os.path.join(man, demo.METHOD), os.path.join(man, "Deepfakes"))
    bad = next(v for v in list_videos("demo", raw) if v.video_id == CORRUPT).path
    with open(bad, "r+b") as f:
        f.truncate(3000)
    return site


@pytest.fixture(scope="module")
def builds(site):
    """README's Beam command as written, and its local twin (the same options without the Beam
    ones), the twin's work folder kept for the resume test."""
    line = _beam_line()
    local_args = [a for a in shlex.split(line)[3:] if not a.startswith(("--runner", "--beam_options", "--out"))]
    with contextlib.chdir(site):
        assert build.main(local_args + ["--out=local", "--workers=1", "--keep_work"]) == 0
    res = subprocess.run(["bash", "-c", line], cwd=site, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, f"{line}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    beam_out = next(a.split("=", 1)[1] for a in shlex.split(line) if a.startswith("--out="))
    return site / "local", site / beam_out, res.stdout


def _outputs(out) -> dict:
    """Every file of a finished build, summary.json without its timings."""
    files = {os.path.basename(p): Path(p).read_bytes() for p in glob.glob(os.path.join(out, "*")) if os.path.isfile(p)}
    summary = json.loads(files.pop("summary.json"))
    del summary["last_run"]
    return {**files, "summary.json": summary}


def test_readme_beam_command_gives_the_local_builds_records_and_report(builds):
    local, beam, stdout = builds
    a, b = _outputs(local), _outputs(beam)
    assert sorted(a) == sorted(b)
    assert sorted(f for f in a if ".tfrecord-" in f) == [f"demo-{s}.tfrecord-00000-of-00001" for s in ("test", "train", "val")]
    for name in a:
        assert a[name] == b[name], name
    assert not os.path.exists(os.path.join(beam, ".work"))
    rows = a["report.tsv"].decode().splitlines()[1:]
    assert len(rows) == 1 and rows[0].startswith("skipped\tval\treal\toriginal/c23/003\t") and "unreadable" in rows[0]
    counts = a["summary.json"]["counts"]["train"]
    assert counts["reused_landmarks"] == counts["fake"] > 0  # the fakes waited for their reals
    assert "beam: 12 of 12 videos to prepare (--runner=DirectRunner" in stdout


def test_a_video_that_kills_its_process_is_a_report_row_and_the_next_one_goes_on(site, tmp_path):
    videos = {v.video_id: v for v in list_videos("demo", str(site / RAW))}
    settings = Settings(dataset="demo", recipe="bench", size=64)
    out = str(tmp_path)
    WorkDir(out).open({})
    box = Sandbox(settings, out, job=crash_on_one)
    try:
        (crashed,) = box.run(videos[CRASHING_VIDEO])
        (after,) = box.run(videos["original/c23/000"])
    finally:
        box.close()
    assert crashed.status == "skipped" and "signal SIGSEGV" in crashed.reason, crashed
    assert WorkDir(out).result(crashed.key) == crashed  # its marker: done, not retried
    assert after.status == "ok" and after.written == 8, after
    report.write_report(os.path.join(out, "report.tsv"), [crashed, after])
    rows = Path(out, "report.tsv").read_text().splitlines()[1:]
    assert len(rows) == 1 and rows[0].startswith("skipped\ttest\treal\toriginal/c23/001\t") and "SIGSEGV" in rows[0]


def test_a_resumed_run_rewrites_nothing_that_finished(builds, tmp_path):
    """The local build's state as an interrupted run leaves it: one test video unfinished (no
    marker, no part), the val shard not written yet, no summary. The Beam run redoes exactly that
    video and those shards, and ends with the same files."""
    local, _, _ = builds
    out = tmp_path / "out"
    shutil.copytree(local, out, symlinks=True)
    redo = "original__c23__000"
    for path in [out / ".work" / "parts" / f"{redo}.json", out / ".work" / "parts" / f"{redo}.rec",
                 out / "summary.json", out / "demo-val.tfrecord-00000-of-00001"]:  # fmt: skip
        path.unlink()
    before = {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in glob.glob(f"{out}/**/*", recursive=True, include_hidden=True)
              if os.path.isfile(p)}  # fmt: skip
    args = shlex.split(_beam_line())[3:]
    args = [a for a in args if not a.startswith(("--out", "--workers"))] + [f"--out={out}", "--workers=1", "--keep_work"]
    # In a process of its own, as a user runs it: the DirectRunner leaves gRPC threads behind in
    # its process, whose fork handlers have broken later subprocesses (ffmpeg) of the test process.
    res = subprocess.run([sys.executable, "-m", "data_prep.build", *args], cwd=builds[0].parent,
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    after = {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in before if os.path.exists(p)}
    changed = sorted(os.path.relpath(p, out) for p in before if after.get(p) != before[p])
    # The shard holding the redone video is written again (its part is new), the train shard is not.
    shards = [".work/shards/demo-test.tfrecord-00000-of-00001.json", ".work/shards/demo-val.tfrecord-00000-of-00001.json"]
    metadata = ["dataset_info.json", "features.json", "label.labels.txt", "report.tsv"]
    assert changed == sorted(shards + metadata + ["demo-test.tfrecord-00000-of-00001"]), changed
    assert (out / ".work" / "parts" / f"{redo}.rec").exists()
    a, b = _outputs(local), _outputs(out)
    for name in a:
        assert a[name] == b[name], name


def test_the_local_build_imports_no_beam():
    code = "import sys, data_prep.build; assert 'apache_beam' not in sys.modules, 'beam imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _cluster_lines() -> list[str]:
    """The ```sh commands of README's cluster section: not run by test_readme (no cluster here)."""
    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    section = text.split("## Data prep on a cluster", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return [" ".join(l.split()) for b in blocks for l in b.replace("\\\n", " ").splitlines() if l.strip()]


def test_readme_cluster_command_is_one_the_build_and_beam_accept():
    """README's Flink command as written, short of a cluster: the build's parser takes it, its
    paths are plain ones (the readers use plain files), and every Beam flag in it is one Beam
    knows (a misspelt one would be dropped with a warning, and the job run elsewhere)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from data_prep.beam_run import pipeline_flags

    (line,) = [l for l in _cluster_lines() if " data_prep.build " in l]
    argv = shlex.split(line)
    assert argv[:3] == [".venv/bin/python", "-m", "data_prep.build"], argv
    a = build.parser().parse_args(argv[3:])
    assert a.runner == "beam" and "://" not in a.root + a.out, a
    flags = pipeline_flags(a.beam_options, a.workers)
    known = PipelineOptions(flags).get_all_options(drop_default=True)
    assert {f.split("=", 1)[0].lstrip("-") for f in flags} <= set(known), (flags, sorted(known))
    assert PipelineOptions(flags).view_as(StandardOptions).runner == "FlinkRunner"


def test_readme_worker_pool_command_starts_a_worker_pool(tmp_path):
    """The command README has every cluster node run, as written in a folder laid out as after the
    set-up command: it serves until stopped."""
    (line,) = [l for l in _cluster_lines() if "worker_pool_main" in l]
    port = next(a.split("=", 1)[1] for a in shlex.split(line) if a.startswith("--service_port="))
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        for out in proc.stdout:  # ends when the process does
            if "Started worker pool servicer at port" in out:
                break
        assert proc.poll() is None, "the worker pool exited"
        assert f":{port}" in out, out
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_bench_times_both_runners_on_the_same_tree(tmp_path):
    """`data_prep.bench --runner=local,beam` (README's comparison), on a tiny tree."""
    args = ["--videos=2", "--frames=4", "--sample=2", "--size=160x128", "--recipe=bench",
            "--runner=local,beam", "--rounds=1", "--modes=reuse", f"--keep={tmp_path}"]  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "data_prep.bench", *args], capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    out = json.loads(res.stdout[res.stdout.index("\n{") :])
    assert [(r["runner"], r["mode"]) for r in out["runs"]] == [("local", "reuse"), ("beam", "reuse")]
    # 2 reals per split, each with its fake: 12 videos x 2 crops
    assert out["runs"][0]["faces"] == out["runs"][1]["faces"] == 24
    med = out["median_faces_per_second"]
    assert out["beam_over_local"]["reuse"] == round(med["beam"]["reuse"] / med["local"]["reuse"], 2) > 0
