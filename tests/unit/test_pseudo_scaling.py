"""The stages work at a reduced size; masks and the stage trace come back at the image's size."""

from __future__ import annotations

import numpy as np
import pytest

from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
from labeling_pipeline.pseudo_labels import PseudoLabelConfig, pseudo_label_image
from labeling_pipeline.pseudo_labels.color_features import ColorTextureExtractor
from labeling_pipeline.pseudo_labels.diagnostics import StageTrace
from labeling_pipeline.pseudo_labels.scaling import resize_mask, upscale_framed, working_size


def test_working_size_shrinks_only_large_images() -> None:
    assert working_size(300, 400, 640) == (300, 400)
    assert working_size(768, 1024, 640) == (480, 640)
    assert working_size(768, 1024, None) == (768, 1024)


def test_masks_and_trace_come_back_at_full_size() -> None:
    scene = generate_scene(3, SceneConfig(height=192, width=256, min_objects=1, max_objects=1))
    trace = StageTrace()
    extractor = ColorTextureExtractor(long_side=128)
    config = PseudoLabelConfig(work_max_side=128)
    masks = pseudo_label_image(scene.image, extractor, config=config, trace=trace)
    assert masks
    assert all(m.decode().shape == (192, 256) for m in masks)
    whole = next(r.mask for r in scene.regions if not r.is_part)
    assert max(trace.best_iou("final", whole), trace.best_iou("divide", whole)) > 0.5
    final = trace.stages["final"]
    assert len(final) == len(masks)
    assert max(m.y0 + m.crop.shape[0] for m in final) > 128  # rescaled, not at 96 x 128


@pytest.mark.parametrize(
    ("work_hw", "out_hw"),
    [((600, 800), (768, 1024)), ((97, 131), (250, 301)), ((40, 40), (41, 97))],
)
def test_framed_upscale_matches_resizing_the_whole_mask(
    work_hw: tuple[int, int], out_hw: tuple[int, int]
) -> None:
    rng = np.random.default_rng(sum(work_hw))
    differing = 0
    for trial in range(20):
        y0, x0 = int(rng.integers(0, work_hw[0])), int(rng.integers(0, work_hw[1]))
        y1 = int(rng.integers(y0 + 1, work_hw[0] + 1))
        x1 = int(rng.integers(x0 + 1, work_hw[1] + 1))
        crop = rng.random((y1 - y0, x1 - x0)) < 0.6
        if trial % 2:  # a solid blob: long straight boundaries
            crop[:] = False
            crop[
                (y1 - y0) // 4 : 1 + 3 * (y1 - y0) // 4, (x1 - x0) // 4 : 1 + 3 * (x1 - x0) // 4
            ] = True
        full = np.zeros(work_hw, dtype=bool)
        full[y0:y1, x0:x1] = crop
        expected = resize_mask(full, out_hw)
        got = np.zeros(out_hw, dtype=bool)
        placed = upscale_framed(crop, (y0, x0), work_hw, out_hw)
        if placed is not None:
            big, (y, x) = placed
            assert big.any(axis=0)[[0, -1]].all() and big.any(axis=1)[[0, -1]].all()  # trimmed
            got[y : y + big.shape[0], x : x + big.shape[1]] = big
        assert placed is not None or not expected.any()
        differing += int((got != expected).sum())
    # only pixels whose interpolated value is within float rounding of the 0.5 threshold may
    # differ from OpenCV's resize
    assert differing <= 3


def test_framed_upscale_of_a_vanishing_mask_is_none() -> None:
    crop = np.zeros((3, 3), dtype=bool)
    assert upscale_framed(crop, (10, 10), (50, 50), (100, 100)) is None
