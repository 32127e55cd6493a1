"""The DeeperForensics-1.0 perturbations (`data_prep.perturb`) and the perturbed copies of an
eval split (`data_prep.build --perturb`, `data_prep.robustness`).

Each type on a known image gives known statistics; random ones are pure functions of (video,
type, level, frame); specs parse or fail naming what is accepted; and one tiny demo tree goes
through a clean build and `--perturb=GB:5,VC:5`, twice (the second run changes nothing), and
through an interrupted copy that resumes to the same bytes.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from data_prep import build, demo, perturb, robustness, sources
from data_prep.robustness import COPIES_DIR
from data_prep.shards import WorkDir
from mat_jax.data import records
from mat_jax.faces import detect
from mat_jax.faces import frames as frames_lib
from mat_jax.faces.settings import Settings

LUMA = np.array([0.299, 0.587, 0.114])


def _image(h=256, w=320, seed=0) -> np.ndarray:
    """Saturated colour with texture at every scale: blurred noise plus fine noise."""
    rng = np.random.default_rng(seed)
    coarse = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 6)
    coarse = (coarse - coarse.mean()) * 6 + 128
    return np.clip(coarse + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _highpass(img: np.ndarray) -> float:
    return float(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F).var())


def _psnr(a, b) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _likeness(a, b) -> float:
    """Correlation of the coarse luminance layout: a blurred or re-encoded crop keeps it, while
    pixel errors (PSNR) of a level-5 blur can rank another face of similar colours closer."""
    def coarse(x):
        g = cv2.resize(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), (16, 16), interpolation=cv2.INTER_AREA).astype(np.float64)
        g -= g.mean()
        return g / (np.linalg.norm(g) + 1e-9)

    return float(np.sum(coarse(a) * coarse(b)))


def test_every_type_has_five_levels_from_the_benchmark_table():
    assert list(perturb.REGISTRY) == ["CS", "CC", "BW", "GNC", "GB", "JPEG", "VC"]
    for name, p in perturb.REGISTRY.items():
        assert p.levels == (1, 2, 3, 4, 5) and p.params == perturb.LEVELS[name][1]
        d = p.describe(5)
        assert d["type"] == name and d["level"] == 5 and "DeeperForensics-1.0" in d["source"]
        assert json.loads(json.dumps(d)) == d
    assert perturb.REGISTRY["VC"].video_fn and perturb.REGISTRY["GB"].frame_fn


def test_saturation_scales_chroma_and_level_5_is_grey():
    img = _image()
    chroma = lambda x: x.astype(np.float64) - (x.astype(np.float64) @ LUMA)[..., None]
    for level, factor in zip(range(1, 6), perturb.LEVELS["CS"][1]):
        out = perturb.get("CS").apply(img, level)
        assert np.std(chroma(out)) == pytest.approx(factor * np.std(chroma(img)), abs=0.5)
        assert np.abs((out @ LUMA) - (img @ LUMA)).mean() < 1.0  # luma kept (truncation: < 1)
    grey = perturb.get("CS").apply(img, 5)
    assert cv2.cvtColor(grey, cv2.COLOR_RGB2HSV)[..., 1].max() == 0  # saturation 0
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_contrast_scales_every_channel_by_the_factor():
    img = _image()
    for level, factor in zip(range(1, 6), perturb.LEVELS["CC"][1]):
        out = perturb.get("CC").apply(img, level).astype(np.float64)
        assert out.std() == pytest.approx(factor * img.std(), rel=0.01)
        assert out.mean() == pytest.approx(factor * img.mean() - 0.45, abs=0.12)  # truncated


def test_block_wise_greys_exactly_its_blocks():
    img = np.random.default_rng(1).integers(0, 100, (520, 600, 3), dtype=np.uint8)  # no 128s
    for level in (1, 5):
        out = perturb.get("BW").apply(img, level, perturb.frame_rng("v", "BW", level, 3))
        pos = perturb.block_positions(520, 600, perturb.LEVELS["BW"][1][level - 1],
                                      perturb.frame_rng("v", "BW", level, 3))  # fmt: skip
        assert len(pos) == 520 // 256 * perturb.LEVELS["BW"][1][level - 1]  # 2 per 256 px of the short side
        covered = np.zeros((520, 600), bool)
        for x, y in pos:
            covered[y : y + 8, x : x + 8] = True
            assert (out[y : y + 8, x : x + 8] == 128).all()
        changed = (out != img).any(-1)
        np.testing.assert_array_equal(changed, covered)
        assert not covered[-1].any() and not covered[:, -1].any()
    small = img[:255]
    np.testing.assert_array_equal(perturb.get("BW").apply(small, 5), small)  # under 256 px: none


def test_noise_has_the_tables_variance_in_studio_range_ycbcr():
    flat = np.full((256, 256, 3), 128, np.uint8)
    for level in (1, 2, 3):
        v = perturb.LEVELS["GNC"][1][level - 1]
        out = perturb.get("GNC").apply(flat, level, perturb.frame_rng("v", "GNC", level, 0)).astype(np.float64)
        y = out @ LUMA
        ycc = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_RGB2YCrCb)
        # 8-bit luma units -> [0, 1] studio range (16..235): x 219 / 255^2
        assert (y.std() * 219 / 255**2) ** 2 == pytest.approx(v, rel=0.06)
        assert (ycc[..., 1].std() * 224 / 255**2) ** 2 == pytest.approx(v, rel=0.06)
        assert abs(y.mean() - 127.5) < 0.5


def test_blur_and_pixelation_lose_more_at_each_level():
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.uniform(0, 255, (256, 320, 3)).astype(np.float32), (0, 0), 2)
    img = np.clip((smooth - smooth.mean()) * 8 + 128, 0, 255).astype(np.uint8)  # detail at ~2-6 px
    for name in ("GB", "JPEG"):
        psnr = [_psnr(img, perturb.get(name).apply(img, lv)) for lv in range(1, 6)]
        assert all(a > b + 1 for a, b in itertools.pairwise(psnr)) and psnr[-1] < 16, (name, psnr)
    energy = [_highpass(img)] + [_highpass(perturb.get("GB").apply(img, lv)) for lv in range(1, 6)]
    assert all(a > 1.5 * b for a, b in itertools.pairwise(energy)), energy  # high frequencies go first
    np.testing.assert_array_equal(perturb.get("GB").apply(img, 5), cv2.GaussianBlur(img, (21, 21), 3.5))
    # Pixelation is bilinear (not k x k constant blocks): a one-pixel checkerboard, averaged
    # 2 x 2 on the way down, comes back flat grey.
    checker = np.where((np.indices((128, 128)).sum(0) % 2)[..., None], 200, 50).astype(np.uint8).repeat(3, -1)
    flat = perturb.get("JPEG").apply(checker, 1)
    assert flat.shape == checker.shape and flat.min() >= 124 and flat.max() <= 126


def test_video_compression_loses_more_at_crf_40_and_keeps_frame_order(tmp_path):
    rng = np.random.default_rng(2)
    smooth = cv2.GaussianBlur(rng.uniform(0, 255, (128, 200, 3)).astype(np.float32), (0, 0), 2.5)
    base = np.clip((smooth - smooth.mean()) * 8 + 128, 0, 255).astype(np.uint8)
    clip = [np.ascontiguousarray(base[:, 4 * i : 4 * i + 160]) for i in range(10)]  # pans 4 px a frame
    path = str(tmp_path / "clip.mp4")
    frames_lib.write_video(path, clip, crf=8)
    idx, src = frames_lib.read_sampled(path, frames_lib.Sampling(3))
    every = frames_lib.read_at(path, list(range(10)))
    vc = perturb.get("VC")
    psnr = {}
    for level in (1, 5):
        out = vc.apply_video(path, src, level, "clip")
        assert sorted(out) == idx == [0, 4, 9]
        psnr[level] = np.mean([_psnr(src[i], out[i]) for i in idx])
        for i in idx:  # frame i of the re-encode is frame i: nearer to it than to its neighbour
            assert _psnr(every[i], out[i]) > _psnr(every[i + 1 if i < 9 else i - 1], out[i]) + 6, (level, i)
    assert psnr[1] > psnr[5] + 1.0, psnr
    again = vc.apply_video(path, src, 5, "another video")  # VC draws nothing random
    for i in idx:
        np.testing.assert_array_equal(again[i], out[i])


def test_randomness_is_a_pure_function_of_video_type_level_and_frame():
    img = np.full((300, 300, 3), 90, np.uint8)
    for name in ("GNC", "BW"):
        p = perturb.get(name)
        a = p.apply_video("", {0: img, 1: img}, 3, "original__c23__000")
        b = p.apply_video("", {0: img, 1: img}, 3, "original__c23__000")
        c = p.apply_video("", {0: img}, 3, "original__c23__001")
        assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
        assert a[0].tobytes() != a[1].tobytes() and a[0].tobytes() != c[0].tobytes()
    # The seed is a hash, the same on every machine and run (a rebuild is byte-identical).
    assert perturb.seed("original__c23__000", "GNC", 1) == 2773767107476729545
    assert perturb.seed("original__c23__000", "GNC", 2) != perturb.seed("original__c23__000", "GNC", 1)


def test_specs_parse_and_name_what_is_accepted():
    assert perturb.parse("GB:3,VC:5") == [("GB", 3), ("VC", 5)]
    assert perturb.parse("vc:5, GB:3,GB:3") == [("GB", 3), ("VC", 5)]  # registry order, once each
    assert perturb.parse("GB") == [("GB", lv) for lv in range(1, 6)]
    everything = perturb.parse("all")
    assert len(everything) == 35 and everything[0] == ("CS", 1) and everything[-1] == ("VC", 5)
    assert perturb.parse("all,GB:2") == everything
    with pytest.raises(ValueError, match="unknown perturbation 'XX'; accepted: CS, CC, BW, GNC, GB, JPEG, VC"):
        perturb.parse("GB:1,XX:2")
    for bad in ("GB:6", "GB:0"):
        with pytest.raises(ValueError, match="outside 1..5"):
            perturb.parse(bad)
    with pytest.raises(ValueError, match="not a number"):
        perturb.parse("GB:high")
    with pytest.raises(ValueError, match="empty"):
        perturb.parse(" , ")


def test_the_registry_takes_new_types_but_not_twice():
    flip = perturb.Perturbation("HFLIP", "mirror", "none", (0,), frame_fn=lambda x, p, r: x[:, ::-1],
                                keeps_geometry=False)  # fmt: skip
    perturb.register(flip)
    try:
        assert perturb.parse("hflip") == [("HFLIP", 1)] and ("HFLIP", 1) in perturb.parse("all")
        with pytest.raises(ValueError, match="exists already"):
            perturb.register(flip)
    finally:
        del perturb.REGISTRY["HFLIP"]
    with pytest.raises(ValueError, match="exactly one"):
        perturb.Perturbation("X", "x", "p", (1,))


# --- the perturbed copies of a demo split ------------------------------------------------------

ARGS = ["--dataset=demo", "--splits=test", "--recipe=bench", "--size=64", "--frames=2", "--workers=1",
        "--no_progress"]  # fmt: skip
# BW adds no block to frames under 256 px (as the benchmark), so on the demo's 160 x 128
# frames its copy must be the clean build itself, byte for byte: the geometry is reproduced.
SPEC = "--perturb=GB:5,VC:5,BW:1"


def _records(folder: str) -> dict:
    return {(r.video_id, r.frame_index): r for f in records.split_files(folder, "test") for r in records.read(f)}


def _files(folder: str) -> dict[str, tuple[bytes, int]]:
    return {os.path.relpath(f, folder): (open(f, "rb").read(), os.stat(f).st_mtime_ns)
            for f in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)) if os.path.isfile(f)}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    raw = str(tmp_path_factory.mktemp("raw"))
    demo.make_demo_tree(raw, videos_per_split=(2, 2, 2), frames=2, size=(160, 128), qualities=("c23",),
                        celebdf=(0, 0, 0), log=lambda *_: None)  # fmt: skip
    out = str(tmp_path_factory.mktemp("records"))
    args = ARGS + [f"--root={raw}", f"--out={out}"]
    assert build.main(args) == 0
    assert build.main(args + [SPEC]) == 0
    return raw, out, args


def test_perturbing_needs_the_clean_build_and_its_options(built, tmp_path, capsys):
    raw, _out, args = built
    assert build.main(ARGS + [f"--root={raw}", f"--out={tmp_path}", SPEC]) == 2
    assert "run the same command without --perturb first" in capsys.readouterr().err
    assert build.main([a if a != "--size=64" else "--size=96" for a in args] + [SPEC]) == 2
    assert "made with other settings" in capsys.readouterr().err
    assert build.main(args + ["--perturb=GB:9"]) == 2
    assert "outside 1..5" in capsys.readouterr().err


def test_copies_are_the_clean_crops_twins(built):
    _, out, _ = built
    clean_summary, clean = records.load_summary(out), _records(out)
    assert clean and sorted(os.listdir(os.path.join(out, COPIES_DIR))) == ["BW-1", "GB-5", "VC-5"]
    assert {k: r.image for k, r in _records(os.path.join(out, COPIES_DIR, "BW-1")).items()} == {
        k: r.image for k, r in clean.items()
    }
    for name in ("GB", "VC"):
        folder = os.path.join(out, COPIES_DIR, f"{name}-5")
        s = records.load_summary(folder)
        assert s["perturbation"] == perturb.get(name).describe(5) == s["settings"]["perturbation"]
        assert {k: v for k, v in s["settings"].items() if k != "perturbation"} == clean_summary["settings"]
        assert s["counts"] == clean_summary["counts"] and s["videos"] == clean_summary["videos"]
        assert os.path.exists(os.path.join(folder, "report.tsv")) and not os.path.exists(os.path.join(folder, ".work"))
        got = _records(folder)
        assert sorted(got) == sorted(clean)  # the same (video_id, frame_index), all of them
        for key, r in got.items():
            c = clean[key]
            np.testing.assert_array_equal(r.landmarks, c.landmarks)
            assert (r.label, r.method, r.split, r.mask) == (c.label, c.method, c.split, c.mask)
            assert r.image != c.image
            img, twin = (cv2.imdecode(np.frombuffer(x.image, np.uint8), cv2.IMREAD_COLOR) for x in (r, c))
            others = [cv2.imdecode(np.frombuffer(o.image, np.uint8), cv2.IMREAD_COLOR)
                      for k, o in clean.items() if k[0] != key[0]]  # fmt: skip
            assert _likeness(img, twin) > max(_likeness(img, o) for o in others), (name, key)  # its own twin


def test_rerun_changes_nothing_and_an_interrupted_copy_resumes_to_the_same_bytes(built, tmp_path, capsys):
    _raw, out, args = built
    before = _files(out)
    capsys.readouterr()
    assert build.main(args + [SPEC]) == 0
    assert "already prepared" in capsys.readouterr().out and _files(out) == before
    # An interrupted copy: its .work holds one video's marker and part, no summary.
    mine = str(tmp_path / "out")
    shutil.copytree(out, mine)
    gb = os.path.join(mine, COPIES_DIR, "GB-5")
    shutil.rmtree(gb)
    assert build.main([a.replace(out, mine) for a in args] + [SPEC, "--keep_work"]) == 0
    parts = sorted(glob.glob(os.path.join(gb, ".work", "parts", "*.json")))
    for marker in parts[1:]:
        os.remove(marker)
    for f in glob.glob(os.path.join(gb, "demo-test.tfrecord-*")) + [os.path.join(gb, "summary.json")]:
        os.remove(f)
    assert build.main([a.replace(out, mine) for a in args] + [SPEC]) == 0
    after = _files(mine)
    for name, (data, _) in before.items():
        if name.startswith(COPIES_DIR) and "tfrecord" in name:
            assert after[name][0] == data, name  # the same records, byte for byte
    assert not os.path.exists(os.path.join(gb, ".work"))
    vc = [n for n in before if n.startswith(os.path.join(COPIES_DIR, "VC-5"))]
    assert vc and all(after[n] == before[n] for n in vc)  # a finished copy is left as it is


def test_clean_geometry_is_reproduced_refitted_or_refused(built, tmp_path):
    """The worker finds each clean face again: exactly, or within REFIT_TOLERANCE by a fit onto
    the record's landmarks, or not at all; frames refused or without a clean record are left out."""
    raw, out, _ = built
    settings = Settings.from_json(records.load_summary(out)["settings"])
    clean = _records(out)
    video = next(v for v in sources.list_videos("demo", raw) if (v.video_id, 0) in clean)
    idx, frames = frames_lib.read_sampled(video.path, settings.sampling(video.split))
    finder = detect.FaceFinder(settings.detector, settings.detect_size, settings.min_face)
    lms = {(i, 0): clean[(video.video_id, i)].landmarks for i in idx if (video.video_id, i) in clean}
    exact, missed = robustness._clean_geometry(idx, frames, {i: (lm, b"", 0) for i, lm in lms.items()}, settings,
                                               finder)  # fmt: skip
    assert sorted(exact) == sorted(lms) and not missed
    shifted, missed = robustness._clean_geometry(idx, frames, {i: (lm + 0.3, b"", 0) for i, lm in lms.items()},
                                                 settings, finder)  # fmt: skip
    assert not missed
    for i in lms:
        np.testing.assert_allclose(shifted[i][:, 2], exact[i][:, 2] + 0.3, atol=1e-3)
    noise = np.random.default_rng(0).normal(0, 2, (68, 2)).astype(np.float32)
    refused, missed = robustness._clean_geometry(idx, frames, {i: (lm + noise, b"", 0) for i, lm in lms.items()},
                                                 settings, finder)  # fmt: skip
    assert not refused and len(missed) == len(lms) and min(missed) > robustness.REFIT_TOLERANCE
    WorkDir(robustness.copy_folder(str(tmp_path), "GB", 5)).open({})
    faces = {i: (lm, b"", 0) for i, lm in lms.items() if i != min(lms)}
    (r,) = robustness._perturb_video(robustness.Task(video, faces, [("GB", 5)], str(tmp_path)),
                                     {"settings": settings, "finder": finder})  # fmt: skip
    assert (r.status, r.sampled, r.written) == ("partial", len(idx), len(lms) - 1), r
    assert "have no clean record" in r.reason
