"""Tests of `python -m mat_jax.compare` on small hand-written run folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mat_jax import compare, uncertainty

ROOT = Path(__file__).resolve().parents[1]
VIDEO_FIELDS = "video_id,method,label,num_frames,score,prediction"  # as mat_jax.evaluate writes them
FRAME_FIELDS = "video_id,frame_index,method,label,score"


def _write_run(root: Path, frames: dict[str, tuple[int, list[float]]], split: str = "test") -> Path:
    """A workdir whose eval/<split>/ holds videos.csv and frames.csv of {video: (label, frame scores)}."""
    out = root / "eval" / split
    out.mkdir(parents=True)
    vrows, frows = [VIDEO_FIELDS], [FRAME_FIELDS]
    for vid in sorted(frames):
        label, scores = frames[vid]
        method = "Deepfakes" if label else "original"
        mean = float(np.mean(scores))
        vrows.append(f"{vid},{method},{label},{len(scores)},{mean:.6f},{int(mean > 0.5)}")
        frows += [f"{vid},{i * 5},{method},{label},{s:.6f}" for i, s in enumerate(scores)]
    (out / "videos.csv").write_text("\n".join(vrows) + "\n")
    (out / "frames.csv").write_text("\n".join(frows) + "\n")
    return root


def _runs(tmp_path, n=12, seed=0):
    rng = np.random.default_rng(seed)
    a, b = {}, {}
    for i in range(n):
        label = i % 2
        base = rng.random(3) * 0.6 + 0.35 * label
        a[f"v{i:02d}"] = (label, base.tolist())
        b[f"v{i:02d}"] = (label, np.clip(base + rng.normal(0, 0.25, 3), 0, 1).tolist())
    return a, b


def test_compare_prints_the_table_and_writes_json(tmp_path, capsys):
    a, b = _runs(tmp_path)
    run_a, run_b = _write_run(tmp_path / "a", a), _write_run(tmp_path / "b", b)
    out = tmp_path / "cmp.json"
    assert compare.main([str(run_a), str(run_b), "--draws=200", "--seed=3", f"--json={out}"]) == 0
    text = capsys.readouterr().out
    for needle in ("video AUC", "frame AUC", "video ACC", "video EER", "DeLong", "95% CI",
                   "12 videos (6 real, 6 fake), 36 frames", "200 draws, seed 3"):
        assert needle in text
    result = json.loads(out.read_text())
    assert set(result) == {"run_a", "run_b", "split", "n_videos", "n_real", "n_fake", "n_frames",
                           "video_auc", "frame_auc", "video_bootstrap"}
    # The figures are those of the modules on the paired rows.
    va = np.array([round(float(np.mean(a[v][1])), 6) for v in sorted(a)])
    vb = np.array([round(float(np.mean(b[v][1])), 6) for v in sorted(b)])
    labels = np.array([a[v][0] for v in sorted(a)])
    expected = uncertainty.delong_test(va, vb, labels)
    assert result["video_auc"]["p"] == pytest.approx(expected["p"])
    boot = uncertainty.paired_bootstrap(va, vb, labels, draws=200, seed=3)
    assert result["video_bootstrap"]["acc"]["low"] == pytest.approx(boot["acc"]["low"])


def test_rows_are_paired_by_id_not_by_position(tmp_path):
    a, _ = _runs(tmp_path)
    run_a, run_b = _write_run(tmp_path / "a", a), _write_run(tmp_path / "b", a)
    videos = run_b / "eval" / "test" / "videos.csv"
    lines = videos.read_text().splitlines()
    videos.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")  # same rows, other order
    r = compare.compare(run_a, run_b, draws=50)
    assert r["video_auc"]["diff"] == 0.0 and r["video_auc"]["p"] == 1.0
    assert r["video_bootstrap"]["acc"]["low"] == r["video_bootstrap"]["acc"]["high"] == 0.0


def _error(capsys, *argv) -> str:
    assert compare.main([str(a) for a in argv]) == 2
    return capsys.readouterr().err


def test_a_missing_file_is_named_with_the_fix(tmp_path, capsys):
    a, _ = _runs(tmp_path)
    run_a = _write_run(tmp_path / "a", a)
    err = _error(capsys, run_a, tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "eval" / "test" / "videos.csv") in err and "--mode=eval" in err
    (run_a / "eval" / "test" / "frames.csv").unlink()
    run_b = _write_run(tmp_path / "b", a)
    assert str(run_a / "eval" / "test" / "frames.csv") in _error(capsys, run_a, run_b)
    assert "val" in _error(capsys, run_b, run_b, "--split=val")


def test_different_video_sets_are_refused(tmp_path, capsys):
    a, b = _runs(tmp_path)
    del b["v03"]
    b["x99"] = (1, [0.9])
    err = _error(capsys, _write_run(tmp_path / "a", a), _write_run(tmp_path / "b", b))
    assert "different videos" in err and "1 only in" in err and "v03" in err and "x99" in err
    assert "same records" in err


def test_different_frames_or_labels_are_refused(tmp_path, capsys):
    a, b = _runs(tmp_path)
    b["v04"] = (a["v04"][0], a["v04"][1][:2])  # one frame fewer
    err = _error(capsys, _write_run(tmp_path / "a", a), _write_run(tmp_path / "b", b))
    assert "different frames" in err and "v04/10" in err
    a2, b2 = _runs(tmp_path)
    b2["v05"] = (0, b2["v05"][1])
    err = _error(capsys, _write_run(tmp_path / "a2", a2), _write_run(tmp_path / "b2", b2))
    assert "1 video(s) have different labels" in err and "v05" in err


def test_a_one_class_split_is_refused_by_name(tmp_path, capsys):
    fakes = {f"f{i}": (1, [0.6 + 0.01 * i]) for i in range(4)}
    run = _write_run(tmp_path / "a", fakes)
    err = _error(capsys, run, _write_run(tmp_path / "b", fakes))
    assert "only fake videos (4)" in err and str(run / "eval" / "test" / "videos.csv") in err


def test_malformed_files_are_refused(tmp_path, capsys):
    a, _ = _runs(tmp_path)
    run = _write_run(tmp_path / "a", a)
    videos = run / "eval" / "test" / "videos.csv"
    videos.write_text("video_id,label\nv00,0\n")
    assert "no score column" in _error(capsys, run, run)
    videos.write_text(VIDEO_FIELDS + "\nv00,original,0,3,oops,0\n")
    assert "videos.csv:2: unreadable row" in _error(capsys, run, run)


def test_the_module_runs_from_the_command_line(tmp_path):
    a, b = _runs(tmp_path)
    run_a, run_b = _write_run(tmp_path / "a", a), _write_run(tmp_path / "b", b)
    ok = subprocess.run([sys.executable, "-m", "mat_jax.compare", str(run_a), str(run_b), "--draws=20"],
                        cwd=ROOT, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "video AUC" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "mat_jax.compare", str(run_a), str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
