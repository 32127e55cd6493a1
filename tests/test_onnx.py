"""ONNX export (`mat_jax.export --format=onnx`) against JAX, and predict on onnxruntime without JAX.

Tolerances (issue: ONNX): logits within 1e-4 * max(1, max|jax|), attention maps within
1e-3 * max|jax|, at batch 1 and batch 5 of one exported graph (its batch is dynamic).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import jax
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from configs.ffpp import get_config
from mat_jax import export, inference, onnx_backend, state as state_lib
from mat_jax.interop import to_onnx
from mat_jax.interop.torch import mat_from_state_dict

ROOT = Path(__file__).resolve().parents[1]
FAKE = "demo_data/raw/ffpp/manipulated_sequences/SBI/c23/videos/000_001.mp4"


def onnx_and_jax(trained, pixels):
    """(ONNX outputs at batch n and at batch 1 on row 0, JAX outputs at batch n)."""
    fn, state, names = export.onnx_inference_fn(trained)
    size = trained.image_size
    model = to_onnx.convert(fn, state, [jax.ShapeDtypeStruct(("batch", size, size, 3), np.uint8)],
                            input_names=["pixels"], output_names=names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = dict(zip(names, session.run(names, {"pixels": pixels})))
    one = dict(zip(names, session.run(names, {"pixels": pixels[:1]})))
    ref = dict(zip(names, (np.asarray(v) for v in jax.jit(fn)(state, pixels))))
    return batch, one, ref


def check(batch, one, ref):
    for name, tol in (("logits", 1e-4), ("score", 1e-4), ("attention_maps", 1e-3)):
        r = ref[name].astype(np.float64)
        scale = max(1.0, float(np.abs(r).max())) if name != "attention_maps" else float(np.abs(r).max())
        for got, want in ((batch[name], r), (one[name], r[:1])):
            assert got.shape == want.shape, f"{name}: {got.shape} != {want.shape}"
            diff = float(np.abs(got - want).max())
            assert diff <= tol * scale, f"{name}: max |onnx - jax| {diff:.3e} > {tol * scale:.3e}"


def test_small_model_matches_jax():
    config = get_config("tiny")
    trained = inference.Trained(config, state_lib.create_model(config), {}, "tiny")
    size = trained.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    check(*onnx_and_jax(trained, pixels))


def test_parity_b4_matches_jax(parity, parity_state_dict):
    """The official weights (EfficientNet-B4 MAT, 380 px): the parity images and three more."""
    config = get_config()
    trained = inference.Trained(config, mat_from_state_dict(parity_state_dict, config.model), {}, "parity")
    x = np.transpose(parity["in/x"], (0, 2, 3, 1))  # NCHW in [-1, 1]
    faces = np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    pixels = np.concatenate([faces, faces[:, :, ::-1], faces[:1, ::-1]])[:5]
    assert pixels.shape[0] == 5
    check(*onnx_and_jax(trained, np.ascontiguousarray(pixels)))


def test_foreign_onnx_file_is_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 224, 224])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 224, 224])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path / "other.onnx"
    onnx.save(model, path)
    with pytest.raises(ValueError, match=r"not a mat_jax ONNX export.*input 'x'.*outputs \['y'\].*expected"):
        onnx_backend.OnnxModel(str(path))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="onnxruntime cannot load it"):
        onnx_backend.OnnxModel(str(tmp_path / "junk.onnx"))


@pytest.mark.slow
def test_export_and_predict_without_jax(demo_run, tmp_path):
    """The demo checkpoint exported by the CLI; predict on it in a fresh process imports no JAX
    and scores the demo's fake video as the JAX backend does."""
    workdir, _ = demo_run
    model = tmp_path / "model.onnx"
    res = subprocess.run([sys.executable, "-m", "mat_jax.export", f"--workdir={workdir}", "--format=onnx",
                          f"--out={model}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = onnx.load(model).metadata_props
    props = {p.key: p.value for p in meta}
    assert props["classes"] == "real,fake" and json.loads(props["config"])["model"]["image_size"] > 0
    assert props["step"] != "null" and "jax" in json.loads(props["versions"])

    video = str(workdir / FAKE)
    script = ("import sys; from mat_jax import predict; rc = predict.main(sys.argv[1:]); "
              "print('JAX_LOADED', 'jax' in sys.modules); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", script, f"--model={model}", f"--out={tmp_path / 'onnx'}", video],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "JAX_LOADED False" in res.stdout
    got = json.loads((tmp_path / "onnx" / "predictions.json").read_text())["results"][0]

    from mat_jax import predict

    (want,) = predict.run([video], str(workdir), out_dir=None, log=lambda *_: None)
    assert got["status"] == want.status == "ok"
    assert [f["frame_index"] for f in got["frames"]] == [f["frame_index"] for f in want.frames]
    np.testing.assert_allclose([f["score"] for f in got["frames"]], [f["score"] for f in want.frames], atol=1e-4)
    assert abs(got["score"] - want.score) <= 1e-4 and got["verdict"] == want.verdict
    assert (tmp_path / "onnx" / "000_001_attention.png").is_file()

    # The page's API on the same export: what predict --model wrote, from a server without JAX.
    from tests.test_serve import post

    proc = subprocess.Popen([sys.executable, "-c", "import sys; from mat_jax import serve; sys.exit(serve.main(sys.argv[1:]))",
                             f"--model={model}", "--port=0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"serve: (http://\S+/)", line):
                break
        else:
            pytest.fail("serve --model did not start:\n" + "".join(lines))
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        status, doc = post(m.group(1), "000_001.mp4", Path(video).read_bytes())
        assert status == 200, doc
        served = doc["results"][0]
        assert served["verdict"] == got["verdict"] and doc["step"] == json.loads(props["step"])
        np.testing.assert_allclose([f["score"] for f in served["frames"]], [f["score"] for f in got["frames"]],
                                   rtol=0, atol=1e-6)
        status, doc = post(m.group(1), "notes.txt", b"not a video")
        assert status == 415 and "not a video" in doc["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
