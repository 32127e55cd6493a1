"""mat_jax.report on hand-written evaluations: the table, and refusing to mix different test data."""

from __future__ import annotations

import json

import pytest

from configs import demo
from mat_jax import report, robustness


def _evaluation(workdir, name, *, dataset_root, auc, fingerprint="f" * 64, per_method=None, manifest=True):
    out = workdir / "eval" / name
    out.mkdir(parents=True)
    metrics = {"frame": {"auc": auc - 0.01, "acc": 0.8},
               "video": {"auc": auc, "acc": 0.9, "ci95": {"auc": [auc - 0.05, min(1.0, auc + 0.05)]}}}
    if per_method:
        metrics["per_method"] = {m: {"video": {"auc": a}} for m, a in per_method.items()}
    (out / "metrics.json").write_text(json.dumps({"split": "test", "root": str(dataset_root), "metrics": metrics}))
    if manifest:
        (out / "manifest.json").write_text(json.dumps({"data": {"sha256": fingerprint}}))


def _records(tmp_path, dataset):
    root = tmp_path / "records" / dataset
    root.mkdir(parents=True)
    (root / "summary.json").write_text(json.dumps({"dataset": dataset}))
    return root


def test_one_row_per_run_columns_per_dataset(tmp_path, capsys):
    ffpp, celebdf = _records(tmp_path, "ffpp"), _records(tmp_path, "celebdf")
    a, b = tmp_path / "run_a", tmp_path / "run_b"
    _evaluation(a, "test", dataset_root=ffpp, auc=0.95, per_method={"Deepfakes": 0.99, "FaceSwap": 0.97})
    _evaluation(a, "celebdf_test", dataset_root=celebdf, auc=0.70, fingerprint="c" * 64)
    _evaluation(b, "test", dataset_root=ffpp, auc=0.93, per_method={"Deepfakes": 0.98, "FaceSwap": 0.96})
    _evaluation(b, "val", dataset_root=ffpp, auc=0.99)  # model selection: never in a results table
    assert report.main([str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["run", "celebdf test video AUC [95% CI]", "celebdf test video ACC", "celebdf test frame AUC",
                      "ffpp test video AUC [95% CI]", "ffpp test video ACC", "ffpp test frame AUC",
                      "ffpp test Deepfakes video AUC", "ffpp test FaceSwap video AUC"]
    row_a = [c.strip() for c in lines[2].strip("|").split("|")]
    row_b = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row_a[:2] == ["run_a", "0.7000 [0.650, 0.750]"] and row_a[7] == "0.9900"
    assert row_b[1] == "-" and row_b[4] == "0.9300 [0.880, 0.980]"


def test_runs_that_scored_different_records_are_not_mixed(tmp_path, capsys):
    ffpp = _records(tmp_path, "ffpp")
    a, b = tmp_path / "a", tmp_path / "b"
    _evaluation(a, "test", dataset_root=ffpp, auc=0.9, fingerprint="1" * 64)
    _evaluation(b, "test", dataset_root=ffpp, auc=0.9, fingerprint="2" * 64)
    assert report.main([str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "ffpp test" in err and "different records" in err and "111111111111" in err


def test_missing_manifest_or_eval_folder_is_named(tmp_path, capsys):
    ffpp = _records(tmp_path, "ffpp")
    old = tmp_path / "old"
    _evaluation(old, "test", dataset_root=ffpp, auc=0.9, manifest=False)
    assert report.main([str(old)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert report.main([str(tmp_path / "nothing")]) == 2
    assert "holds no eval/ folder" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["", "GB"])
def test_a_folder_that_is_not_a_perturbed_copy_is_refused(tmp_path, bad):
    copy = tmp_path / "robustness" / "GB-1"
    copy.mkdir(parents=True)
    summary = {"dataset": "demo"} if not bad else {"dataset": "demo", "perturbation": {"type": bad, "level": 1}}
    (copy / "summary.json").write_text(json.dumps(summary))
    if not bad:
        with pytest.raises(ValueError, match="names no perturbation"):
            robustness.perturbed_roots(str(tmp_path / "robustness"))
    else:
        assert robustness.perturbed_roots(str(tmp_path / "robustness")) == [("GB", 1, str(copy))]


def test_robustness_without_perturbed_copies_says_how_to_make_them(tmp_path):
    config = demo.get_config("small")
    config.robustness.root = str(tmp_path / "nothing_here")
    with pytest.raises(FileNotFoundError, match=r"no perturbed copies under .*nothing_here.*--perturb=all"):
        robustness.run(config, str(tmp_path))
