"""`python -m mat_jax.compare RUN_A RUN_B`: are two runs' results different, or just noise?

    python -m mat_jax.compare runs/a runs/b [--split=test] [--draws=1000] [--seed=0] [--json=FILE]

Reads `RUN/eval/<split>/videos.csv` and `frames.csv` of both workdirs (the files an
evaluation writes, `write_results`; --split names the folder under eval/, so a
cross-dataset evaluation is e.g. --split=celebdf_test), pairs the videos by video_id and
the frames by (video_id, frame_index), and prints: video and frame AUC of each run with
DeLong's p-value for their difference, and paired-bootstrap 95% intervals of the
difference of video ACC and EER (`mat_jax.uncertainty`). Frames of one video are not
independent, so the frame-level p-value is optimistic; the video level is the one to trust.

Refuses (exit 2, the file and the fix named) when a file is missing or malformed, the two
runs scored different videos or frames, a sample's label differs between them, or the
split holds one class only. Exit 0 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys

import numpy as np
from etils import epath

from mat_jax import uncertainty

COLUMNS = {"videos.csv": ("video_id", "label", "score"),
           "frames.csv": ("video_id", "frame_index", "label", "score")}
WHAT = {"videos.csv": "video", "frames.csv": "frame"}


class CompareError(ValueError):
    """Bad input: the message names the file and the fix."""


def read_table(path, name: str) -> dict[str, np.ndarray]:
    """{"key" (video_id, or "video_id/frame_index", "/person<track_id>" added past track 0), "label", "score"} of one CSV, in file order."""
    path = epath.Path(path)
    if not path.exists():
        raise CompareError(
            f"{path} does not exist: evaluate the run on this split first "
            f"(python -m mat_jax.main --config=CONFIG --workdir=RUN --mode=eval --eval_split=SPLIT "
            f"writes eval/<split>/{name}), "
            f"or name the folder under eval/ with --split"
        )
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    fields = set(rows[0]) if rows else set()
    missing = [c for c in COLUMNS[name] if c not in fields]
    if missing:
        raise CompareError(f"{path} has no {', '.join(missing)} column (or no rows): "
                           f"expected the {name} that mat_jax.evaluate writes")
    keys, labels, scores = [], [], []
    for line, r in enumerate(rows, start=2):
        try:
            # A frame may hold several people: their faces are told apart by track (files written
            # before tracking have no track_id column: one face per frame).
            track = int(r.get("track_id") or 0)
            key = (r["video_id"] if name == "videos.csv" else
                   f"{r['video_id']}/{int(r['frame_index'])}{f'/person{track}' if track else ''}")
            label, score = int(r["label"]), float(r["score"])
        except (TypeError, ValueError) as e:
            raise CompareError(f"{path}:{line}: unreadable row {dict(r)} ({e}): "
                               f"re-run the evaluation") from None
        if label not in (0, 1) or not math.isfinite(score):
            raise CompareError(f"{path}:{line}: label {label} / score {score} "
                               f"(labels are 0 or 1, scores finite): re-run the evaluation")
        keys.append(key)
        labels.append(label)
        scores.append(score)
    keys_arr = np.asarray(keys, dtype=str)
    uniq, counts = np.unique(keys_arr, return_counts=True)
    if np.any(counts > 1):
        raise CompareError(f"{path} lists {list(uniq[counts > 1][:5])} more than once: re-run the evaluation")
    return {"key": keys_arr, "label": np.asarray(labels, np.int64), "score": np.asarray(scores, np.float64)}


def _examples(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")


def pair(a: dict, b: dict, path_a, path_b, what: str) -> tuple[np.ndarray, ...]:
    """(keys, labels, scores_a, scores_b) in key order; CompareError unless both hold the same samples."""
    only_a = set(a["key"].tolist()) - set(b["key"].tolist())
    only_b = set(b["key"].tolist()) - set(a["key"].tolist())
    if only_a or only_b:
        raise CompareError(
            f"the runs scored different {what}s: {len(only_a)} only in {path_a} ({_examples(only_a)}), "
            f"{len(only_b)} only in {path_b} ({_examples(only_b)}); evaluate both runs on the same "
            f"records (the same --config.data.root and split) before comparing them"
        )
    ia, ib = np.argsort(a["key"], kind="stable"), np.argsort(b["key"], kind="stable")
    keys, la, lb = a["key"][ia], a["label"][ia], b["label"][ib]
    if np.any(la != lb):
        bad = keys[la != lb].tolist()
        raise CompareError(
            f"{len(bad)} {what}(s) have different labels in {path_a} and {path_b} ({_examples(bad)}): "
            f"the runs read different records; evaluate both on the same records"
        )
    return keys, la, a["score"][ia], b["score"][ib]


def _files(run, split: str, name: str):
    return epath.Path(run) / "eval" / split / name


def compare(run_a, run_b, split: str = "test", draws: int = uncertainty.DRAWS, seed: int = 0) -> dict:
    """The comparison of two workdirs' evaluations of `split`; raises CompareError on bad input.

    Returns {"run_a", "run_b", "split", "n_videos", "n_real", "n_fake", "n_frames",
    "video_auc" and "frame_auc" (`uncertainty.delong_test` dicts), "video_bootstrap"
    (`uncertainty.paired_bootstrap` of acc and eer)}.
    """
    tables = {}
    for name in ("videos.csv", "frames.csv"):
        pa, pb = _files(run_a, split, name), _files(run_b, split, name)
        tables[name] = pair(read_table(pa, name), read_table(pb, name), pa, pb, WHAT[name])
    _, labels, va, vb = tables["videos.csv"]
    n_fake = int(labels.sum())
    if n_fake in (0, labels.size):
        only = "fake" if n_fake else "real"
        raise CompareError(
            f"{_files(run_a, split, 'videos.csv')} holds only {only} videos ({labels.size}): AUC, EER and "
            f"DeLong's test need reals and fakes; compare on a split with both (--split)"
        )
    _, frame_labels, fa, fb = tables["frames.csv"]
    return {
        "run_a": str(run_a), "run_b": str(run_b), "split": split,
        "n_videos": int(labels.size), "n_real": int(labels.size) - n_fake, "n_fake": n_fake,
        "n_frames": int(frame_labels.size),
        "video_auc": uncertainty.delong_test(va, vb, labels),
        "frame_auc": uncertainty.delong_test(fa, fb, frame_labels),
        "video_bootstrap": uncertainty.paired_bootstrap(va, vb, labels, ("acc", "eer"),
                                                        draws=draws, seed=seed),
    }


def format_table(r: dict) -> str:
    """The human-readable table of a `compare` result."""
    boot = r["video_bootstrap"]
    lines = [
        f"A: {r['run_a']}",
        f"B: {r['run_b']}",
        (f"split {r['split']}: {r['n_videos']} videos ({r['n_real']} real, {r['n_fake']} fake), "
         f"{r['n_frames']} frames"),
        "",
        f"{'':<11}{'A':>9}{'B':>9}{'A - B':>10}  test",
    ]
    for level in ("video", "frame"):
        d = r[f"{level}_auc"]
        note = " (frames not independent: optimistic)" if level == "frame" else ""
        lines.append(f"{level + ' AUC':<11}{d['auc_a']:>9.4f}{d['auc_b']:>9.4f}{d['diff']:>+10.4f}  "
                     f"DeLong se {d['se']:.4f}, z {d['z']:+.2f}, p = {d['p']:.4g}{note}")
    for m in ("acc", "eer"):
        d = boot[m]
        lines.append(f"{'video ' + m.upper():<11}{d['a']:>9.4f}{d['b']:>9.4f}{d['diff']:>+10.4f}  "
                     f"{boot['level']:.0%} CI [{d['low']:+.4f}, {d['high']:+.4f}]")
    lines.append(f"(paired bootstrap over videos: {boot['draws']} draws, seed {boot['seed']}, "
                 f"{boot['skipped']} one-class draws skipped; percentile intervals)")
    return "\n".join(lines)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN or inf, as in metrics.json
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mat_jax.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("run_a", help="workdir of run A")
    p.add_argument("run_b", help="workdir of run B")
    p.add_argument("--split", default="test", help="folder under eval/ (default: test)")
    p.add_argument("--draws", type=int, default=uncertainty.DRAWS, help="bootstrap draws (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument("--json", default=None, help="also write the result as JSON to this file")
    args = p.parse_args(argv)
    if args.draws < 1:
        p.error(f"--draws must be >= 1, got {args.draws}")
    try:
        result = compare(args.run_a, args.run_b, args.split, args.draws, args.seed)
    except CompareError as e:
        print(f"mat_jax.compare: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        out = epath.Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_jsonable(result), indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
