"""Argument types shared by CLI commands."""

from __future__ import annotations

import argparse


def parse_size(text: str, *, minimum: int = 1) -> tuple[int, int]:
    """Parse "WIDTHxHEIGHT" into (width, height), each at least `minimum`.

    Raises:
        argparse.ArgumentTypeError: not two integers joined by "x", or a side below `minimum`.
    """
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if width < minimum or height < minimum:
        raise argparse.ArgumentTypeError(f"size must be at least {minimum}x{minimum}, got {text!r}")
    return width, height
