"""Export a trained model for analysis (plain numpy arrays) and for serving (a TF SavedModel).

    python -m mat_jax.export --workdir=DIR --split=test --out=bundle.npz [--root=RECORDS]
                             [--saved-model=DIR] [--max-frames=N]
    python -m mat_jax.export --workdir=DIR --format=onnx --out=model.onnx [--input-dtype=float32]

The bundle is one `.npz` that numpy alone reads (no pickle): per frame `score`
(P(fake)), `label`, `video_id`, `frame_index`, `method`, `logits`, `feature_matrix`
(B, M, N) and `attention_maps` (B, h, w, M); the checkpoint's variables as
`state/<path>` arrays (parameters, BatchNorm statistics, feature centres); and
`meta_json` (checkpoint step, config, metrics). A parameter table (name, shape, count,
mean, std) is written beside it as `<out>.params.tsv`.

`--saved-model=DIR` also writes the eval forward as a TensorFlow SavedModel (jax2tf,
batch size polymorphic): `serve(images)` with images (B, S, S, 3) float32 in [-1, 1]
returns `score` and `logits`, for TF Serving or any TF runtime, without mat_jax.

`--format=onnx` writes the eval forward as an ONNX model (`mat_jax.interop.to_onnx`, batch
dimension dynamic): input `pixels` (B, S, S, 3) uint8 (or float32 in [0, 255]) face crops at
the config's size, normalised inside the graph as the eval pipeline does; outputs `score`
(P(fake)), `logits` and, for MAT, `attention_maps`. Its metadata (`metadata_props`) holds the
config, checkpoint step and path, input size, class order and the package versions that made
it; `mat_jax.onnx_backend` reads it back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import jax2tf

from mat_jax import inference
from mat_jax import metrics as metrics_lib
from mat_jax.config_file import load_config
from mat_jax.data import eval_data
from mat_jax.data.tf_env import tf


def flat_state(model) -> dict[str, np.ndarray]:
    """Every variable of the model as {"state/a/b/c": array}."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        out["state/" + "/".join(str(p) for p in path)] = np.asarray(var.get_value())
    return out


def parameter_table(model) -> str:
    """TSV: one row per trainable parameter with its shape, size and statistics."""
    rows = ["name\tshape\tcount\tmean\tstd"]
    total = 0
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        v = np.asarray(var.get_value(), np.float64)
        total += v.size
        rows.append(f"{'/'.join(str(p) for p in path)}\t{'x'.join(map(str, v.shape))}\t{v.size}\t"
                    f"{v.mean():.6g}\t{v.std():.6g}")
    rows.append(f"total\t\t{total}\t\t")
    return "\n".join(rows) + "\n"


def collect(trained: inference.Trained, split: str, *, root: str | None = None, max_frames: int = 0,
            batch_size: int = 8) -> dict[str, np.ndarray]:
    """Scores, features and attention maps of every record of `split` (padding removed)."""
    scorer = inference.Scorer(trained, batch_size=batch_size)
    keys = ("label", "video_id", "frame_index", "method")
    parts: dict[str, list] = {}
    seen = 0
    for batch in eval_data.create_eval_iterator(trained.config, split, batch_size=batch_size, root=root,
                                                process_index=0, process_count=1):
        keep = np.asarray(batch["mask"]) > 0
        out = scorer(np.asarray(batch["image"])[keep])
        for k in keys:
            out[k] = np.asarray(batch[k])[keep]
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
        seen += int(keep.sum())
        if max_frames and seen >= max_frames:
            break
    if not parts:
        raise ValueError(f"split {split!r} under {root or trained.config.data.root} holds no records")
    data = {k: np.concatenate(v) for k, v in parts.items()}
    if max_frames:
        data = {k: v[:max_frames] for k, v in data.items()}
    for k in ("video_id", "method"):
        data[k] = data[k].astype(str)  # unicode arrays: np.load needs no pickle
    return data


def export_bundle(checkpoint: str, out: str, *, split: str = "test", root: str | None = None, config=None,
                  max_frames: int = 0) -> dict:
    """Writes the analysis bundle `out` (.npz) and `<out>.params.tsv`; returns a summary."""
    trained = inference.load_trained(checkpoint, config)
    data = collect(trained, split, root=root, max_frames=max_frames)
    results = metrics_lib.compute_metrics(data["score"], data["label"], data["video_id"],
                                          data["method"] if np.any(data["method"] != "") else None)
    meta = {"checkpoint": trained.path, "step": trained.meta.get("step"), "split": split,
            "root": root or str(trained.config.data.root), "config": json.loads(trained.config.to_json_best_effort()),
            "metrics": results}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez_compressed(out, **data, **flat_state(trained.model),
                        meta_json=np.asarray(json.dumps(meta, default=_json_default)))
    with open(out + ".params.tsv", "w") as f:
        f.write(parameter_table(trained.model))
    return {"frames": int(data["score"].shape[0]), "videos": int(np.unique(data["video_id"]).size),
            "metrics": results, "path": out}


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


def export_saved_model(checkpoint: str, out_dir: str, *, config=None) -> str:
    """The eval forward as a TF SavedModel with a batch-polymorphic `serve` signature."""
    trained = inference.load_trained(checkpoint, config)
    graphdef, state = nnx.split(trained.model)
    size = trained.image_size

    def serve_fn(images):
        out = nnx.merge(graphdef, state)(images, train=False)
        logits = out["logits"].astype(np.float32)
        return {"score": jax.nn.softmax(logits, axis=-1)[:, 1], "logits": logits}

    converted = jax2tf.convert(serve_fn, polymorphic_shapes=[f"(b, {size}, {size}, 3)"], with_gradient=False)
    module = tf.Module()
    module.serve = tf.function(converted, autograph=False,
                               input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
    tf.saved_model.save(module, out_dir, signatures={"serving_default": module.serve})
    return out_dir


ONNX_FORMAT = "mat_jax-onnx-1"  # metadata "format": what onnx_backend knows how to read


def onnx_inference_fn(trained: inference.Trained):
    """(fn(state, pixels) -> (score, logits[, attention_maps]), state, output names)."""
    graphdef, state = nnx.split(trained.model)
    mat = trained.is_mat

    def fn(state, pixels):
        # The eval pipeline's normalisation (mat_jax.data.decode.normalize): -1 + x * 2/255.
        x = pixels.astype(jnp.float32) * (2.0 / 255.0) - 1.0
        out = nnx.merge(graphdef, state)(x, train=False)
        logits = out["logits"].astype(jnp.float32)
        score = jax.nn.softmax(logits, axis=-1)[:, 1]
        return (score, logits, out["attention_maps"].astype(jnp.float32)) if mat else (score, logits)

    names = ["score", "logits"] + (["attention_maps"] if mat else [])
    return fn, state, names


def onnx_metadata(trained: inference.Trained, input_dtype: str) -> dict[str, str]:
    from importlib import metadata as md

    versions = {}
    for pkg in ("mat_jax", "jax", "flax", "onnx", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    size = trained.image_size
    return {
        "format": ONNX_FORMAT,
        "config": trained.config.to_json_best_effort(),
        "checkpoint": trained.path,
        "step": json.dumps(trained.meta.get("step")),
        "input_size": str(size),
        "input": f"pixels: (batch, {size}, {size}, 3) {input_dtype} RGB face crops in [0, 255], "
                 "as mat_jax.data.decode.eval_images makes them; normalised inside",
        "classes": "real,fake",
        "outputs": "score: P(fake); logits: (batch, 2) in class order; attention_maps: (batch, h, w, M)",
        "versions": json.dumps(versions),
    }


def export_onnx(checkpoint: str, out: str, *, config=None, input_dtype: str = "uint8") -> dict:
    """Writes the eval forward of a checkpoint as an ONNX model; returns its metadata."""
    from mat_jax.interop import to_onnx  # needs the `onnx` extra

    if input_dtype not in ("uint8", "float32"):
        raise ValueError(f"--input-dtype must be uint8 or float32, not {input_dtype!r}")
    trained = inference.load_trained(checkpoint, config)
    fn, state, names = onnx_inference_fn(trained)
    size = trained.image_size
    meta = onnx_metadata(trained, input_dtype)
    model = to_onnx.convert(fn, state, [jax.ShapeDtypeStruct(("batch", size, size, 3), np.dtype(input_dtype))],
                            input_names=["pixels"], output_names=names, metadata=meta,
                            doc=f"mat_jax eval forward of {trained.path}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(model.SerializeToString())
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mat_jax.export", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="training workdir (its best checkpoint, else its latest)")
    src.add_argument("--checkpoint", help="a checkpoint directory")
    p.add_argument("--config", default="", help="config file[:args]; needed for mat-jax-import checkpoints")
    p.add_argument("--split", default="test")
    p.add_argument("--root", default=None, help="records directory (default: the config's data.root)")
    p.add_argument("--format", choices=("npz", "onnx"), default="npz",
                   help="npz: the analysis bundle; onnx: the eval forward as an ONNX model")
    p.add_argument("--input-dtype", default="uint8", choices=("uint8", "float32"),
                   help="ONNX input type (pixels in [0, 255] either way)")
    p.add_argument("--out", default="", help="file to write: the analysis bundle (.npz) or the .onnx model")
    p.add_argument("--saved-model", default="", help="also write a TF SavedModel here")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    args = p.parse_args(argv)
    if not args.out and not args.saved_model:
        p.error("nothing to do: give --out=FILE.npz and/or --saved-model=DIR")
    config = None
    if args.config:
        config = load_config(args.config)
    checkpoint = args.workdir or args.checkpoint
    try:
        if args.format == "onnx":
            if not args.out:
                p.error("--format=onnx needs --out=FILE.onnx")
            meta = export_onnx(checkpoint, args.out, config=config, input_dtype=args.input_dtype)
            print(f"wrote {args.out} (ONNX, input {meta['input']}; checkpoint {meta['checkpoint']}, "
                  f"step {meta['step']})")
        elif args.out:
            s = export_bundle(checkpoint, args.out, split=args.split, root=args.root, config=config,
                              max_frames=args.max_frames)
            video = s["metrics"].get("video", {})
            print(f"wrote {s['path']} ({s['frames']} frames, {s['videos']} videos; video AUC "
                  f"{video.get('auc', float('nan')):.4f}) and {s['path']}.params.tsv")
        if args.saved_model:
            print(f"wrote SavedModel {export_saved_model(checkpoint, args.saved_model, config=config)}")
    except (ValueError, FileNotFoundError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
