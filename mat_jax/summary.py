"""What a finished run prints on the console: its results tables and where its time went."""

from __future__ import annotations


def results_table(results: dict) -> str:
    """Frame- and video-level ACC / AUC / EER of an evaluation, as a small table."""
    lines = [f"{'level':<6} {'ACC':>7} {'AUC':>7} {'EER':>7} {'n':>6}"]
    for level in ("frame", "video"):
        r = results.get(level)
        if r:
            lines.append(f"{level:<6} {r['acc']:>7.4f} {r['auc']:>7.4f} {r['eer']:>7.4f} {int(r['n']):>6}")
    return "\n".join(lines)


def time_split(times: dict[str, float], total: float, data: float | None) -> str:
    """One line: where a run's wall-clock time went (data preparation, compile, train, eval)."""
    parts = [("data", data)] if data is not None else []
    parts += [(k, times.get(k)) for k in ("compile", "train", "eval")]
    text = ", ".join(f"{name} {secs:.0f} s" for name, secs in parts if secs is not None)
    return f"time: {total:.0f} s in all ({text}; the rest is start-up and checkpoints)"


def robustness_table(result: dict) -> str:
    """Video AUC of each perturbation type per level 1..5, the clean split's beside it."""
    levels = sorted({r["level"] for r in result["rows"]})
    by_type: dict[str, dict[int, float]] = {}
    for r in result["rows"]:
        by_type.setdefault(r["type"], {})[r["level"]] = r["video_auc"]
    lines = [f"{'type':<6}" + "".join(f"{lv:>8}" for lv in levels) + f"{'clean':>8}"]
    for kind, aucs in by_type.items():
        cells = "".join(f"{aucs[lv]:>8.4f}" if lv in aucs else f"{'-':>8}" for lv in levels)
        lines.append(f"{kind:<6}{cells}{result['clean']['video_auc']:>8.4f}")
    return "\n".join(lines)

