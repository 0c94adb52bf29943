"""The shared WIDTHxHEIGHT argument type."""

from __future__ import annotations

import argparse

import pytest

from ml_backend.cli.arg_types import parse_size


def test_parse_size_reads_width_then_height() -> None:
    assert parse_size("1024x576") == (1024, 576)
    assert parse_size("64X48") == (64, 48)


@pytest.mark.parametrize("text", ["1024", "ax5", "1x2x3", "", "0x5", "-3x4"])
def test_parse_size_refuses_malformed_or_empty_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="size must be"):
        parse_size(text)


def test_parse_size_minimum() -> None:
    assert parse_size("64x64", minimum=64) == (64, 64)
    with pytest.raises(argparse.ArgumentTypeError, match="at least 64x64"):
        parse_size("63x64", minimum=64)
