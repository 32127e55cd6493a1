"""Robustness to corruptions: a checkpoint scored on every perturbed copy of an eval split.

The DeeperForensics-1.0 protocol: data_prep writes one records folder per (perturbation, level)
under `config.robustness.root` (`python -m data_prep.build ... --perturb=all`; each perturbed
frame is cropped with its clean twin's landmarks). `run` scores the clean split and every copy
with one compiled eval step and writes, under `<workdir>/eval/robustness/`:

  robustness.csv   type, level, frame_auc, video_auc, video_acc, n_videos (one row per copy)
  robustness.md    the same as a markdown table, with the clean split's row first
  robustness.json  all of it, with the checkpoint evaluated and each copy's records folder
  robustness.png   video AUC per type against level, the clean AUC as a line
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import jax
from absl import logging
from etils import epath

from mat_jax import evaluate, plots
from mat_jax.data import records

COLUMNS = ("type", "level", "frame_auc", "video_auc", "video_acc", "n_videos")


def perturbed_roots(root: str) -> list[tuple[str, int, str]]:
    """(type, level, folder) of each perturbed copy under `root`, sorted by type then level."""
    found = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, name)
        summary = records.load_summary(folder)
        if summary is None:
            continue
        p = summary.get("perturbation")
        if not p:
            raise ValueError(f"{folder}/{records.SUMMARY_FILE} names no perturbation: not a data_prep "
                             "--perturb copy; move it out of the robustness folder")
        found.append((str(p["type"]), int(p["level"]), folder))
    return sorted(found)


def _row(kind: str, level: int, results: dict) -> dict[str, Any]:
    f, v = results["frame"], results["video"]
    return {"type": kind, "level": level, "frame_auc": float(f["auc"]), "video_auc": float(v["auc"]),
            "video_acc": float(v["acc"]), "n_videos": int(v["n"])}


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def table_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r[k]) for k in COLUMNS})
    return buf.getvalue()


def table_markdown(clean: dict, rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in [clean, *rows]:
        lines.append("| " + " | ".join(_fmt(r[k]) for k in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def run(config, workdir: str, *, checkpoint: str | None = None) -> dict[str, Any]:
    """Scores the clean split and every perturbed copy; writes the files above; returns them."""
    split = str(config.robustness.split)
    root = str(config.robustness.root)
    copies = perturbed_roots(root)
    if not copies:
        raise FileNotFoundError(
            f"no perturbed copies under {root}: make them with `python -m data_prep.build ... "
            f"--splits={split} --perturb=all` (config.robustness.prepare), or point config.robustness.root there"
        )
    with evaluate.restored(config, workdir, checkpoint) as (evaluator, state, meta, resolved):

        def score(folder: str) -> dict:
            return evaluator.metrics(evaluator.scores(state, split, root=folder))

        clean = _row("clean", 0, score(str(config.data.root)))
        rows = []
        for kind, level, folder in copies:
            rows.append(_row(kind, level, score(folder)))
            logging.info("robustness %s-%d: video AUC %.4f", kind, level, rows[-1]["video_auc"])
    result = {"checkpoint": str(resolved), "step": meta.get("step"), "split": split, "clean": clean,
              "rows": rows, "roots": {f"{k}-{lv}": f for k, lv, f in copies}}
    if jax.process_index() == 0:
        out = epath.Path(workdir) / "eval" / "robustness"
        out.mkdir(parents=True, exist_ok=True)
        (out / "robustness.csv").write_text(table_csv(rows))
        (out / "robustness.md").write_text(table_markdown(clean, rows))
        (out / "robustness.json").write_text(json.dumps(result, indent=2) + "\n")
        curves = {}
        for r in rows:
            curves.setdefault(r["type"], []).append((r["level"], r["video_auc"]))
        plots.robustness_plot(out / "robustness.png", curves, clean["video_auc"],
                              title=f"video AUC under perturbation, {split} (step {meta.get('step')})")
    return result
