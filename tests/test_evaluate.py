"""Evaluation loop: scores equal the model's softmax, every record once, files, cross-dataset."""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest
from etils import epath
from flax import nnx

from configs import celebdf
from mat_jax import checkpointing, eval_files, evaluate, parallel, state as state_lib
from mat_jax.data import eval_data
from train_utils import make_dataset, tiny_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    # 5 videos x 3 frames = 15 records per split: the last batch of 8 is padded.
    return make_dataset(tmp_path_factory.mktemp("records"), videos={"test": 5}, frames=3, shards=2, seed=3)


def test_write_results_hand_made(tmp_path):
    s = {
        "score": np.array([0.9, 0.7, 0.2, 0.4, 0.6]),
        "label": np.array([1, 1, 0, 0, 1]),
        "video_id": np.array(["b", "b", "a", "a", "c"]),
        "frame_index": np.array([5, 0, 0, 5, 0]),
        "method": np.array(["FaceSwap", "FaceSwap", "original", "original", "Deepfakes"]),
    }
    results = evaluate.metrics_lib.compute_metrics(s["score"], s["label"], s["video_id"], s["method"])
    out = epath.Path(tmp_path) / "eval" / "x"
    eval_files.write_results(out, s, results, info={"split": "test", "step": 7})
    videos = list(csv.DictReader((out / "videos.csv").open()))
    assert [v["video_id"] for v in videos] == ["a", "b", "c"]
    assert [float(v["score"]) for v in videos] == pytest.approx([0.3, 0.8, 0.6])
    assert [int(v["num_frames"]) for v in videos] == [2, 2, 1]
    assert [int(v["prediction"]) for v in videos] == [0, 1, 1]
    frames = list(csv.DictReader((out / "frames.csv").open()))
    assert [(f["video_id"], f["frame_index"]) for f in frames] == [("a", "0"), ("a", "5"), ("b", "0"),
                                                                   ("b", "5"), ("c", "0")]  # fmt: skip
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["step"] == 7 and saved["metrics"]["frame"]["auc"] == 1.0
    assert saved["metrics"]["video"]["n"] == 3
    assert set(saved["metrics"]["per_method"]) == {"FaceSwap", "Deepfakes"}
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_class_split_writes_nan_as_null(tmp_path):
    s = {"score": np.array([0.1, 0.3]), "label": np.array([0, 0]), "video_id": np.array(["a", "b"]),
         "frame_index": np.array([0, 0]), "method": np.array(["original", "original"])}  # fmt: skip
    results = evaluate.metrics_lib.compute_metrics(s["score"], s["label"], s["video_id"], s["method"])
    out = epath.Path(tmp_path)
    eval_files.write_results(out, s, results, info={"split": "test"})
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["frame"]["auc"] is None and saved["metrics"]["frame"]["acc"] == 1.0
    assert (out / "roc.png").exists()


def test_evaluator_scores_every_record_once(data_root):
    config = tiny_config("pretrain", data_root)
    mesh = parallel.create_mesh()
    with jax.set_mesh(mesh):
        graphdef, state = state_lib.create_model_state(config, mesh)
        evaluator = evaluate.Evaluator(config, graphdef, mesh)
        s = evaluator.scores(state, "test")
        forward = nnx.jit(lambda m, x: jax.nn.softmax(m(x, train=False)["logits"], axis=-1)[:, 1])
        model = nnx.merge(graphdef, state)
        expected = []
        for batch in eval_data.create_eval_iterator(config, "test"):
            expected.append(np.asarray(forward(model, batch["image"]))[batch["mask"] > 0])
    assert len(s["score"]) == 15  # 2 batches of 8, one padding row dropped
    assert sorted(zip(s["video_id"], s["frame_index"])) == sorted(
        (f"{m}/test_{v:03d}", 5 * f) for v, m in enumerate(["original", "Deepfakes", "original", "FaceSwap",
                                                              "original"]) for f in range(3)  # fmt: skip
    )
    np.testing.assert_allclose(s["score"], np.concatenate(expected), rtol=1e-5, atol=1e-6)


def test_evaluate_checkpoint_on_another_dataset(data_root, tmp_path):
    """`--mode=eval` with configs/celebdf.py: a saved model scored on other records."""
    config = tiny_config("pretrain", data_root)
    model = state_lib.create_model(config, 5)
    ckpt = checkpointing.save_model(tmp_path / "model", model, {"step": 42})
    eval_config = celebdf.get_config("stage=pretrain,tiny,smoke")
    eval_config.data.root = data_root
    eval_config.train.eval_batch_size = 8
    workdir = tmp_path / "work"
    results = evaluate.evaluate_checkpoint(eval_config, str(workdir), checkpoint=ckpt, split="test")
    out = workdir / "eval" / "celebdf_test"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["step"] == 42 and saved["checkpoint"] == ckpt and saved["root"] == data_root
    assert saved["metrics"]["frame"]["n"] == results["frame"]["n"] == 15
    assert len((out / "videos.csv").read_text().splitlines()) == 1 + 5
    assert (out / "roc.png").exists()
