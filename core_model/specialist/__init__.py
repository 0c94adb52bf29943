"""The task specialist: a prompt-free segmenter of one project's task (after SAM2-UNeXT).

A frozen SAM 2 Hiera trunk with an adapter before every block, a frozen DINOv2 at a lower
resolution, a dense glue layer and a U-Net decoder (`model`); variants by Hiera size, DINOv2 size
and resolutions (`config`); base weights and the specialist file (`weights`); prediction,
regions and the uncertainty signal (`predict`).
"""

from __future__ import annotations

from core_model.specialist.config import (
    CPU_VARIANT,
    DEFAULT_VARIANT,
    SPECIALIST_VARIANTS,
    SpecialistVariant,
    get_variant,
)
from core_model.specialist.model import (
    SpecialistModel,
    build_specialist,
    parameter_counts,
    trainable_state_dict,
)
from core_model.specialist.predict import (
    Region,
    predict_probabilities,
    regions,
    uncertain_share,
)
from core_model.specialist.weights import (
    BaseRef,
    BaseWeightsChangedError,
    LoadedSpecialist,
    build_with_bases,
    load_dino_weights,
    load_hiera_weights,
    load_specialist,
    save_specialist,
)

__all__ = [
    "CPU_VARIANT",
    "DEFAULT_VARIANT",
    "SPECIALIST_VARIANTS",
    "BaseRef",
    "BaseWeightsChangedError",
    "LoadedSpecialist",
    "Region",
    "SpecialistModel",
    "SpecialistVariant",
    "build_specialist",
    "build_with_bases",
    "get_variant",
    "load_dino_weights",
    "load_hiera_weights",
    "load_specialist",
    "parameter_counts",
    "predict_probabilities",
    "regions",
    "save_specialist",
    "trainable_state_dict",
    "uncertain_share",
]
