"""Parts of one instance: what counts as inside it, and the residual parts no conquer found."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import numpy.typing as npt

from labeling_pipeline.pseudo_labels import PseudoLabelConfig
from labeling_pipeline.pseudo_labels.candidates import Candidate
from labeling_pipeline.pseudo_labels.instance_stages import _parts, _residual_parts
from labeling_pipeline.pseudo_labels.refine import band_disc

BAND = 4


def _box(shape: tuple[int, int], y: slice, x: slice) -> npt.NDArray[np.bool_]:
    mask = np.zeros(shape, dtype=bool)
    mask[y, x] = True
    return mask


def _reach(instance: npt.NDArray[np.bool_], band: int) -> npt.NDArray[np.bool_]:
    return cv2.dilate(instance.astype(np.uint8), band_disc(band)).astype(bool)


def test_a_part_reaching_into_the_uncertain_band_is_kept_one_beyond_it_is_not() -> None:
    shape = (60, 60)
    instance = _box(shape, slice(10, 50), slice(10, 50))
    # 9 columns inside the instance and 3 outside (75 % inside), all within the 4 px band
    near = _box(shape, slice(20, 30), slice(41, 53))
    # as far inside, but 9 columns out: 5 of them beyond the band (72 % inside the reach)
    far = _box(shape, slice(32, 42), slice(41, 59))
    config = PseudoLabelConfig(
        refine=dataclasses.replace(PseudoLabelConfig().refine, enabled=False)
    )
    image = np.zeros((*shape, 3), dtype=np.uint8)
    inner = _box(shape, slice(12, 18), slice(12, 30))
    candidates = [Candidate(m, 0.5, "conquer", BAND) for m in (inner, near, far)]

    kept = _parts(image, instance, candidates, config, _reach(instance, BAND))
    assert sorted(np.count_nonzero(c.mask) for c in kept) == [108, 120]  # inner, near
    # the instance's own outline as the limit: the part 25 % outside is no part any more
    kept = _parts(image, instance, candidates, config, instance)
    assert [np.array_equal(c.mask, inner) for c in kept] == [True]


def test_instance_pixels_no_part_covers_become_a_residual_part() -> None:
    shape = (80, 100)
    image = np.full((*shape, 3), 128, dtype=np.uint8)
    body = _box(shape, slice(20, 60), slice(20, 60))
    leaf = _box(shape, slice(34, 46), slice(60, 92))  # a thin bar sticking out of the body
    image[body] = (200, 40, 40)
    image[leaf] = (40, 200, 60)
    # the coarse instance: body and leaf, a couple of pixels too wide all round
    instance = cv2.dilate((body | leaf).astype(np.uint8), band_disc(2)).astype(bool)
    parts = [Candidate(body, 0.5, "conquer", BAND)]

    found = _residual_parts(
        image, instance, _reach(instance, BAND), parts, BAND, PseudoLabelConfig()
    )
    # one residual part, the leaf (GrabCut snaps it), no sliver from the 2 px ring
    assert [c.source for c in found] == ["residual"]
    mask = found[0].mask
    assert np.count_nonzero(mask & leaf) / np.count_nonzero(mask | leaf) > 0.8
    assert not (mask & body).any()


def test_no_residual_part_when_the_parts_cover_the_instance() -> None:
    shape = (60, 60)
    image = np.full((*shape, 3), 90, dtype=np.uint8)
    left, right = (
        _box(shape, slice(10, 50), slice(10, 30)),
        _box(shape, slice(10, 50), slice(30, 50)),
    )
    instance = left | right
    image[left] = (10, 10, 200)
    image[right] = (200, 200, 20)
    parts = [Candidate(left, 0.5, "conquer", BAND), Candidate(right, 0.5, "conquer", BAND)]
    # a split piece covers nothing: only the refined parts do
    pieces = parts + [Candidate(instance, 0.5, "split", BAND)]
    config = PseudoLabelConfig()
    assert _residual_parts(image, instance, _reach(instance, BAND), pieces, BAND, config) == []
    only_left = _residual_parts(
        image, instance, _reach(instance, BAND), [parts[0], pieces[2]], BAND, config
    )
    assert len(only_left) == 1
    assert np.count_nonzero(only_left[0].mask & right) > 0.9 * np.count_nonzero(right)
