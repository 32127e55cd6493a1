"""Score videos and images with a trained MAT: the same pixels evaluation scores.

    python -m mat_jax.predict --workdir=DIR [--out=DIR] INPUT...
    python -m mat_jax.predict --checkpoint=CKPT --config=configs/ffpp.py INPUT...
    python -m mat_jax.predict --model=model.onnx INPUT...

INPUT: video files, image files or folders of them. For each input: P(fake) of each face
in each sampled frame, each person's score (the mean over their face track, the field's
video-level protocol) and the video's (its most suspicious person's), and verdicts at
`--threshold`; a table on the console and `predictions.json` in `--out`, an
attention overlay PNG (the M maps over the face of the most suspicious frames, as the
paper's figures) and, for videos, an annotated mp4 with a box and score per sampled
frame. An input that cannot be read or has no face gets a message and the others are
still scored. Needs the `prep` extra (face detection).

One preprocessing path: the settings of the records the model was trained on (their
`summary.json`, found through the model's `config.data.root` or `--records`) give the
frame sampling of their eval split, the face detector, and the crop recipe and image
encoding; frames go through the crop path data_prep builds with (`mat_jax.faces.crops`: detect,
align, encode as the records do) and the evaluation pipeline's own decode, resize and
normalisation (`mat_jax.data.decode.eval_images`). So a video of a prepared test split
scores here what evaluation's videos.csv says.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

import numpy as np

from mat_jax import plots
from mat_jax.config_file import load_config
from mat_jax.data import decode, records

try:  # face detection is the `prep` extra (OpenCV, dlib)
    import cv2

    from mat_jax.faces import crops, detect
    from mat_jax.faces import frames as frames_lib
    from mat_jax.faces import settings as settings_lib
except ImportError as e:
    raise ImportError(f"predict finds faces with OpenCV and dlib ({e}): pip install 'mat_jax[prep]'") from e

VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclasses.dataclass
class Face:
    """One person's face in one frame, as the model sees it."""

    track_id: int
    box: tuple[float, float, float, float] | None
    crop: np.ndarray  # uint8 (S, S, 3)
    score: float | None = None


@dataclasses.dataclass
class Frame:
    index: int
    image: np.ndarray  # RGB uint8, whole frame
    faces: list[Face] = dataclasses.field(default_factory=list)  # by track id


@dataclasses.dataclass
class Result:
    """One input's outcome. `frames`: a row per face (frame_index, track_id, score, box), and a
    row with no track for a sampled frame without a face; `people`: a row per tracked person
    (their mean P(fake) and verdict); `score`: the largest person's score (one forged face
    makes the video fake, as evaluation's default `track_reduce`)."""

    path: str
    kind: str  # "video", "image" or "unknown"
    status: str = "ok"  # "ok" or the reason nothing was scored
    frames: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    people: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    score: float | None = None
    verdict: str | None = None
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files as given; folders expanded (sorted, non-recursive) to their image and video files."""
    out = []
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(os.listdir(item))
            found = [os.path.join(item, n) for n in names if n.lower().endswith(VIDEO_EXT + IMAGE_EXT)]
            if not found:
                out.append(item)  # reported as "no images or videos in this folder"
            out.extend(found)
        else:
            out.append(item)
    return out


def prep_settings(config, *, records_dir: str = "", recipe: str = "", num_frames: int = 0,
                  detector: str = "", log=print):
    """The data_prep settings that made the model's records (their summary.json), so that a new
    video is sampled, detected, cropped and encoded as those records were.

    `records_dir` defaults to `config.data.root`. Without a readable summary (a model imported
    with mat-jax-import, records elsewhere) the crop is a guess: the "mat" recipe at 380 px,
    else "bench" at the model's size, JPEG q95, 20 evenly spaced frames. `recipe`,
    `num_frames` (evenly spaced) and `detector` override the records' choices.
    """
    size = int(config.model.image_size)
    root = records_dir or str(config.data.root)
    summary = settings_lib.read_summary(root)
    settings = settings_lib.from_summary(summary)
    if settings is None:
        where = f"{root}/{records.SUMMARY_FILE}" if root else "config.data.root (empty)"
        log(f"predict: no records summary at {where}: guessing the crop; pass --records=DIR (the "
            "data_prep output the model was trained on) to score exactly as evaluation does")
        settings = settings_lib.guess(size, str(config.data.dataset or "ffpp"))
    if recipe:
        settings = dataclasses.replace(settings, recipe=recipe, size=size, scale=0.0)
    if num_frames:
        settings = dataclasses.replace(settings, eval_sampling=frames_lib.Sampling(num_frames))
    if detector:
        settings = dataclasses.replace(settings, detector=detector)
    r = settings.crop_recipe()
    encoding = f"JPEG q{settings.jpeg_quality}" if settings.image_format == "jpeg" else "PNG"
    sampling = settings.eval_sampling
    spacing = f"stride {sampling.stride}" if sampling.stride else "evenly spaced"
    log(f"predict: faces by {settings.detector}, '{r.name}' crop at {r.size} px, {encoding}; "
        f"{sampling.num} frames {spacing} per video"
        f"{f' (the settings of {root})' if summary is not None else ''}")
    return settings


def _read_frames(path: str, kind: str, settings) -> list[Frame]:
    if kind == "image":
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("cannot decode this image (corrupt or not an image)")
        return [Frame(0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))]
    try:
        # The records' val/test sampling: the frames evaluation scored.
        indices, frames = frames_lib.read_sampled(path, settings.eval_sampling)
    except frames_lib.VideoError as e:
        raise ValueError(str(e)) from e
    return [Frame(i, frames[i]) for i in indices]


def _find_faces(frames: list[Frame], finder, settings, image_size: int) -> tuple[list[Face], np.ndarray]:
    """Fills each frame's faces (the records' tracks); returns them in (frame, track) order with
    their model inputs."""
    found = crops.face_crops([f.index for f in frames], {f.index: f.image for f in frames}, settings, finder)
    pixels, inputs = decode.eval_images([c.image for c in found], image_size)
    by_index = {f.index: f for f in frames}
    faces = []
    for c, px in zip(found, pixels):
        face = Face(c.track_id, c.box, px)
        by_index[c.index].faces.append(face)
        faces.append(face)
    return faces, inputs


def _annotate(frame: Frame, threshold: float, several: bool) -> np.ndarray:
    img = frame.image.copy()
    if not frame.faces:
        cv2.putText(img, "no face", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 0), 2)
        return img
    for face in frame.faces:
        if face.box is None:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        colour = (255, 40, 40) if face.score >= threshold else (40, 220, 40)
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, 2)
        label = f"{f'#{face.track_id} ' if several else ''}P(fake) {face.score:.2f}"
        cv2.putText(img, label, (x0, max(20, y0 - 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.7, colour, 2)
    return img


def _people(faces: list[Face], threshold: float) -> list[dict[str, Any]]:
    tracks: dict[int, list[Face]] = {}
    for face in faces:
        tracks.setdefault(face.track_id, []).append(face)
    out = []
    for t, fs in sorted(tracks.items()):
        score = float(np.mean([f.score for f in fs]))
        out.append({"track_id": t, "score": score, "verdict": "fake" if score >= threshold else "real",
                    "frames": len(fs)})
    return out


def predict_one(path: str, scorer, finder, settings, *, image_size: int, threshold: float,
                out_dir: str | None, max_overlays: int = 4) -> Result:
    """Scores one input; every failure becomes `Result.status`, never an exception.

    `settings`: the `mat_jax.faces.settings.Settings` of the model's records (`prep_settings`).
    """
    lower = path.lower()
    kind = "video" if lower.endswith(VIDEO_EXT) else "image" if lower.endswith(IMAGE_EXT) else "unknown"
    result = Result(path=path, kind=kind)
    if os.path.isdir(path):
        result.status = "no images or videos in this folder"
        return result
    if not os.path.exists(path):
        result.status = "no such file"
        return result
    if kind == "unknown":
        result.status = f"not a video ({', '.join(VIDEO_EXT)}) or image ({', '.join(IMAGE_EXT)}) file"
        return result
    try:
        frames = _read_frames(path, kind, settings)
    except ValueError as e:
        result.status = f"unreadable: {e}"
        return result
    faces, inputs = _find_faces(frames, finder, settings, image_size)
    if not faces:
        result.status = f"no face found in {len(frames)} sampled frame(s)"
        return result
    out = scorer(inputs, pixels=np.stack([f.crop for f in faces]))
    for face, score in zip(faces, out["score"]):
        face.score = float(score)
    result.frames = [
        {"frame_index": f.index, "track_id": face.track_id, "score": face.score,
         "box": [round(v, 1) for v in face.box] if face.box else None}
        for f in frames for face in f.faces
    ] + [{"frame_index": f.index, "track_id": None, "score": None, "box": None} for f in frames if not f.faces]
    result.frames.sort(key=lambda r: (r["frame_index"], -1 if r["track_id"] is None else r["track_id"]))
    result.people = _people(faces, threshold)
    result.score = max(p["score"] for p in result.people)
    result.verdict = "fake" if result.score >= threshold else "real"
    if out_dir:
        stem = os.path.splitext(os.path.basename(path))[0]
        os.makedirs(out_dir, exist_ok=True)
        frame_of = {id(face): f.index for f in frames for face in f.faces}
        if "attention_maps" in out:
            order = np.argsort(-out["score"])[:max_overlays]
            png = os.path.join(out_dir, f"{stem}_attention.png")
            several = len(result.people) > 1
            plots.attention_sheet(png, [faces[i].crop for i in order], [out["attention_maps"][i] for i in order],
                                  [f"{f'person {faces[i].track_id}, ' if several else ''}frame "
                                   f"{frame_of[id(faces[i])]}: P(fake) {out['score'][i]:.3f}" for i in order])
            result.outputs["attention"] = png
        if kind == "video":
            mp4 = os.path.join(out_dir, f"{stem}_annotated.mp4")
            several = len(result.people) > 1
            frames_lib.write_video(mp4, [_annotate(f, threshold, several) for f in frames], fps=5)
            result.outputs["annotated_video"] = mp4
    return result


def table(results: list[Result]) -> str:
    width = max([len(os.path.basename(r.path)) for r in results] + [5])
    lines = [f"{'input':<{width}}  {'kind':<7} {'frames':>6} {'score':>7}  verdict"]
    for r in results:
        name = os.path.basename(r.path.rstrip("/")) or r.path
        if r.status != "ok":
            lines.append(f"{name:<{width}}  {r.kind:<7} {'-':>6} {'-':>7}  {r.status}")
        else:
            scored = len({f["frame_index"] for f in r.frames if f["score"] is not None})
            lines.append(f"{name:<{width}}  {r.kind:<7} {scored:>6} {r.score:>7.4f}  {r.verdict}")
            if len(r.people) > 1:  # one line per person; the video's score is the largest
                for person in r.people:
                    who = f"  person {person['track_id']}"
                    lines.append(f"{who:<{width}}  {'':<7} {person['frames']:>6} {person['score']:>7.4f}  "
                                 f"{person['verdict']}")
    return "\n".join(lines)


def run(inputs: list[str], checkpoint: str, *, config=None, out_dir: str | None = None, num_frames: int = 0,
        threshold: float = 0.5, recipe: str = "", detector: str = "", records_dir: str = "",
        batch_size: int = 8, log=print) -> list[Result]:
    """Python entry: scores every input and writes `predictions.json` (and pictures) into `out_dir`.

    `num_frames` 0 samples each video as the records' val/test split was sampled;
    `detector` "" and `recipe` "" are the records' too (see `prep_settings`).
    """
    trained, scorer, finder, settings = load(checkpoint, config, num_frames=num_frames, recipe=recipe,
                                             detector=detector, records_dir=records_dir,
                                             batch_size=batch_size, log=log)
    results = [predict_one(p, scorer, finder, settings, image_size=trained.image_size, threshold=threshold,
                           out_dir=out_dir) for p in expand_inputs(inputs)]
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "predictions.json"), "w") as f:
            json.dump(document(trained, settings, threshold, results), f, indent=1)
    return results


def load(checkpoint: str, config=None, *, num_frames: int = 0, recipe: str = "", detector: str = "",
         records_dir: str = "", batch_size: int = 8, log=print):
    """(trained, scorer, finder, settings): what `predict_one` needs, loaded once (run, serve).

    `checkpoint`: a workdir or checkpoint (the JAX backend), or an exported `.onnx` file."""
    if checkpoint.endswith(".onnx"):
        # onnxruntime, no JAX: the export's metadata holds the config (so the records' settings).
        from mat_jax import onnx_backend

        trained = scorer = onnx_backend.OnnxModel(checkpoint)
    else:
        from mat_jax import inference

        trained = inference.load_trained(checkpoint, config)
        scorer = inference.Scorer(trained, batch_size=batch_size)
    settings = prep_settings(trained.config, records_dir=records_dir, recipe=recipe, num_frames=num_frames,
                             detector=detector, log=log)
    finder = detect.FaceFinder(settings.detector, settings.detect_size, settings.min_face)
    return trained, scorer, finder, settings


def document(trained, settings, threshold: float, results: list[Result]) -> dict[str, Any]:
    """What predictions.json holds."""
    return {"checkpoint": trained.path, "step": trained.meta.get("step"), "threshold": threshold,
            "preprocessing": settings.to_json(), "results": [dataclasses.asdict(r) for r in results]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mat_jax.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="videos, images or folders of them")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="training workdir (its best checkpoint, else its latest)")
    src.add_argument("--checkpoint", help="a checkpoint directory (training step or mat-jax-import output)")
    src.add_argument("--model", help="an ONNX export (mat_jax.export --format=onnx), run by onnxruntime")
    p.add_argument("--config", default="", help="config file[:args]; needed for mat-jax-import checkpoints")
    p.add_argument("--out", default="predictions", help="folder for predictions.json and pictures")
    p.add_argument("--frames", type=int, default=0,
                   help="frames sampled evenly from each video; 0: as the records' val/test split")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--records", default="",
                   help="the data_prep output the model was trained on (its summary.json gives the "
                   "sampling, detector and crop); default: the model config's data.root")
    p.add_argument("--recipe", default="", help="crop recipe override (mat or bench); default: the records'")
    p.add_argument("--detector", default="",
                   help="face detector override (blazeface, dlib, haar, cnn); default: the records'")
    args = p.parse_args(argv)
    config = None
    if args.config:
        config = load_config(args.config)
    try:
        results = run(args.inputs, args.workdir or args.checkpoint or args.model, config=config, out_dir=args.out,
                      num_frames=args.frames, threshold=args.threshold, recipe=args.recipe,
                      detector=args.detector, records_dir=args.records)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 2
    print(table(results))
    print(f"\nwrote {os.path.join(args.out, 'predictions.json')}")
    return 0 if any(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
