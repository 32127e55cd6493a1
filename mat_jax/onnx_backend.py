"""Score faces with an exported ONNX model (`mat_jax.export --format=onnx`) in onnxruntime.

The backend of `mat_jax.predict --model=model.onnx` and `mat_jax.serve --model=...`: it
imports neither JAX nor Flax, so a deployment needs only onnxruntime next to the face
detection of the `prep` extra. The model's metadata gives back the config it was trained
with (for the records' preprocessing settings), its checkpoint and step.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np

FORMAT = "mat_jax-onnx-1"  # written by mat_jax.export (ONNX_FORMAT)
_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}


class OnnxModel:
    """An ONNX export loaded in onnxruntime, with what predict needs of a trained model:
    `config`, `meta` (its `step`), `path`, `image_size`, `is_mat`; called as a scorer."""

    def __init__(self, path: str, *, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(f"an ONNX model needs onnxruntime ({e}): pip install 'mat_jax[onnx]'") from e
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such ONNX file (write one with python -m mat_jax.export "
                                    "--workdir=W --format=onnx --out=model.onnx)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 (onnxruntime raises its own Fail/InvalidGraph types)
            raise ValueError(f"{path}: onnxruntime cannot load it ({e})") from None
        self.path = path
        props = self._session.get_modelmeta().custom_metadata_map
        self._check(props)
        self.config = ml_collections.ConfigDict(json.loads(props["config"]))
        self.meta: dict[str, Any] = {"step": json.loads(props.get("step", "null")), "checkpoint": props.get("checkpoint"),
                                     "versions": json.loads(props.get("versions", "{}"))}
        self.image_size = int(props["input_size"])
        (inp,) = self._session.get_inputs()
        self._input = inp.name
        self._dtype = _DTYPES[inp.type]
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.is_mat = "attention_maps" in self._outputs

    def _check(self, props: dict[str, str]) -> None:
        expected = ("expected a mat_jax export: one input 'pixels' (batch, S, S, 3) uint8 or float32 with "
                    "S the metadata's input_size, outputs 'score' (batch,) and 'logits' (batch, 2) "
                    "[and 'attention_maps'], metadata keys format/config/input_size (python -m "
                    "mat_jax.export --format=onnx)")
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        problems = []
        if props.get("format") != FORMAT or "config" not in props or "input_size" not in props:
            problems.append(f"metadata format {props.get('format')!r} with keys {sorted(props)}")
        if len(inputs) != 1:
            problems.append(f"{len(inputs)} inputs {[i.name for i in inputs]}")
        else:
            inp = inputs[0]
            size = props.get("input_size", "?")
            shape = list(inp.shape)
            if (inp.name != "pixels" or inp.type not in _DTYPES or len(shape) != 4
                    or [str(d) for d in shape[1:]] != [size, size, "3"]):
                problems.append(f"input {inp.name!r} {inp.type} {shape}")
        names = [o.name for o in outputs]
        if names[:2] != ["score", "logits"]:
            problems.append(f"outputs {names}")
        if problems:
            raise ValueError(f"{self.path}: not a mat_jax ONNX export ({'; '.join(problems)}); {expected}")

    def __call__(self, images: np.ndarray | None = None, pixels: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Scores uint8 `pixels` (n, S, S, 3) (the graph normalises them); `images` (the
        normalised floats the JAX scorer takes) is ignored."""
        del images
        if pixels is None or len(pixels) == 0:
            raise ValueError("no images to score")
        pixels = np.asarray(pixels)
        if pixels.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"faces of shape {pixels.shape[1:]}; {self.path} takes "
                             f"({self.image_size}, {self.image_size}, 3)")
        got = self._session.run(self._outputs, {self._input: pixels.astype(self._dtype)})
        return dict(zip(self._outputs, got))
