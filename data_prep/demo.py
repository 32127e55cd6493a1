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

Real videos: each is its own "identity", a variant of a shipped portrait (scikit-image's
astronaut, matplotlib's Grace Hopper when matplotlib is installed) with its own colour,
mirroring and face shape, moving smoothly (shift, rotation, zoom) over the frame. Fakes:
every frame of a real video self-blended (`data_prep.sbi`) with one setting per video, the
source copy changed, so outside the blend mask the fake equals its real video, as an FF++
fake shares its target's background; settings whose blend is nearly invisible at low
resolution, or glaring, are drawn again (`fake_params`), so the demo is learnable by a small
CPU model but not trivial. H.264 at CRF 23 (c23) and CRF 40 (c40), as FF++.

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

import cv2
import numpy as np

from data_prep import sbi
from data_prep.faces import FaceFinder

QUALITIES = {"c23": 23, "c40": 40}
METHOD = "SBI"


def write_video(path: str, frames, crf: int = 23, fps: int = 25, gray: bool = False) -> None:
    """H.264 mp4 of RGB (or, with `gray`, single-channel) uint8 frames via imageio-ffmpeg's ffmpeg."""
    import imageio_ffmpeg

    frames = list(frames)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    h, w = frames[0].shape[:2]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        path,
        (w, h),
        pix_fmt_in="gray" if gray else "rgb24",
        pix_fmt_out="gray" if gray else "yuv420p",
        fps=fps,
        codec="libx264",
        quality=None,
        macro_block_size=2,
        ffmpeg_log_level="error",
        output_params=["-crf", str(crf), "-preset", "veryfast"],
    )
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()


def face_photos() -> dict[str, np.ndarray]:
    """Real face photos shipped inside installed pip packages (RGB uint8)."""
    import skimage.data

    photos = {"astronaut": skimage.data.astronaut()}
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            data = np.frombuffer(f.read(), np.uint8)
        photos["grace_hopper"] = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    except (ImportError, OSError, ValueError):
        pass  # matplotlib is optional: the astronaut alone still gives varied identities
    return photos


@dataclasses.dataclass
class Identity:
    """A portrait variant: the image and its 68 landmarks."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    info: dict


def photo_landmarks(photo: np.ndarray, finder: FaceFinder) -> np.ndarray:
    """68 landmarks of a shipped portrait (HOG at full resolution, the one clear face)."""
    finder.reset()
    face = finder.find(photo)
    if face is None:
        raise RuntimeError("no face found in a shipped portrait; is the dlib model intact?")
    return face.landmarks


def make_identity(
    photo_name: str, photo: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
) -> Identity:
    """A new-looking person from a photo: mirroring, skin/hair colour, contrast, face shape.

    Landmarks follow the geometric changes analytically (detecting again on a recoloured
    portrait can pick a badge or patch instead of the face).
    """
    info = {
        "photo": photo_name,
        "mirror": bool(rng.random() < 0.5),
        "hue": float(rng.uniform(-12, 12)),
        "saturation": float(rng.uniform(0.75, 1.25)),
        "gamma": float(rng.uniform(0.8, 1.25)),
        "tint": [float(v) for v in rng.uniform(0.92, 1.08, 3)],
        "stretch": float(rng.uniform(0.9, 1.1)),
    }
    img, lm = photo, np.asarray(landmarks, np.float32)
    if info["mirror"]:
        img, lm = sbi.flip(img, lm)
    f = img.astype(np.float32) / 255.0
    hsv = cv2.cvtColor(f, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + info["hue"]) % 360
    hsv[..., 1] = np.clip(hsv[..., 1] * info["saturation"], 0, 1)
    f = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) ** info["gamma"] * np.asarray(info["tint"], np.float32)
    img = np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    new_w = round(w * info["stretch"])
    img = cv2.resize(img, (new_w, h), interpolation=cv2.INTER_AREA)
    lm = lm.copy()
    lm[:, 0] = (lm[:, 0] + 0.5) * new_w / w - 0.5
    return Identity(photo_name, np.ascontiguousarray(img), lm, info)


def render(
    ident: Identity,
    n_frames: int,
    size: tuple[int, int],
    rng: np.random.Generator,
    face_frac: tuple[float, float] = (0.36, 0.46),
    background: int | None = None,
):
    """Frames of `ident` moving smoothly, and the 68 landmarks of every frame.

    Args:
      size: (width, height) of the frames.
      face_frac: range of the face width (jaw to jaw) as a fraction of the frame height.
      background: grey level around the portrait; None mirrors the portrait at its edges,
        which at small scales repeats the face (fine for big faces, not for small ones).
    """
    w, h = size
    lm = ident.landmarks
    centre = lm.mean(0)
    face_w = float(lm[:, 0].max() - lm[:, 0].min())
    base = rng.uniform(*face_frac) * h / face_w
    t = np.linspace(0, 1, n_frames)
    cyc = rng.uniform(0.5, 1.5, 4)
    ph = rng.uniform(0, 2 * np.pi, 4)
    amp = (
        rng.uniform(0.03, 0.07) * w,
        rng.uniform(0.02, 0.05) * h,
        rng.uniform(2, 7),
        rng.uniform(0.02, 0.06),
    )
    offset = (rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.05, 0.05) * h)
    frames, lms = [], []
    for k in range(n_frames):
        wave = np.sin(2 * np.pi * cyc * t[k] + ph)
        tx, ty = offset[0] + amp[0] * wave[0], offset[1] + amp[1] * wave[1]
        angle, zoom = amp[2] * wave[2], base * (1 + amp[3] * wave[3])
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, zoom)
        m[:, 2] += (w / 2 + tx - centre[0], h / 2 + ty - centre[1])
        border = (cv2.BORDER_REFLECT, 0) if background is None else (cv2.BORDER_CONSTANT, (background,) * 3)
        frames.append(
            cv2.warpAffine(
                ident.image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border[0], borderValue=border[1]
            )
        )
        lms.append((lm @ m[:, :2].T + m[:, 2]).astype(np.float32))
    return frames, np.stack(lms)


def sbi_video(frames, lms, params: sbi.SbiParams):
    """Fake frames and blend masks (uint8) of a real video under one SBI setting."""
    fakes, masks = [], []
    for f, lm in zip(frames, lms):
        _, fake, mask = sbi.blend(f, lm, params)
        fakes.append(fake)
        masks.append(np.repeat((mask * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2))
    return fakes, masks


VISIBILITY = (8.0, 30.0)  # accepted range of `visibility`, grey levels


def visibility(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> float:
    """How visible a blend is at low resolution: the mask-weighted mean absolute difference
    (grey levels per channel) between fake and real at a quarter of the size."""

    def small(a):
        return cv2.resize(a, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA).astype(np.float32)

    m = small(mask)
    return float((np.abs(small(fake) - small(real)).mean(-1) * m).sum() / max(m.sum(), 1e-6))


def fake_params(
    rng: np.random.Generator, frame: np.ndarray, landmarks: np.ndarray
) -> tuple[sbi.SbiParams, float]:
    """An SBI setting for a demo fake video, and its visibility on the video's first frame.

    The source copy is the changed one, so the fake's outside equals its real video. Draws
    whose blend would be nearly invisible once downscaled and compressed (the 0.25 blend
    ratio, faint colour changes), or glaring, are drawn again, so that a small detector at
    64-128 px can learn the demo yet has to look at the face.
    """
    for _ in range(100):
        p = dataclasses.replace(
            sbi.draw_params(rng), transform_source=True, ratio=float(rng.choice([0.5, 0.75, 1.0]))
        )
        _, fake, mask = sbi.blend(frame, landmarks, p)
        v = visibility(frame, fake, mask)
        if VISIBILITY[0] <= v <= VISIBILITY[1]:
            return p, v
    raise RuntimeError(f"no SBI draw within visibility {VISIBILITY} in 100 tries; is the face tiny?")


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
    n_train, n_val, n_test = videos_per_split
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
    make_demo_tree(
        a.out,
        videos_per_split=_ints(a.videos, 3),
        frames=a.frames,
        size=_ints(a.size, 2),
        qualities=tuple(a.qualities.split(",")),
        celebdf=_ints(a.celebdf, 3),
        seed=a.seed,
    )
    print(
        f"demo tree written to {a.out}; prepare it with: python -m data_prep.build --dataset=demo "
        f"--root={a.out} --out=OUT"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
