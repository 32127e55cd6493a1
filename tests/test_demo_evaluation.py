"""What the small demo's evaluation reports beyond ACC/AUC: operating points, calibration,
confidence intervals, val thresholds on test, the manifest, robustness, and one results table."""

from __future__ import annotations

import csv
import json
import math

import pytest

from mat_jax import report

pytestmark = pytest.mark.slow  # the demo_run fixture (conftest.py) trains the small demo


def _metrics(workdir, split):
    return json.loads((workdir / "eval" / split / "metrics.json").read_text())


def test_test_metrics_carry_operating_points_calibration_intervals_and_val_thresholds(demo_run):
    workdir, _ = demo_run
    m = _metrics(workdir, "test")["metrics"]
    for level in ("frame", "video"):
        assert set(m["operating"][level]) == {"tpr_at_fpr_0.01", "tpr_at_fpr_0.001"}
        cal = m["calibration"][level]
        assert 0 <= cal["ece"] <= 1 and 0 <= cal["brier"] <= 1
        # Chosen on val, applied unchanged here: the thresholds are val's, the rates test's.
        for choice in ("eer", "fpr_0.01"):
            point = m["val_thresholds"][level][choice]
            assert 0 <= point["acc"] <= 1 and point["n"] == m[level]["n"]
    lo, hi = m["video"]["ci95"]["auc"]
    assert lo <= m["video"]["auc"] <= hi
    assert m["video_ci95"]["draws"] == 1000
    assert m["aggregations"]["mean"]["auc"] == m["video"]["auc"]  # the configured rule is the headline
    assert set(m["aggregations"]) == {"mean", "mean_logit", "max", "topk"}
    assert m["temperature"]["T"] > 0 and "frame_after" in m["temperature"]

    fitted = json.loads((workdir / "eval" / "val" / "thresholds.json").read_text())
    test_step = _metrics(workdir, "test")["step"]
    assert fitted["step"] == test_step and fitted["split"] == "val"
    assert m["val_thresholds"]["video"]["eer"]["threshold"] == fitted["video"]["eer"]
    assert (workdir / "eval" / "test" / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_manifest_names_checkpoint_data_code_and_versions(demo_run):
    workdir, _ = demo_run
    man = json.loads((workdir / "eval" / "test" / "manifest.json").read_text())
    assert man["checkpoint"]["step"] == _metrics(workdir, "test")["step"]
    assert len(man["checkpoint"]["sha256"]) == 64
    data = man["data"]
    assert data["split"] == "test" and data["examples"] == _metrics(workdir, "test")["metrics"]["frame"]["n"]
    assert all(f["name"].startswith("demo-test.tfrecord") and f["bytes"] > 0 for f in data["files"])
    assert man["packages"]["jax"] and man["config"]["data"]["dataset"] == "demo"


def test_robustness_rows_are_finite_and_labelled(demo_run):
    workdir, stdout = demo_run
    out = workdir / "eval" / "robustness"
    rows = list(csv.DictReader((out / "robustness.csv").open()))
    assert [(r["type"], r["level"]) for r in rows] == [("CS", "5"), ("GB", "5"), ("VC", "5")]
    for r in rows:
        assert math.isfinite(float(r["frame_auc"])) and math.isfinite(float(r["video_auc"]))
        assert int(r["n_videos"]) == _metrics(workdir, "test")["metrics"]["video"]["n"]
    assert (out / "robustness.md").read_text().splitlines()[2].startswith("| clean | 0 |")
    assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert "robustness, step" in stdout and "--perturb=CS:5,GB:5,VC:5" in stdout


def test_report_gathers_the_demo_run(demo_run, tmp_path, capsys):
    workdir, _ = demo_run
    assert report.main([str(workdir), f"--out={tmp_path / 'r.md'}", f"--csv={tmp_path / 'r.csv'}"]) == 0
    header, row = list(csv.reader((tmp_path / "r.csv").open()))
    cells = dict(zip(header, row))
    video_auc = _metrics(workdir, "test")["metrics"]["video"]["auc"]
    assert cells["demo test video AUC [95% CI]"].startswith(f"{video_auc:.4f} [")
    assert cells["robustness GB mean video AUC"] != "-"
    assert (tmp_path / "r.md").read_text() == capsys.readouterr().out
