"""An offline, FF++-shaped demo tree: real face photos from pip packages, self-blended fakes.

    python -m data_prep.demo --out DIR [--videos 16,10,10] [--frames 32] [--size 320x240] [--seed 0]

Writes
    DIR/ffpp/original_sequences/youtube/{c23,c40}/videos/000.mp4 ...   real videos
    DIR/ffpp/manipulated_sequences/SBI/{c23,c40}/videos/000_001.mp4   fakes (target_source)
    DIR/ffpp/manipulated_sequences/SBI/masks/videos/000_001.mp4       blend masks
    DIR/ffpp/splits/{train,val,test}.json                              FF++ pair lists
    DIR/celebdf/{Celeb-real,YouTube-real,Celeb-synthesis}/*.mp4, List_of_testing_videos.txt
    DIR/demo.json        what was made (identities, SBI settings per fake video)
    DIR/landmarks.npz    ground-truth 68 landmarks per frame of every video, for tests

Real videos are portrait variants moving over the frame, fakes their self-blended copies
(`data_prep.demo_faces`); H.264 at CRF 23 (c23) and CRF 40 (c40), as FF++.

`make_demo_tree` is the Python API; `python -m data_prep.build --dataset=demo --root=DIR`
prepares the FF++ part.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import sys

import numpy as np

from data_prep.demo_faces import face_photos, fake_params, make_identity, photo_landmarks, render, sbi_video
from mat_jax.faces.detect import FaceFinder
from mat_jax.faces.frames import write_video

QUALITIES = {"c23": 23, "c40": 40}
METHOD = "SBI"


def make_demo_tree(
    out: str,
    *,
    videos_per_split: tuple[int, int, int] = (16, 10, 10),
    frames: int = 32,
    size: tuple[int, int] = (320, 240),
    qualities: tuple[str, ...] = ("c23", "c40"),
    celebdf: tuple[int, int, int] = (6, 2, 6),
    seed: int = 0,
    log=print,
) -> dict:
    """Writes the demo tree under `out` and returns its manifest (also saved as out/demo.json).

    Args:
      out: output folder (created).
      videos_per_split: real videos in (train, val, test); each is even, as FF++ pairs them,
        and each real video has one fake, so each split is balanced.
      frames: frames per video.
      size: (width, height) of the videos; multiples of 16 keep H.264 happy.
      qualities: FF++ compressions to write, from "c23" and "c40".
      celebdf: (Celeb-real, YouTube-real, Celeb-synthesis) videos of the Celeb-DF-shaped tree;
        (0, 0, 0) skips it.
      seed: everything random derives from it; the same arguments give the same tree.
    """
    if any(n % 2 or n < 2 for n in videos_per_split):
        raise ValueError(f"videos_per_split must be even and >= 2 (FF++ pairs), got {videos_per_split}")
    if any(q not in QUALITIES for q in qualities):
        raise ValueError(f"qualities must be among {tuple(QUALITIES)}, got {qualities}")
    # ffmpeg encodes in its own processes: queued writes overlap with drawing the next videos
    # (a third of the tree's time otherwise went to waiting on the encoder).
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    pending: list[concurrent.futures.Future] = []

    def write(*args, **kw):
        pending.append(pool.submit(write_video, *args, **kw))

    try:
        manifest, truth = _make_tree(
            out, videos_per_split, frames, size, qualities, celebdf, seed, log, write
        )
    finally:
        pool.shutdown(wait=True)
    for f in pending:
        f.result()  # an encoder failure surfaces here
    # Written last, once every video is on disk: demo.json marks a finished tree.
    np.savez_compressed(os.path.join(out, "landmarks.npz"), **truth)
    with open(os.path.join(out, "demo.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def existing_tree(out: str) -> dict | None:
    """The arguments a finished tree in `out` was made with (from its demo.json), or None.

    demo.json is written last, so a tree killed half-way has none and is made again.
    """
    try:
        with open(os.path.join(out, "demo.json")) as f:
            m = json.load(f)
    except FileNotFoundError:
        return None
    celebdf = m["celebdf"].get("counts", [0, 0, 0])
    videos = [2 * len(m["ffpp"]["splits"][split]) for split in ("train", "val", "test")]
    return {"seed": m["seed"], "frames": m["frames"], "size": m["size"], "qualities": m["qualities"],
            "videos": videos, "celebdf": list(celebdf)}


def _make_tree(out, videos_per_split, frames, size, qualities, celebdf, seed, log, write):
    rng = np.random.default_rng(seed)
    photos = face_photos()
    finder = FaceFinder("dlib")
    photo_lms = {name: photo_landmarks(img, finder) for name, img in photos.items()}
    ff = os.path.join(out, "ffpp")
    truth: dict[str, np.ndarray] = {}
    manifest = {
        "seed": seed,
        "frames": frames,
        "size": list(size),
        "qualities": list(qualities),
        "photos": sorted(photos),
        "ffpp": {"splits": {}, "videos": {}},
        "celebdf": {},
    }
    names = sorted(photos)

    def new_video(i: int):
        name = names[i % len(names)]
        ident = make_identity(name, photos[name], photo_lms[name], rng)
        fr, lm = render(ident, frames, size, rng)
        return ident, fr, lm

    # Videos are drawn in train, val, test order, but numbered test first: the test split
    # starts at 000 whatever the split sizes, so "000_001.mp4" is a held-out fake in every
    # demo tree (README's predict example works on the small tree the tests build too).
    _, n_val, n_test = videos_per_split
    first_id = {"test": 0, "val": n_test, "train": n_test + n_val}
    drawn = 0
    os.makedirs(os.path.join(ff, "splits"), exist_ok=True)
    for split, n in zip(("train", "val", "test"), videos_per_split):
        split_ids = [f"{first_id[split] + k:03d}" for k in range(n)]
        draw_index = {vid: drawn + k for k, vid in enumerate(split_ids)}
        drawn += n
        pairs = [[split_ids[k], split_ids[k + 1]] for k in range(0, n, 2)]
        manifest["ffpp"]["splits"][split] = pairs
        with open(os.path.join(ff, "splits", f"{split}.json"), "w") as f:
            json.dump(pairs, f)
        for a, b in pairs:
            made = {}
            for vid in (a, b):
                ident, fr, lm = new_video(draw_index[vid])
                made[vid] = (fr, lm)
                for q in qualities:
                    write(
                        os.path.join(ff, "original_sequences", "youtube", q, "videos", f"{vid}.mp4"),
                        fr,
                        QUALITIES[q],
                    )
                truth[f"original/{vid}"] = lm
                manifest["ffpp"]["videos"][f"original/{vid}"] = {
                    "split": split,
                    "label": 0,
                    "identity": ident.info,
                }
            for tgt, src in ((a, b), (b, a)):
                fr, lm = made[tgt]
                params, vis = fake_params(rng, fr[0], lm[0])
                fakes, masks = sbi_video(fr, lm, params)
                name = f"{tgt}_{src}"
                for q in qualities:
                    write(
                        os.path.join(ff, "manipulated_sequences", METHOD, q, "videos", f"{name}.mp4"),
                        fakes,
                        QUALITIES[q],
                    )
                write(
                    os.path.join(ff, "manipulated_sequences", METHOD, "masks", "videos", f"{name}.mp4"),
                    masks,
                    10,
                )
                truth[f"{METHOD}/{name}"] = lm
                manifest["ffpp"]["videos"][f"{METHOD}/{name}"] = {
                    "split": split,
                    "label": 1,
                    "sbi": dataclasses.asdict(params),
                    "visibility": round(vis, 2),
                }
        log(f"demo: ffpp {split}: {n} real + {n} fake videos")

    if any(celebdf):
        _celebdf(os.path.join(out, "celebdf"), celebdf, new_video, rng, truth, manifest, write)
        log(
            f"demo: celebdf: {celebdf[0]} Celeb-real, {celebdf[1]} YouTube-real, {celebdf[2]} Celeb-synthesis"
        )
    return manifest, truth


def _celebdf(root: str, counts, new_video, rng, truth, manifest, write) -> None:
    """Celeb-DF v2 shape: synthesis k is made from Celeb-real k (mod the reals); the test list
    takes every other video of each folder, in the list's 1 = real convention."""
    n_celeb, n_youtube, n_synth = counts
    if n_synth and not n_celeb:
        raise ValueError("Celeb-synthesis videos are made from Celeb-real ones: give at least one Celeb-real")
    os.makedirs(root, exist_ok=True)
    test_lines, reals = [], []
    written: dict[str, list[str]] = {"Celeb-real": [], "YouTube-real": [], "Celeb-synthesis": []}
    for k in range(n_celeb):
        _, fr, lm = new_video(k)
        rel = f"Celeb-real/id{k}_0000.mp4"
        write(os.path.join(root, rel), fr, 23)
        written[rel.split("/")[0]].append(rel.split("/")[1])
        reals.append((k, fr, lm))
        truth[f"celebdf/{rel[:-4]}"] = lm
    for k in range(n_youtube):
        _, fr, lm = new_video(k + 1)
        rel = f"YouTube-real/{k:05d}.mp4"
        write(os.path.join(root, rel), fr, 23)
        written[rel.split("/")[0]].append(rel.split("/")[1])
        truth[f"celebdf/{rel[:-4]}"] = lm
    for k in range(n_synth):
        src, fr, lm = reals[k % len(reals)]
        other = (src + 1 + k // len(reals)) % max(2, len(reals))
        fakes, _ = sbi_video(fr, lm, fake_params(rng, fr[0], lm[0])[0])
        rel = f"Celeb-synthesis/id{src}_id{other}_{k:04d}.mp4"
        write(os.path.join(root, rel), fakes, 23)
        written[rel.split("/")[0]].append(rel.split("/")[1])
        truth[f"celebdf/{rel[:-4]}"] = lm
    for folder, label in (("Celeb-real", 1), ("YouTube-real", 1), ("Celeb-synthesis", 0)):
        files = sorted(written[folder])  # the writes may still be queued: not from listdir
        test_lines += [f"{label} {folder}/{f}" for f in files[::2]]
    with open(os.path.join(root, "List_of_testing_videos.txt"), "w") as f:
        f.write("\n".join(test_lines) + "\n")
    manifest["celebdf"] = {"test_list": test_lines, "counts": list(counts)}


def _ints(s: str, n: int) -> tuple[int, ...]:
    v = tuple(int(x) for x in s.replace("x", ",").split(","))
    if len(v) != n:
        raise argparse.ArgumentTypeError(f"expected {n} numbers, got {s!r}")
    return v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--videos", default="16,10,10", help="real videos in train,val,test (even numbers)")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    p.add_argument("--qualities", default="c23,c40")
    p.add_argument("--celebdf", default="6,2,6", help="Celeb-real,YouTube-real,Celeb-synthesis videos")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    videos, celebdf = _ints(a.videos, 3), _ints(a.celebdf, 3)
    made = existing_tree(a.out)
    if made is not None:
        wanted = {"seed": a.seed, "frames": a.frames, "size": list(_ints(a.size, 2)),
                  "qualities": a.qualities.split(","), "videos": list(videos), "celebdf": list(celebdf)}
        if made != wanted:
            print(f"error: {a.out} holds a demo tree made with {made}, not {wanted}: remove it or choose "
                  "another --out", file=sys.stderr)
            return 2
        print(f"demo tree already in {a.out} (its demo.json): kept")
        return 0
    make_demo_tree(
        a.out,
        videos_per_split=videos,
        frames=a.frames,
        size=_ints(a.size, 2),
        qualities=tuple(a.qualities.split(",")),
        celebdf=celebdf,
        seed=a.seed,
    )
    print(
        f"demo tree written to {a.out}; prepare it with: python -m data_prep.build --dataset=demo "
        f"--root={a.out} --out=OUT"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
