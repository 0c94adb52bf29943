from __future__ import annotations

import math

import numpy as np
import pytest

from core_model.errors import GranularityError, InvalidPromptError
from core_model.types import Box, Point, Prompts, as_granularity_tuple, validate_granularity


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, 0.1),
        (1.0, 1.0),
        (1, 1.0),
        (0.5, 0.5),
        (np.float32(0.1), 0.1),
        (np.float64(0.7), 0.7),
        (np.array(0.3), 0.3),
        (1.0000004, 1.0),
        (0.0999996, 0.1),
    ],
)
def test_validate_granularity_accepts_real_numbers(value: object, expected: float) -> None:
    result = validate_granularity(value)
    assert isinstance(result, float)
    assert result == pytest.approx(expected, abs=1e-7)
    assert 0.1 <= result <= 1.0


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, 0.05, 1.01, -1, 0.0, 2, True, "0.5", None, [0.5], b"1"]
)
def test_validate_granularity_rejects(value: object) -> None:
    with pytest.raises(GranularityError):
        validate_granularity(value)


def test_granularity_error_is_a_value_error_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"\[0.1, 1.0\]"):
        validate_granularity(3.0)


def test_as_granularity_tuple_rejects_empty_and_bad_members() -> None:
    assert as_granularity_tuple([0.2, 1]) == (0.2, 1.0)
    with pytest.raises(GranularityError):
        as_granularity_tuple([])
    with pytest.raises(GranularityError):
        as_granularity_tuple([0.2, math.nan])


def test_point_and_box_validation() -> None:
    assert Point(1.5, 2.0).label == 1
    with pytest.raises(InvalidPromptError, match="label"):
        Point(1, 2, 2)
    with pytest.raises(InvalidPromptError, match="finite"):
        Point(math.nan, 2)
    with pytest.raises(InvalidPromptError, match="x0 < x1"):
        Box(10, 10, 5, 20)
    with pytest.raises(InvalidPromptError):
        Box(0, 0, 10, math.inf)


def test_prompts_need_a_point_or_a_box() -> None:
    with pytest.raises(InvalidPromptError, match="empty"):
        Prompts()
    with pytest.raises(InvalidPromptError, match="empty"):
        Prompts.from_arrays(np.zeros((0, 2)), np.zeros((0,)))
    assert Prompts(box=Box(0, 0, 1, 1)).points == ()


def test_prompts_from_arrays() -> None:
    prompts = Prompts.from_arrays([[1, 2], [3.5, 4]], [1, 0], box=[0, 0, 10, 10])
    np.testing.assert_array_equal(prompts.coords_array(), [[1, 2], [3.5, 4]])
    assert prompts.coords_array().dtype == np.float32
    np.testing.assert_array_equal(prompts.labels_array(), [1, 0])
    assert prompts.box == Box(0, 0, 10, 10)


@pytest.mark.parametrize(
    ("coords", "labels", "match"),
    [
        ([[1, 2]], [2], "labels"),
        ([[1, 2]], [-1], "labels"),
        ([[1, 2]], [0.5], "labels"),
        ([[1, 2, 3]], [1], r"\(N, 2\)"),
        ([[1, 2]], [1, 0], "shape"),
        ([[1, 2]], None, "required"),
    ],
)
def test_prompts_from_arrays_rejects(coords: object, labels: object, match: str) -> None:
    with pytest.raises(InvalidPromptError, match=match):
        Prompts.from_arrays(coords, labels)


def test_check_inside_accepts_edges_and_rejects_outside() -> None:
    Prompts.from_arrays([[0, 0], [640, 480]], [1, 1]).check_inside(480, 640)
    with pytest.raises(InvalidPromptError, match="outside"):
        Prompts.from_arrays([[641, 10]], [1]).check_inside(480, 640)
    with pytest.raises(InvalidPromptError, match="outside"):
        Prompts.from_arrays([[-0.5, 10]], [1]).check_inside(480, 640)
    with pytest.raises(InvalidPromptError, match="box"):
        Prompts(box=Box(10, 10, 700, 20)).check_inside(480, 640)
