"""UnSAMv2 core library: model building, checkpoints, cached prediction, masks.

Importing the package is cheap: torch and sam2 load only when a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_model": "core_model.build",
    "MODEL_VARIANTS": "core_model.config",
    "GranularityPredictor": "core_model.predictor",
    "LRUEmbeddingCache": "core_model.cache",
    "EmbeddingCache": "core_model.cache",
    "WholeImageSegmenter": "core_model.whole_image",
    "WholeImageConfig": "core_model.whole_image",
    "GeneratedMask": "core_model.whole_image",
    "save_official_checkpoint": "core_model.checkpoint",
    "save_finetuned_checkpoint": "core_model.checkpoint",
    "UnSAMv2Model": "core_model.modeling.unsamv2",
    "Point": "core_model.types",
    "Box": "core_model.types",
    "Prompts": "core_model.types",
    "MaskPrediction": "core_model.types",
    "ImageEmbedding": "core_model.types",
    "validate_granularity": "core_model.types",
    "UnSAMv2Error": "core_model.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'core_model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
