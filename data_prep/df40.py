"""DF40 (YZY-stack/DF40), its FF++ domain -> `Video` rows (docs/data.md, "DF40").

DF40 ships its preprocessed data in DeepfakeBench's format: per method a folder of frame
folders and landmarks (`<method>/ff/frames/<video>/NNN.png`, `<method>/ff/landmarks/...`), and
per method a JSON (`dataset_json/<method>_ff.json`, `{"<method>_ff": {"<method>_Real": ...,
"<method>_Fake": {split: {"c23": {video: ...}}}}}`) whose reals point at FF++'s own real frames
(DeepfakeBench's `FaceForensics++/original_sequences/youtube/c23/frames/`, a separate download).
So this is the DeepfakeBench import over those JSONs, with its fixes: DF40's lists share
videos between train and test (DF40 issue #38) and repeat the same reals in every method's
JSON. The aggregate JSONs (`FSAll_ff.json`, ...) list the same videos again and are skipped.
"""

from __future__ import annotations

import dataclasses
import os

from data_prep import deepfakebench
from data_prep.rows import LayoutError, Listing, Video

DOMAIN = "_ff.json"


def json_files(root: str, json_path: str, methods) -> list[str]:
    """The per-method FF++-domain JSONs: `json_path` (a file or folder), else `<root>/dataset_json/`."""
    folder = json_path or os.path.join(root, "dataset_json")
    if os.path.isfile(folder):
        return [folder]
    if not os.path.isdir(folder):
        raise LayoutError(f"no DF40 JSONs: pass --json=<DF40's dataset_json folder> (looked in {folder})")
    files = sorted(f for f in os.listdir(folder) if f.endswith(DOMAIN) and "All" not in f)
    if methods:
        wanted = {f"{m}{DOMAIN}".lower() for m in methods}
        files = [f for f in files if f.lower() in wanted]
        if len(files) != len(wanted):
            raise LayoutError(f"--methods {sorted(methods)}: not every <method>{DOMAIN} is in {folder}")
    if not files:
        raise LayoutError(f"no <method>{DOMAIN} in {folder}")
    return [os.path.join(folder, f) for f in files]


def _method(v: Video) -> Video:
    # "simswap_Fake" -> "simswap": the method, as the per-method tables of DF40 name it.
    if v.label and v.method.lower().endswith("_fake"):
        return dataclasses.replace(v, method=v.method[: -len("_fake")])
    return v


def read(root: str, json_path: str = "", quality: str = "c23", methods=None, dataset: str = "df40") -> Listing:
    """The DF40 FF++-domain videos of `root`, from its per-method JSONs (`methods`: those only)."""
    listing = deepfakebench.read(root, json_files(root, json_path, methods), quality, dataset, one_source=True)
    return Listing([_method(v) for v in listing], listing.notes)
