"""Self-blended images: where the change lands, determinism, blend ratio, flips, bad input."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import skimage.data

from data_prep import sbi
from mat_jax.faces.detect import FaceFinder


@pytest.fixture(scope="module")
def face():
    img = skimage.data.astronaut()
    found = FaceFinder("dlib").find(img)
    assert found is not None
    return img, found.landmarks


def _hull_mask(shape, lm):
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(np.round(lm).astype(np.int32)), 1)
    return m.astype(bool)


def test_the_change_is_inside_the_face_and_the_rest_is_untouched(face):
    img, lm = face
    p = dataclasses.replace(sbi.draw_params(np.random.default_rng(3)), transform_source=True, ratio=1.0)
    real, fake, mask = sbi.blend(img, lm, p)
    assert real.dtype == fake.dtype == np.uint8 and fake.shape == img.shape
    assert mask.dtype == np.float32 and mask.shape == img.shape[:2]
    assert 0 <= mask.min() and mask.max() <= 1 and mask.max() > 0.99
    np.testing.assert_array_equal(real, img)  # the source was changed, so the real half is the input
    inside = _hull_mask(img.shape, lm)
    far = ~cv2.dilate(inside.astype(np.uint8), np.ones((61, 61), np.uint8)).astype(bool)
    diff = np.abs(fake.astype(np.int16) - img.astype(np.int16)).sum(-1)
    assert np.all(diff[far] == 0) and np.all(mask[far] == 0)
    assert diff[inside].mean() > 5
    # The blend weight is full at the centre of the face and fades before the hull's edge.
    nose = np.round(lm[30]).astype(int)
    assert mask[nose[1], nose[0]] > 0.99
    assert mask[inside].mean() > 0.2 and mask[~inside].mean() < 0.01


def test_same_params_same_output_and_fresh_draws_differ(face):
    img, lm = face
    p = sbi.draw_params(np.random.default_rng(7))
    a = sbi.blend(img, lm, p)
    b = sbi.blend(img, lm, p)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = sbi.self_blend(img, lm, np.random.default_rng(8))
    assert not np.array_equal(a[1], c[1])


def test_blend_ratio_scales_the_mask(face):
    img, lm = face
    p = dataclasses.replace(sbi.draw_params(np.random.default_rng(1)), ratio=1.0)
    full = sbi.blend(img, lm, p)[2]
    quarter = sbi.blend(img, lm, dataclasses.replace(p, ratio=0.25))[2]
    np.testing.assert_allclose(quarter, 0.25 * full, atol=1e-6)


def test_changing_the_target_changes_the_real_half_too(face):
    img, lm = face
    p = dataclasses.replace(sbi.draw_params(np.random.default_rng(2)), transform_source=False, ratio=1.0)
    real, fake, mask = sbi.blend(img, lm, p)
    assert not np.array_equal(real, img)
    outside = mask == 0
    np.testing.assert_array_equal(real[outside], fake[outside])


@pytest.mark.parametrize("hull", sbi.HULLS)
def test_every_hull_works_on_a_face_crop(face, hull):
    # As a training augmentation it runs on aligned crops with landmarks in crop pixels.
    img, lm = face
    x0, y0 = lm.min(0) - 40
    crop = np.ascontiguousarray(img[int(y0) : int(y0) + 200, int(x0) : int(x0) + 200])
    p = dataclasses.replace(sbi.draw_params(np.random.default_rng(4)), hull=hull, ratio=1.0)
    _, fake, mask = sbi.blend(crop, lm - (int(x0), int(y0)), p)
    assert fake.shape == crop.shape and mask.max() > 0.99


def test_flip_keeps_landmark_meaning(face):
    img, lm = face
    assert sorted(sbi.MIRROR_68.tolist()) == list(range(68))
    np.testing.assert_array_equal(sbi.MIRROR_68[sbi.MIRROR_68], np.arange(68))
    fimg, flm = sbi.flip(img, lm)
    assert flm[36, 0] < flm[45, 0]  # point 36 is still the outer corner on the image's left
    back_img, back_lm = sbi.flip(fimg, flm)
    np.testing.assert_array_equal(back_img, img)
    np.testing.assert_allclose(back_lm, lm)
    refound = FaceFinder("dlib").find(fimg)
    assert np.abs(refound.landmarks - flm).mean() < 4


def test_bad_input_says_what_is_wrong(face):
    img, lm = face
    p = sbi.draw_params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8 RGB"):
        sbi.blend(img.astype(np.float32), lm, p)
    with pytest.raises(ValueError, match="68 landmarks"):
        sbi.blend(img, lm[:5], p)
    with pytest.raises(ValueError, match="no face region"):
        sbi.blend(img, np.full((68, 2), -50.0), p)
