"""The demo end to end at a small size, then predict and export on the model it trained."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the demo_run fixture (conftest.py) trains the small demo, ~1.5 min


def test_demo_writes_everything(demo_run):
    workdir, stdout = demo_run
    assert "python -m data_prep.demo" in stdout and "python -m data_prep.build --dataset=demo" in stdout
    assert "AUC" in stdout and "video" in stdout  # the final table
    summary = json.loads((workdir / "demo_data" / "records" / "summary.json").read_text())
    assert summary["counts"]["train"]["real"] > 0 and summary["counts"]["train"]["fake"] > 0
    assert glob.glob(str(workdir / "events.out.tfevents.*"))
    assert (workdir / "checkpoints").is_dir() and (workdir / "best").is_dir()
    test = json.loads((workdir / "eval" / "test" / "metrics.json").read_text())
    assert set(test["metrics"]) >= {"frame", "video", "per_method"}
    for name in ("videos.csv", "frames.csv", "roc.png", "scores.png"):
        assert (workdir / "eval" / "test" / name).is_file(), name
    assert (workdir / "eval" / "test" / "attention.png").is_file()


def test_predict_video_and_image_folder(demo_run, tmp_path):
    import cv2

    from mat_jax import predict

    workdir, _ = demo_run
    raw = workdir / "demo_data" / "raw" / "ffpp"
    video = sorted(glob.glob(str(raw / "manipulated_sequences" / "SBI" / "c23" / "videos" / "*.mp4")))[0]
    # An image folder: two frames of a real video, plus a picture without a face and a broken file.
    real = sorted(glob.glob(str(raw / "original_sequences" / "youtube" / "c23" / "videos" / "*.mp4")))[0]
    folder = tmp_path / "images"
    folder.mkdir()
    cap = cv2.VideoCapture(real)
    for k in range(2):
        ok, frame = cap.read()
        assert ok
        cv2.imwrite(str(folder / f"frame{k}.png"), frame)
    cap.release()
    cv2.imwrite(str(folder / "noface.png"), np.full((120, 160, 3), 127, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "pred"

    rc = predict.main([video, str(folder), str(tmp_path / "missing.mp4"), f"--workdir={workdir}", f"--out={out}",
                       "--frames=4"])
    assert rc == 0
    saved = json.loads((out / "predictions.json").read_text())["results"]
    by_name = {os.path.basename(r["path"]): r for r in saved}
    vid = by_name[os.path.basename(video)]
    assert vid["status"] == "ok" and vid["verdict"] in ("real", "fake") and 0.0 <= vid["score"] <= 1.0
    assert len(vid["frames"]) == 4 and all(f["score"] is not None for f in vid["frames"])
    np.testing.assert_allclose(vid["score"], np.mean([f["score"] for f in vid["frames"]]), rtol=1e-6)
    assert os.path.isfile(vid["outputs"]["attention"]) and os.path.isfile(vid["outputs"]["annotated_video"])
    assert cv2.VideoCapture(vid["outputs"]["annotated_video"]).get(cv2.CAP_PROP_FRAME_COUNT) == 4
    for k in range(2):
        assert by_name[f"frame{k}.png"]["status"] == "ok"
    assert by_name["noface.png"]["status"].startswith("no face found")
    assert by_name["broken.jpg"]["status"].startswith("unreadable")
    assert by_name["missing.mp4"]["status"] == "no such file"


def test_predict_on_the_test_videos_equals_the_evaluation(demo_run):
    """predict samples, detects, crops and scores a test video as the records and evaluation did."""
    import csv

    from mat_jax import predict

    workdir, _ = demo_run
    summary = json.loads((workdir / "demo_data" / "records" / "summary.json").read_text())
    # The test split is cut with landmarks found on each video, as predict must (reuse is a
    # train-split option, and the demo's self-blended fakes never take it).
    assert summary["settings"]["landmark_reuse_splits"] == ["train"]
    assert summary["counts"]["test"]["reused_landmarks"] == 0 == summary["counts"]["train"]["reused_landmarks"]
    ev = workdir / "eval" / "test"
    with open(ev / "videos.csv") as f:
        videos = {r["video_id"]: r for r in csv.DictReader(f)}
    frames: dict[str, dict[int, float]] = {}
    with open(ev / "frames.csv") as f:
        for r in csv.DictReader(f):
            frames.setdefault(r["video_id"], {})[int(r["frame_index"])] = float(r["score"])
    raw = workdir / "demo_data" / "raw" / "ffpp"
    folder = {"original": "original_sequences/youtube", "SBI": "manipulated_sequences/SBI"}
    paths = {}
    for vid in videos:  # "SBI/c23/004_005" -> .../manipulated_sequences/SBI/c23/videos/004_005.mp4
        method, quality, name = vid.split("/")
        paths[str(raw / folder[method] / quality / "videos" / f"{name}.mp4")] = vid
    assert {v.split("/")[0] for v in videos} == {"original", "SBI"}

    results = predict.run(sorted(paths), str(workdir), log=lambda *_: None)  # frames: the records'
    for r in results:
        vid = paths[r.path]
        assert r.status == "ok", (vid, r.status)
        scored = {f["frame_index"]: f["score"] for f in r.frames if f["score"] is not None}
        assert len(scored) == int(videos[vid]["num_frames"]) and scored.keys() == frames[vid].keys(), vid
        np.testing.assert_allclose([scored[i] for i in sorted(scored)],
                                   [frames[vid][i] for i in sorted(scored)], atol=1e-3, err_msg=vid)
        assert abs(r.score - float(videos[vid]["score"])) < 1e-3, (vid, r.score, videos[vid]["score"])


def test_export_bundle_and_saved_model(demo_run, tmp_path):
    import tensorflow as tf

    from mat_jax import export, inference

    workdir, _ = demo_run
    bundle = tmp_path / "test.npz"
    assert export.main([f"--workdir={workdir}", "--split=test", f"--out={bundle}",
                        f"--saved-model={tmp_path / 'served'}"]) == 0
    with np.load(bundle, allow_pickle=False) as z:  # numpy alone, no pickle
        n = z["score"].shape[0]
        assert z["label"].shape == (n,) and z["video_id"].dtype.kind == "U" and z["method"].dtype.kind == "U"
        m = json.loads(str(z["meta_json"]))["config"]["model"]["num_attention_maps"]
        assert z["feature_matrix"].shape[:2] == (n, m) and z["attention_maps"].shape[0] == n
        assert z["attention_maps"].shape[-1] == m
        assert any(k.startswith("state/backbone/") for k in z.files) and "state/centers" in z.files
        meta = json.loads(str(z["meta_json"]))
        assert meta["split"] == "test" and "video" in meta["metrics"]
        eval_csv = (workdir / "eval" / "test" / "frames.csv").read_text().splitlines()
        assert len(eval_csv) - 1 == n  # every test frame, as the trainer's own evaluation
        scores = z["score"]
    table = (tmp_path / "test.npz.params.tsv").read_text().splitlines()
    assert table[0] == "name\tshape\tcount\tmean\tstd" and table[-1].startswith("total\t")

    # The SavedModel, run by TensorFlow alone, scores like the JAX model.
    trained = inference.load_trained(str(workdir))
    loaded = tf.saved_model.load(str(tmp_path / "served"))
    rng = np.random.default_rng(0)
    s = trained.image_size
    x = rng.uniform(-1, 1, size=(3, s, s, 3)).astype(np.float32)
    served = loaded.serve(tf.constant(x))
    ours = inference.Scorer(trained, batch_size=3)(x)
    np.testing.assert_allclose(served["score"].numpy(), ours["score"], atol=1e-5)
    np.testing.assert_allclose(served["logits"].numpy(), ours["logits"], atol=1e-4)
    assert np.all((scores >= 0) & (scores <= 1))


def test_tracking_keeps_the_single_face_records_of_the_demo(demo_run):
    """One person per video: the records made through face tracks are, crop for crop, what
    the largest face of each sampled frame gives (the records before tracking)."""
    from data_prep import sources
    from mat_jax.data import records
    from mat_jax.faces import crops, detect
    from mat_jax.faces import frames as frames_lib
    from mat_jax.faces.settings import Settings

    workdir, _ = demo_run
    root = workdir / "demo_data" / "records"
    settings = Settings.from_json(json.loads((root / "summary.json").read_text())["settings"])
    got: dict[str, dict[int, records.FaceRecord]] = {}
    for f in records.split_files(str(root), "test"):
        for r in records.read(f):
            assert r.track_id == 0
            got.setdefault(r.video_id, {})[r.frame_index] = r
    finder = detect.FaceFinder(settings.detector, settings.detect_size, settings.min_face)
    videos = [v for v in sources.list_videos("demo", str(workdir / "demo_data" / "raw")) if v.split == "test"]
    assert videos and {v.video_id for v in videos} == set(got)
    for v in videos:
        indices, frames = frames_lib.read_sampled(v.path, settings.sampling(v.split))
        finder.reset()
        largest = {i: finder.find(frames[i]) for i in indices}
        expected = {i: crops.face_crop(frames[i], face.landmarks, settings)[0]
                    for i, face in largest.items() if face is not None}
        assert {i: r.image for i, r in got[v.video_id].items()} == expected, v.video_id
