"""Exception types of the core library.

Every error raised on purpose by `core_model` derives from `UnSAMv2Error`, so adapters can map
the whole family to a client error in one place. Input errors also derive from `ValueError`.
"""

from __future__ import annotations


class UnSAMv2Error(Exception):
    """Base class of all errors raised on purpose by this project."""


class InvalidImageError(UnSAMv2Error, ValueError):
    """The image has the wrong type, dtype, shape or size."""


class InvalidPromptError(UnSAMv2Error, ValueError):
    """Point or box prompts are empty, malformed, or outside the image."""


class GranularityError(UnSAMv2Error, ValueError):
    """A granularity value is not a finite number inside the supported range."""


class InvalidMaskError(UnSAMv2Error, ValueError):
    """A mask or an encoded mask (COCO RLE, brush RLE, polygon) is malformed."""


class ModelConfigError(UnSAMv2Error, ValueError):
    """A model variant name or a model YAML file cannot be used."""


class CheckpointError(UnSAMv2Error):
    """A checkpoint file cannot be read or is of an unknown kind."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's tensors do not match the model (missing, unexpected or mis-shaped keys)."""


class DependencyError(UnSAMv2Error, ImportError):
    """A required package is missing or was installed in a way that cannot work."""


class VideoReadError(UnSAMv2Error, ValueError):
    """A video or frame folder cannot be read: not a video, truncated, undecodable or too large."""


class FrameIndexError(UnSAMv2Error, IndexError):
    """A frame index is negative or past the last frame of the clip."""
