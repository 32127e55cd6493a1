"""A finished build's account: the summary (summary.json), the tfds description, report.tsv
(every video that is not "ok", with its reason) and the summary lines printed at the end."""

from __future__ import annotations

import json
import os
import shutil
import time

from data_prep import __version__
from data_prep.results import STATUSES, VideoResult
from data_prep.shards import WorkDir, atomic_write, merge
from mat_jax.data import records

REPORT_FILE = "report.tsv"


def summary(
    dataset: str,
    ident: dict,
    results: list[VideoResult],
    shard_info: dict,
    new_results: list[VideoResult],
) -> dict:
    """The summary of a build: `results` of every video, `new_results` of this run's; the
    timings of "last_run" are left to the caller."""
    counts, videos = {}, {}
    for split in ident["splits"]:
        rs = [r for r in results if r.split == split]
        if not rs:
            continue
        methods: dict[str, int] = {}
        for r in rs:
            if r.written:
                methods[r.method] = methods.get(r.method, 0) + r.written
        real = sum(r.faces()[0] for r in rs)
        fake = sum(r.faces()[1] for r in rs)
        counts[split] = {
            "total": real + fake,
            "real": real,
            "fake": fake,
            "methods": dict(sorted(methods.items())),
        }
        videos[split] = {s: sum(r.status == s for r in rs) for s in STATUSES}
        videos[split]["real"] = sum(r.written > 0 and r.label == records.LABEL_REAL for r in rs)
        videos[split]["fake"] = sum(r.written > 0 and r.label == records.LABEL_FAKE for r in rs)
        # Faces cut with another video's landmarks (train-split FF++ fakes only): 0 on val/test.
        counts[split]["reused_landmarks"] = sum(r.reused_landmarks for r in rs)
    written = sum(r.written for r in new_results)
    return {
        "dataset": dataset,
        "version": __version__,
        "settings": ident,
        "counts": counts,
        "videos": videos,
        "shards": {s: i["files"] for s, i in shard_info.items()},
        "report": REPORT_FILE,
        # Timings are filled in by `build.prepare` once the metadata is written.
        "last_run": {
            "videos": len(new_results),
            "faces": written,
            "decoded_frames": sum(r.decoded_frames for r in new_results),
        },
    }


def description(summary: dict) -> str:
    """The tfds dataset description of a build with this summary."""
    s = summary["settings"]
    return (
        f"{summary['dataset']} face crops by mat_jax data_prep {summary['version']}: one aligned face per "
        f"sampled frame ({s['crop']['recipe']} recipe, {s['crop']['size']} px, "
        f"margin {s['crop']['margin_scale']}), "
        f"detector {s['detector']}, {s['landmarks']}; {reuse_text(s)}; "
        f"train sampling {s['train_sampling']}, "
        f"eval sampling {s['eval_sampling']}. Counts: {json.dumps(summary['counts'])}"
    )


def reuse_text(s: dict) -> str:
    """Which faces were cut with reused landmarks, in words, from the summary's settings."""
    splits = s.get("landmark_reuse_splits") or []
    if not splits:
        return "landmarks detected on every video"
    return (
        f"{'/'.join(splits)} fakes of frame-aligned methods reuse their source real video's "
        "landmarks; every other video has its own"
    )


def _cell(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")


def write_report(path: str, results: list[VideoResult], notes=()) -> None:
    """report.tsv: the skipped videos first, then the partial ones, each with its reason; then
    the `listing` rows, what the dataset reader fixed or dropped (`sources.Note`)."""
    lines = ["status\tsplit\tlabel\tvideo_id\tpath\treason"]
    for r in sorted(results, key=lambda r: (r.status != "skipped", r.key)):
        if r.status != "ok":
            lines.append(
                "\t".join(
                    [
                        r.status,
                        r.split,
                        "fake" if r.label else "real",
                        r.video_id,
                        r.path,
                        _cell(r.reason),
                    ]
                )
            )
    for n in notes:
        lines.append("\t".join(["listing", n.split, "", n.video_id, n.path, _cell(n.reason)]))
    atomic_write(path, ("\n".join(lines) + "\n").encode())


def print_summary(summary: dict, out: str, log) -> None:
    log(f"prepared {summary['dataset']} into {out} ({reuse_text(summary['settings'])})")
    for split, c in summary["counts"].items():
        v = summary["videos"][split]
        log(
            f"  {split:5s}: {c['total']} faces ({c['real']} real, {c['fake']} fake) from {v['real']} real + "
            f"{v['fake']} fake videos; {v['skipped']} skipped, {v['partial']} partial; "
            f"per method {c['methods']}; {c.get('reused_landmarks', 0)} faces with reused landmarks"
        )
    if summary.get("listing_notes"):
        log(f"  the dataset listing needed {summary['listing_notes']} fixes: `listing` rows of "
            f"{os.path.join(out, REPORT_FILE)}")
    skipped = sum(v["skipped"] for v in summary["videos"].values())
    partial = sum(v["partial"] for v in summary["videos"].values())
    if skipped or partial:
        log(f"  {skipped} videos skipped, {partial} partial: reasons in {os.path.join(out, REPORT_FILE)}")
    r = summary["last_run"]
    log(
        f"  this run: {r['videos']} videos, {r['faces']} faces in {r['seconds']} s "
        f"({r['faces_per_second']} faces/s; {r['decoded_frames']} frames decoded; "
        f"videos {r['process_seconds']} s, merge and metadata {r['merge_seconds']} s)"
    )


def finish(out: str, dataset: str, work: WorkDir, results: list[VideoResult], ident: dict,
           new_results: list[VideoResult], num_shards: int, *, process_seconds: float, keep_work: bool,
           extra: dict | None = None, note: str = "", shard_info: dict | None = None,
           listing_notes=()) -> dict:
    """The end of every build (clean or a perturbed copy): merges the part files into shards
    (unless `shard_info` says which shards a Beam pipeline wrote, `data_prep.beam_run`), writes the
    tfds description (its text + `note`), report.tsv and summary.json (`extra` keys first), drops
    the work folder unless `keep_work`; returns the summary. `listing_notes` (`sources.Note`)
    become report.tsv's `listing` rows and summary.json's "listing_notes" count."""
    t0 = time.time()
    if shard_info is None:
        shard_info = merge(work, dataset, results, num_shards)
    out_summary = {**(extra or {}), **summary(dataset, ident, results, shard_info, new_results)}
    out_summary["listing_notes"] = len(listing_notes)
    records.write_tfds_metadata(
        out,
        dataset,
        __version__,
        {s: i["lengths"] for s, i in shard_info.items()},
        {s: i["bytes"] for s, i in shard_info.items()},
        description(out_summary) + note,
    )
    write_report(os.path.join(out, REPORT_FILE), results, listing_notes)
    merge_seconds = time.time() - t0
    run = out_summary["last_run"]
    run.update(seconds=round(process_seconds + merge_seconds, 2), process_seconds=round(process_seconds, 2),
               merge_seconds=round(merge_seconds, 2))
    run["faces_per_second"] = round(run["faces"] / max(process_seconds + merge_seconds, 1e-9), 2)
    atomic_write(os.path.join(out, records.SUMMARY_FILE), json.dumps(out_summary, indent=1).encode())
    if not keep_work:
        shutil.rmtree(work.root)
    return out_summary

