"""Errors of the pseudo-label pipeline (narrow subclasses of the project's `UnSAMv2Error`)."""

from __future__ import annotations

from core_model.errors import UnSAMv2Error


class FeatureExtractorError(UnSAMv2Error, ValueError):
    """A feature-extractor spec is malformed, or its weights folder cannot be loaded."""


class ProposalError(UnSAMv2Error, ValueError):
    """External proposals (detector outputs or human masks) are malformed."""


class PseudoLabelOutputError(UnSAMv2Error):
    """A pseudo-label JSON file cannot be written or read."""
