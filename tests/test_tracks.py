"""Face tracks: linking detections across sampled frames, which tracks become records, and how
a video with several people is scored."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mat_jax import aggregation
from mat_jax.faces import track


@dataclasses.dataclass
class Det:
    box: tuple[float, float, float, float]


def _box(x, y, s=60.0):
    return Det((x, y, x + s, y + s))


def test_two_people_give_two_tracks_in_reading_order():
    # Right person found first in frame 0; ids still go left to right at equal first frames.
    frames = [(i * 10, [_box(300 + 2 * i, 100), _box(50 + 3 * i, 120)]) for i in range(6)]
    kept = track.keep(track.link(frames), len(frames))
    assert [t.track_id for t in kept] == [0, 1]
    assert [t.boxes[0][0] for t in kept] == [50, 300]
    assert all(t.indices == [0, 10, 20, 30, 40, 50] for t in kept)


def test_a_gap_within_max_gap_continues_the_track_and_a_longer_one_starts_another():
    rules = track.TrackRules(max_gap=2, min_fraction=0.0, min_frames=1)
    faces = {0: [_box(100, 100)], 1: [], 2: [], 3: [_box(104, 100)], 4: [], 5: [], 6: [], 7: [_box(108, 100)]}
    tracks = track.link(list(faces.items()), rules)
    assert [t.indices for t in tracks] == [[0, 3], [7]]


def test_stray_detections_do_not_survive_but_a_steady_face_does():
    # The coffee-cup case: a detection in 2 of 8 frames, at different places.
    frames = [(i, [_box(200, 150)]) for i in range(8)]
    frames[2] = (2, [_box(200, 150), _box(20, 20, 30)])
    frames[6] = (6, [_box(200, 150), _box(400, 300, 40)])
    kept = track.keep(track.link(frames), 8)
    assert len(kept) == 1 and len(kept[0].items) == 8
    only_strays = [(i, [_box(20 + 90 * (i % 3), 20)] if i in (1, 5) else []) for i in range(8)]
    assert track.keep(track.link(only_strays), 8) == []


def test_min_length_and_size_rules():
    rules = track.TrackRules(min_fraction=0.4, min_frames=2)
    assert [rules.min_length(n) for n in (1, 2, 5, 8, 32)] == [1, 2, 2, 4, 13]
    frames = [(i, [_box(100, 100, 12)]) for i in range(4)]
    assert track.keep(track.link(frames), 4, track.TrackRules(min_size=20)) == []
    assert len(track.keep(track.link(frames), 4, track.TrackRules(min_size=10))) == 1


def test_faces_that_cross_keep_their_tracks_by_overlap():
    frames = [(i, [_box(100 + 20 * i, 100), _box(300 - 20 * i, 300)]) for i in range(8)]
    kept = track.keep(track.link(frames), 8)
    assert len(kept) == 2
    for t in kept:
        xs = [b[0] for b in t.boxes]
        assert xs == sorted(xs) or xs == sorted(xs, reverse=True)


def test_overlaps_marks_the_labelled_face():
    t = track.Track([(i, _box(100, 100)) for i in range(4)])
    assert track.overlaps(t, {0: [(100, 100, 160, 160)], 2: [(102, 98, 160, 160)]})
    assert not track.overlaps(t, {0: [(300, 300, 360, 360)], 1: [(300, 300, 360, 360)]})
    assert not track.overlaps(t, {})


def test_video_score_is_the_max_over_tracks_and_one_track_is_the_single_face_result():
    rng = np.random.default_rng(0)
    n = 24
    scores = rng.random(n)
    video = np.repeat(["a", "b", "c"], 8)
    labels = np.repeat([0, 1, 1], 8)
    tracks = np.zeros(n, int)
    # One track per video: bit for bit the result without tracks, for every rule.
    for mode, k in (("mean", None), ("mean_logit", None), ("max", None), ("topk", 3)):
        plain = aggregation.video_scores(scores, labels, video, mode, k=k)
        tracked = aggregation.video_scores(scores, labels, video, mode, k=k, tracks=tracks)
        assert set(plain) == set(tracked)
        for key in plain:
            np.testing.assert_array_equal(plain[key], tracked[key])
    # Video "b": a real person (track 0) and a forged one (track 1), labelled per face.
    tracks[8:12], tracks[12:16] = 0, 1
    labels = labels.copy()
    labels[8:12] = 0
    out = aggregation.video_scores(scores, labels, video, "mean", tracks=tracks)
    assert out["video_id"].tolist() == ["a", "b", "c"]
    assert out["n_tracks"].tolist() == [1, 2, 1]
    assert out["label"].tolist() == [0, 1, 1]
    assert out["n_frames"].tolist() == [8, 8, 8]
    assert out["score"][1] == pytest.approx(max(scores[8:12].mean(), scores[12:16].mean()))
    assert out["score"][0] == pytest.approx(scores[:8].mean())
    mean = aggregation.video_scores(scores, labels, video, "mean", tracks=tracks, track_reduce="mean")
    assert mean["score"][1] == pytest.approx((scores[8:12].mean() + scores[12:16].mean()) / 2)
    with pytest.raises(ValueError, match="track reduction"):
        aggregation.video_scores(scores, labels, video, tracks=tracks, track_reduce="median")


# --- on real decoded video: two people side by side ------------------------------------------


@pytest.fixture(scope="module")
def two_people(tmp_path_factory):
    from data_prep import demo_faces
    from mat_jax.faces import frames as frames_lib
    from mat_jax.faces.detect import FaceFinder

    finder = FaceFinder("dlib")  # the truth of the rendered faces, as the demo makes it
    photos = demo_faces.face_photos()
    if "grace_hopper" not in photos:
        pytest.skip("matplotlib's sample portrait is needed for a second identity")
    rng = np.random.default_rng(3)
    sides, truths = [], []
    for name in ("astronaut", "grace_hopper"):
        photo = photos[name]
        ident = demo_faces.Identity(name, photo, demo_faces.photo_landmarks(photo, finder), {})
        f, lm = demo_faces.render(ident, 6, (240, 240), rng, face_frac=(0.4, 0.45), background=110)
        sides.append(f)
        truths.append(lm)
    video = [np.concatenate([a, b], axis=1) for a, b in zip(*sides)]
    path = str(tmp_path_factory.mktemp("two") / "two.mp4")
    frames_lib.write_video(path, video)
    indices, decoded = frames_lib.read_sampled(path, frames_lib.Sampling(6))
    return indices, decoded, truths, finder


def test_two_people_in_a_video_give_one_track_each(two_people):
    from mat_jax.faces.crops import face_crops, tracks_of
    from mat_jax.faces.settings import Settings

    indices, decoded, truths, finder = two_people
    crops = face_crops(indices, decoded, Settings(dataset="demo", recipe="bench", size=64), finder)
    tracks = tracks_of(crops)
    assert sorted(tracks) == [0, 1]
    for t, truth in zip((0, 1), truths):  # track 0 is the left person, the astronaut
        assert [c.index for c in tracks[t]] == indices
        offset = np.array([240.0 * t, 0.0])
        for c in tracks[t]:
            err = np.abs(c.frame_landmarks[36:48].mean(0) - (truth[indices.index(c.index)][36:48].mean(0) + offset))
            assert err.max() < 12, (t, c.index, err)


def test_every_track_takes_the_video_label_without_face_marks(two_people):
    from data_prep import worker
    from data_prep.sources import Video
    from mat_jax.faces.crops import face_crops
    from mat_jax.faces.settings import Settings

    indices, decoded, truths, finder = two_people
    crops = face_crops(indices, decoded, Settings(dataset="demo", recipe="bench", size=64), finder)
    video = Video("two.mp4", 1, "test", "FFIW", "two", "ffiw")
    assert worker.track_labels(video, crops) == {0: 1, 1: 1}


def test_a_small_face_that_moves_more_than_its_width_stays_one_track():
    # Sampled frames half a second apart: a 44 px face moves 53 px, boxes no longer overlap.
    frames = [(0, [_box(309, 214, 44)]), (2, [_box(256, 194, 44), _box(305, 322, 37)]), (5, [_box(309, 223, 44)])]
    kept = track.keep(track.link(frames), 3)
    assert len(kept) == 1 and kept[0].indices == [0, 2, 5]
    assert track.affinity((0, 0, 40, 40), (200, 0, 240, 40), track.TrackRules()) == 0  # too far
    assert track.affinity((0, 0, 40, 40), (30, 0, 150, 120), track.TrackRules()) == 0  # 3x the size
