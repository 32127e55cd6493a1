"""The offline demo's data: build the demo tree and prepare it, once, before training.

`configs/demo.py` carries a `config.demo` section; `mat_jax.main` calls `ensure_data`,
which runs data_prep's own command lines (`python -m data_prep.demo`, then
`python -m data_prep.build --dataset=demo`) into `<workdir>/demo_data/` unless records
are already there, and points `config.data.root` at them. Running data_prep as commands
keeps `mat_jax` free of data_prep imports (design.md) and shows the user the exact
commands of the real-data path. data_prep's own resumability makes a killed demo
restartable with the same command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from absl import logging

from mat_jax.data import records


def _run(argv: list[str]) -> None:
    print("+ " + " ".join(argv), flush=True)
    # data_prep runs no TensorFlow maths (only its file and metadata helpers), so oneDNN's
    # start-up notice, two lines per TensorFlow import, is only noise on the demo's console.
    result = subprocess.run(argv, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"})
    if result.returncode != 0:
        raise RuntimeError(f"demo data step failed (exit code {result.returncode}): {' '.join(argv)}")


def ensure_data(config, workdir: str) -> str:
    """Makes sure the demo records exist; sets and returns `config.data.root`."""
    if str(config.data.root):
        return str(config.data.root)
    demo = config.demo
    base = os.path.join(workdir, "demo_data")
    raw, prepared = os.path.join(base, "raw"), os.path.join(base, "records")
    if records.load_summary(prepared) is None:
        t0 = time.perf_counter()
        if not os.path.isfile(os.path.join(raw, "demo.json")):
            _run([sys.executable, "-m", "data_prep.demo", f"--out={raw}", f"--videos={demo.videos}",
                  f"--frames={demo.frames}", f"--size={demo.video_size}", "--qualities=c23",
                  "--celebdf=0,0,0", f"--seed={int(config.seed)}"])
        _run([sys.executable, "-m", "data_prep.build", "--dataset=demo", f"--root={raw}", f"--out={prepared}",
              "--recipe=bench", f"--size={int(demo.crop_size)}", f"--frames={int(demo.frames)}",
              "--workers=2", "--no_progress"])
        logging.info("demo data ready in %.0f s", time.perf_counter() - t0)
    config.data.root = prepared
    return prepared


def summary_table(results: dict) -> str:
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
