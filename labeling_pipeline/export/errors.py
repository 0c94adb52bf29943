"""Errors of the export and prediction-import package."""

from __future__ import annotations

from core_model.errors import UnSAMv2Error


class ExportError(UnSAMv2Error, ValueError):
    """An export or import cannot run (unreadable input, bad options, unwritable output)."""
