"""Build a feature extractor from a spec (``color``, ``dinov3:PATH``, ``dinov2:PATH``, ``auto``).

``auto:WEIGHTS_DIR`` picks the best DINO model present in ``WEIGHTS_DIR/features``
(`labeling_pipeline.model_files.hub.best_feature_spec`); with none it falls back to ``color``
and the extractor's `warning` says so (logged here, written into every pseudo-label JSON and
result by `pipeline`).

The factory lives apart from `features` (the shared types) so that the extractors can import the
types without an import cycle.
"""

from __future__ import annotations

import logging
from pathlib import Path

from labeling_pipeline.pseudo_labels.color_features import ColorTextureExtractor
from labeling_pipeline.pseudo_labels.errors import FeatureExtractorError
from labeling_pipeline.pseudo_labels.features import FeatureExtractor

logger = logging.getLogger(__name__)


def resolve_feature_spec(spec: str) -> tuple[str, str]:
    """Return (concrete spec, warning): ``auto[:WEIGHTS_DIR]`` becomes the best model present.

    Other specs come back unchanged with an empty warning.
    """
    kind, _, argument = spec.partition(":")
    if kind.strip().lower() != "auto":
        return spec, ""
    if not argument:
        return "color", "features 'auto' without a weights folder: using the 'color' extractor"
    from labeling_pipeline.model_files.hub import best_feature_spec

    return best_feature_spec(Path(argument).expanduser())


def features_status(spec: str) -> dict[str, str]:
    """Return what a spec resolves to, for reports: ``{"spec", "extractor", "warning"}``.

    ``warning`` is empty unless ``auto`` falls back to the weight-free ``color`` extractor; it is
    the line `build_feature_extractor` logs, so `/health` and job reports say the same.
    """
    resolved, warning = resolve_feature_spec(spec)
    return {"spec": spec, "extractor": resolved, "warning": warning}


def build_feature_extractor(
    spec: str, *, device: str = "cpu", long_side: int | None = None
) -> FeatureExtractor:
    """Build an extractor from a spec: ``color[:PATCH]``, ``dinov3:PATH``, ``dinov2:PATH``, auto.

    Args:
        spec: ``color[:PATCH]`` (weight-free), ``dinov3:PATH`` or ``dinov2:PATH``
            (a local transformers folder), or ``auto:WEIGHTS_DIR`` (see the module docstring;
            a fallback to ``color`` sets the extractor's `warning`).
        device: Torch device for the transformers models ("cpu", "cuda", "cuda:1", ...).
        long_side: Resize target of the long side; defaults to 768 for DINO and 384 for color.

    Raises:
        FeatureExtractorError: unknown kind, missing path, or a folder that cannot be loaded.
    """
    spec, warning = resolve_feature_spec(spec)
    if warning:
        logger.warning("%s", warning)
    kind, _, argument = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "color":
        patch = 8
        if argument:
            try:
                patch = int(argument)
            except ValueError:
                raise FeatureExtractorError(
                    f"color patch size must be an integer, got {argument!r}"
                ) from None
        extractor = ColorTextureExtractor(patch_size=patch, long_side=long_side or 384)
        extractor.warning = warning
        return extractor
    if kind in ("dinov2", "dinov3"):
        if not argument:
            raise FeatureExtractorError(f"{kind} needs a weights folder: {kind}:PATH")
        from labeling_pipeline.pseudo_labels.dino_features import load_dino_extractor

        return load_dino_extractor(
            kind, Path(argument).expanduser(), device=device, long_side=long_side or 768
        )
    raise FeatureExtractorError(
        f"unknown feature extractor {spec!r}: use color, dinov3:PATH, dinov2:PATH or auto:DIR"
    )
