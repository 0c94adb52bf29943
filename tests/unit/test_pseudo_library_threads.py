"""OpenCV and BLAS run on one thread while the pipeline's own worker threads do the work."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import cv2
import pytest
from threadpoolctl import threadpool_info

import labeling_pipeline.pseudo_labels.instance_stages as instance_stages
from core_model.types import BoolMask
from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
from labeling_pipeline.pseudo_labels import PseudoLabelConfig, pseudo_label_image
from labeling_pipeline.pseudo_labels.color_features import ColorTextureExtractor
from labeling_pipeline.pseudo_labels.library_threads import one_thread_per_library
from labeling_pipeline.pseudo_labels.refine import grabcut_refine


def _blas_threads() -> list[int]:
    return [int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def three_opencv_threads() -> Iterator[None]:
    """A known OpenCV thread count other than 1, whatever the machine's core count."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    yield
    cv2.setNumThreads(before)


def test_limits_inside_and_restores_after(three_opencv_threads: None) -> None:
    blas_before = _blas_threads()
    with one_thread_per_library():
        assert cv2.getNumThreads() == 1
        assert all(n == 1 for n in _blas_threads())
    assert cv2.getNumThreads() == 3
    assert _blas_threads() == blas_before
    with one_thread_per_library(enabled=False):
        assert cv2.getNumThreads() == 3


def test_overlapping_holders_share_one_limit(three_opencv_threads: None) -> None:
    entered, leave_first = threading.Event(), threading.Event()

    def hold() -> None:
        with one_thread_per_library():
            entered.set()
            leave_first.wait(10)

    other = threading.Thread(target=hold)
    other.start()
    assert entered.wait(10)
    with one_thread_per_library():
        leave_first.set()
        other.join(10)
        assert cv2.getNumThreads() == 1  # the other holder left; this one still holds
    assert cv2.getNumThreads() == 3


@pytest.mark.parametrize(("workers", "expected"), [(2, 1), (1, 3)])
def test_pipeline_limits_library_threads_when_it_runs_its_own(
    three_opencv_threads: None, monkeypatch: pytest.MonkeyPatch, workers: int, expected: int
) -> None:
    seen: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> BoolMask:
        seen.append(cv2.getNumThreads())
        return grabcut_refine(*args, **kwargs)

    monkeypatch.setattr(instance_stages, "grabcut_refine", spy)
    scene = generate_scene(3, SceneConfig(height=96, width=128, min_objects=1, max_objects=1))
    base = PseudoLabelConfig(work_max_side=None)
    config = dataclasses.replace(
        base,
        conquer_workers=workers,
        refine=dataclasses.replace(base.refine, workers=workers),
    )
    masks = pseudo_label_image(scene.image, ColorTextureExtractor(long_side=128), config=config)
    assert masks and seen
    assert set(seen) == {expected}
    assert cv2.getNumThreads() == 3
