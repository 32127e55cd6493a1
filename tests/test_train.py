"""Training in process on generated records: learning, evaluation files, the NaN stop, bad data,
and stage 2 started from stage 1 through the command line.

Everything uses the `tiny` model (EfficientNet-B0 at width 0.25 / depth 0.2, 64 px, M=2);
the runs and records come from conftest.py and train_utils.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mat_jax import checkpointing, train
from train_utils import checkpoint_params, steps, tiny_config


@pytest.mark.slow  # the stage-1 reference run: ~1 min on 2 cores
def test_profile_trace_written(stage1):
    traces = list(Path(stage1[0]).glob("plugins/profile/*/*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0


@pytest.mark.slow  # the stage-1 reference run: ~1 min on 2 cores
def test_stage1_loss_falls_and_eval_files(stage1):
    workdir, _, summary = stage1
    history = summary["history"]
    assert [s for s, _ in history] == [4, 8, 12, 16, 20, 24]
    first, last = history[0][1], history[-1][1]
    assert last["loss"] < 0.7 * first["loss"], history
    assert last["accuracy"] > 0.8
    for _, m in history:
        assert {"loss", "ce", "accuracy", "learning_rate", "grad_norm"} <= set(m)
    assert history[0][1]["learning_rate"] == pytest.approx(3e-3)
    # The best checkpoint is chosen on "val" (evaluated at 12 and 24), never on "test".
    assert summary["best"]["step"] in (12, 24) and summary["best"]["metric"] == "frame/auc"
    # No claim on eval accuracy: after 24 steps the BatchNorm running averages (decay 0.99)
    # are still mostly their initial values, so eval-mode scores are not yet informative.
    assert 0.0 <= summary["final_eval"]["frame"]["auc"] <= 1.0
    assert summary["final_eval"]["video"]["n"] == 6
    for split in ("val", "test"):
        out = Path(workdir) / "eval" / split
        for name in ("metrics.json", "videos.csv", "frames.csv", "roc.png", "history.jsonl"):
            assert (out / name).stat().st_size > 0, out / name
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["split"] == split and metrics["metrics"]["frame"]["n"] == 24
        assert len((out / "frames.csv").read_text().splitlines()) == 1 + 24
        assert len((out / "videos.csv").read_text().splitlines()) == 1 + 6
    assert len((Path(workdir) / "eval" / "val" / "history.jsonl").read_text().splitlines()) == 2
    assert sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit()) == [
        12, 16, 24
    ]  # keep 3: periodic (8, 16, 24) and evaluation (12, 24) saves
    assert list(Path(workdir).glob("events.out.tfevents.*")), "no TensorBoard events"


@pytest.mark.slow  # the stage-1 reference run: ~1 min on 2 cores
def test_nan_stops_before_checkpoint(stage1, tmp_path):
    """A diverging continuation stops at the first non-finite step; checkpoint 24 survives."""
    src, config, _ = stage1
    workdir = tmp_path / "nan"
    shutil.copytree(src, workdir)
    before = checkpoint_params(workdir / "checkpoints" / "24", config)
    config = config.copy_and_resolve_references()
    config.optim.learning_rate = 1e30
    config.train.epochs = 4  # 8 more steps; a checkpoint would be due at step 32
    config.train.log_every_steps = 100  # the save at 32 must still check every step's loss
    with pytest.raises(train.NonFiniteLossError, match=r"at step 25\b") as err:
        train.train_and_evaluate(config, str(workdir))
    # The first update after the restart overflows the weights: its loss was still finite,
    # the parameter norm after it is not, and the next step's loss would be NaN.
    assert "param_norm (inf)" in str(err.value) and "Last good checkpoint: step 24" in str(err.value)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 24
    after = checkpoint_params(workdir / "checkpoints" / "24", config)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_corrupt_record_names_the_file(data_root, tmp_path):
    root = tmp_path / "corrupt"
    shutil.copytree(data_root, root)
    victim = sorted(root.glob("*-train.tfrecord-*"))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncated mid-record
    config = tiny_config("pretrain", str(root), steps_per_epoch=2, epochs=1)
    with pytest.raises(Exception, match=victim.name):
        train.train_and_evaluate(config, str(tmp_path / "work"))


@pytest.mark.slow  # stage 2 through the command line: ~1.5 min on 2 cores
def test_stage2_from_stage1_writes_everything(stage2_reference, stage1):
    workdir = Path(stage2_reference)
    assert steps(workdir) == [4, 6, 8, 12]  # periodic (4, 8, 12) and evaluation (6, 12) saves
    meta = checkpointing.read_meta(workdir / "checkpoints" / "12")
    assert meta["step"] == meta["data_position"] == 12 and meta["stage"] == "mat"
    assert meta["alpha"] == pytest.approx(0.05 * 0.9**3) and meta["learning_rate"] == pytest.approx(1e-4)
    assert meta["best_metric"] == "frame/auc" and meta["best_step"] in (6, 12)
    for name in ("metrics.json", "videos.csv", "frames.csv", "roc.png"):
        assert (workdir / "eval" / "test" / name).exists()
    # The backbone started from stage 1: 4 AdamW steps moved it by at most ~4 lr.
    config = tiny_config("mat", "")
    mat = checkpoint_params(workdir / "checkpoints" / "4", config)
    backbone = checkpoint_params(Path(stage1[0]) / "best", stage1[1])
    kernel = "conv_stem/kernel"
    assert np.max(np.abs(mat[f"backbone/{kernel}"] - backbone[kernel])) < 1e-2
    assert np.any(mat["centers"] != 0)  # the centre update was written back
