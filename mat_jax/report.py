"""One results table from finished evaluations, in the layout of the paper's tables.

    python -m mat_jax.report RUN [RUN ...] [--out=results.md] [--csv=results.csv]

Each RUN is a workdir; every `RUN/eval/<name>/metrics.json` (with its `manifest.json`) and
`RUN/eval/robustness/robustness.json` is gathered. One row per run; columns per evaluated
dataset and split: video AUC with its 95% bootstrap interval, video ACC and frame AUC, the
per-method video AUCs of an in-domain (per-method) evaluation, and for robustness the mean
video AUC over the five levels of each perturbation type. Two runs in one column must have
scored the same records: when their data fingerprints (`mat_jax.manifest`) differ the report
stops and names both, since a table that mixes test sets compares nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Any

from mat_jax import manifest as manifest_lib
from mat_jax.data import records


class MixedData(ValueError):
    """Two runs of one column evaluated different records."""


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _dataset(root: str) -> str:
    summary = records.load_summary(root) if root else None
    return str(summary.get("dataset", "")) if summary else os.path.basename(os.path.normpath(root))


def gather(workdir: str) -> dict[str, dict[str, Any]]:
    """{column group: {"metrics", "manifest", "path"}} of one run's finished evaluations."""
    found: dict[str, dict[str, Any]] = {}
    eval_dir = os.path.join(workdir, "eval")
    if not os.path.isdir(eval_dir):
        raise FileNotFoundError(f"{workdir} holds no eval/ folder: evaluate it first (python -m mat_jax.main "
                                "--mode=eval ...)")
    for name in sorted(os.listdir(eval_dir)):
        folder = os.path.join(eval_dir, name)
        payload = _read_json(os.path.join(folder, "metrics.json"))
        if payload is None or name == "val":
            continue  # val selects checkpoints; a results table reports held-out data
        manifest = _read_json(os.path.join(folder, manifest_lib.FILE))
        if manifest is None:
            raise FileNotFoundError(f"{folder} has metrics but no {manifest_lib.FILE} (evaluated by an older "
                                    "mat_jax): evaluate it again to record what it scored")
        group = f"{_dataset(str(payload.get('root', '')))} {payload.get('split', name)}"
        found[group] = {"metrics": payload["metrics"], "manifest": manifest, "path": folder}
    robust = _read_json(os.path.join(eval_dir, "robustness", "robustness.json"))
    if robust is not None:
        found["robustness"] = {"robustness": robust, "path": os.path.join(eval_dir, "robustness")}
    return found


def _auc_cell(level: dict) -> str:
    auc = level.get("auc")
    text = "-" if auc is None else f"{auc:.4f}"
    ci = (level.get("ci95") or {}).get("auc")
    return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else text


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def table(runs: dict[str, dict[str, dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) over all runs; raises MixedData when one column's runs scored different data."""
    groups = sorted({g for found in runs.values() for g in found if g != "robustness"})
    for g in groups:
        prints = {run: found[g]["manifest"]["data"]["sha256"] for run, found in runs.items() if g in found}
        if len(set(prints.values())) > 1:
            detail = "; ".join(f"{run}: {fp[:12]}" for run, fp in prints.items())
            raise MixedData(f"column {g!r} mixes runs that scored different records ({detail}): evaluate "
                            "them on the same records folder")
    methods = {g: sorted({m for found in runs.values() if g in found
                          for m in found[g]["metrics"].get("per_method", {})}) for g in groups}
    kinds = sorted({r["type"] for found in runs.values() if "robustness" in found
                    for r in found["robustness"]["robustness"]["rows"]})
    header = ["run"]
    for g in groups:
        header += [f"{g} video AUC [95% CI]", f"{g} video ACC", f"{g} frame AUC"]
        header += [f"{g} {m} video AUC" for m in methods[g]]
    if kinds:
        header += ["robustness clean video AUC"] + [f"robustness {k} mean video AUC" for k in kinds]
    rows = []
    for run, found in runs.items():
        row = [run]
        for g in groups:
            m = found.get(g, {}).get("metrics", {})
            video, frame = m.get("video", {}), m.get("frame", {})
            row += [_auc_cell(video) if video else "-", _num(video.get("acc")), _num(frame.get("auc"))]
            row += [_num(m.get("per_method", {}).get(name, {}).get("video", {}).get("auc")) for name in methods[g]]
        if kinds:
            robust = found.get("robustness", {}).get("robustness")
            row.append(_num(robust["clean"]["video_auc"]) if robust else "-")
            for k in kinds:
                aucs = [r["video_auc"] for r in (robust or {}).get("rows", []) if r["type"] == k]
                row.append(_num(sum(aucs) / len(aucs)) if aucs else "-")
        rows.append(row)
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mat_jax.report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="workdirs with finished evaluations")
    p.add_argument("--out", default="", help="also write the markdown table here")
    p.add_argument("--csv", default="", help="also write the table as CSV here")
    args = p.parse_args(argv)
    try:
        runs = {}
        for w in args.runs:
            name = os.path.basename(os.path.normpath(w))
            if name in runs:
                name = os.path.normpath(w)
            runs[name] = gather(w)
        header, rows = table(runs)
    except (FileNotFoundError, MixedData, KeyError) as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    text = markdown(header, rows)
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.csv:
        with open(args.csv, "w") as f:
            f.write(csv_text(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
