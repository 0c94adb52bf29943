"""Model variants and model YAML loading, without Hydra's global state.

A variant is SAM-2.1's packaged architecture YAML (read from the installed `sam2` package by
path) plus the UnSAMv2 settings of the official `unsamv2_small.yaml`: granularity modules
(Fourier dim 128, temperature 100) and single-mask SAM outputs. A YAML path may be one of our
configs, the official `unsamv2_small.yaml`, or a stock SAM-2.1 config; all are built as
`UnSAMv2Model` (LoRA settings are ignored here: LoRA is merged at checkpoint loading).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core_model.errors import DependencyError, ModelConfigError

MODEL_CLASS = "core_model.modeling.unsamv2.UnSAMv2Model"
_STOCK_MODEL_CLASS = "sam2.modeling.sam2_base.SAM2Base"
_MODEL_CLASSES = (MODEL_CLASS, _STOCK_MODEL_CLASS)

# What the official inference YAML changes against stock SAM-2.1, plus the three overrides that
# `sam2.build_sam.build_sam2` always adds (they matter only for the stock multimask fallback).
UNSAMV2_SETTINGS: Mapping[str, Any] = {
    "_target_": MODEL_CLASS,
    "temperature": 100,
    "fourier_dim": 128,
    "multimask_output_in_sam": False,
    "multimask_output_for_tracking": False,
    "use_multimask_token_for_obj_ptr": False,
    "sam_mask_decoder_extra_args": {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    },
}

# A Hiera-T shrunk to build in ~0.1 s with random weights while keeping the real hidden size
# (256), hence the real prompt-encoder, mask-decoder, granularity and LoRA shapes. Valid only for
# random weights; image size 256.
_TEST_TINY_SETTINGS: Mapping[str, Any] = {
    "image_size": 256,
    "num_maskmem": 2,
    "image_encoder": {
        "trunk": {
            "embed_dim": 16,
            "num_heads": 1,
            "stages": [1, 1, 2, 1],
            # a global-attention block must not be a q-pool block (first block of stages 2-4)
            "global_att_blocks": [3],
            "window_pos_embed_bkg_spatial_size": [4, 4],
            "window_spec": [8, 4, 4, 4],
        },
        "neck": {"backbone_channel_list": [128, 64, 32, 16]},
    },
    "memory_attention": {
        "num_layers": 1,
        "layer": {
            "dim_feedforward": 256,
            "self_attention": {"feat_sizes": [16, 16]},
            "cross_attention": {"feat_sizes": [16, 16]},
        },
    },
}


@dataclass(frozen=True)
class ModelVariant:
    """A packaged model variant.

    Attributes:
        name: Variant name accepted by `build_model`.
        sam2_config: Architecture YAML inside the installed `sam2` package.
        sam2_checkpoint: File name of Meta's SAM-2.1 checkpoint for this architecture, if any.
        settings: Overrides merged into the YAML's `model` section.
        description: One line for listings.
    """

    name: str
    sam2_config: str
    sam2_checkpoint: str | None
    settings: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


MODEL_VARIANTS: Mapping[str, ModelVariant] = {
    v.name: v
    for v in (
        ModelVariant(
            "tiny",
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            "sam2.1_hiera_tiny.pt",
            description="SAM-2.1 Hiera-T + granularity modules",
        ),
        ModelVariant(
            "small",
            "configs/sam2.1/sam2.1_hiera_s.yaml",
            "sam2.1_hiera_small.pt",
            description="SAM-2.1 Hiera-S + granularity modules (the official UnSAMv2 base)",
        ),
        ModelVariant(
            "base_plus",
            "configs/sam2.1/sam2.1_hiera_b+.yaml",
            "sam2.1_hiera_base_plus.pt",
            description="SAM-2.1 Hiera-B+ + granularity modules",
        ),
        ModelVariant(
            "large",
            "configs/sam2.1/sam2.1_hiera_l.yaml",
            "sam2.1_hiera_large.pt",
            description="SAM-2.1 Hiera-L + granularity modules",
        ),
        ModelVariant(
            "test-tiny",
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            None,
            _TEST_TINY_SETTINGS,
            description="tiny random-weight model for tests and demos (image size 256)",
        ),
    )
}


def sam2_package_dir() -> Path:
    """Return the installed `sam2` package folder without importing it (its import sets up Hydra).

    Raises:
        DependencyError: sam2 is not installed.
    """
    spec = importlib.util.find_spec("sam2")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            "the 'sam2' package is not installed; install it with "
            "`SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0` "
            "(or run `make install`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def load_model_config(config: str | Path) -> tuple[Any, str]:
    """Load the model section of a variant or a YAML file, ready for `hydra.utils.instantiate`.

    Args:
        config: A variant name from `MODEL_VARIANTS`, or the path of a YAML file whose `model`
            section describes a SAM-2 / UnSAMv2 model.

    Returns:
        (resolved OmegaConf `model` section, variant name or the YAML file's stem).

    Raises:
        ModelConfigError: unknown variant, unreadable YAML, or no usable `model` section.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    name = str(config)
    variant = MODEL_VARIANTS.get(name)
    try:
        if variant is not None:
            base = _load_yaml(sam2_package_dir() / variant.sam2_config, config)
            # packaged variants: our settings win over stock SAM-2.1
            layers = [base.model, UNSAMV2_SETTINGS, variant.settings]
        else:
            path = Path(config)
            if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
                known = ", ".join(MODEL_VARIANTS)
                raise ModelConfigError(
                    f"unknown model config {name!r}: give a variant ({known}) or a YAML file path"
                )
            base = _load_yaml(path, config)
            name = path.stem
            # user YAML: its values win; ours only fill what it leaves out
            layers = [UNSAMV2_SETTINGS, base.model]
        model_cfg: Any = OmegaConf.merge(*(dict(layer) for layer in layers))
        target = model_cfg.get("_target_")
        if target not in _MODEL_CLASSES:
            raise ModelConfigError(
                f"model config {config!s}: model._target_ must be one of {_MODEL_CLASSES}, "
                f"got {target!r}"
            )
        model_cfg._target_ = MODEL_CLASS
        # LoRA is merged into the weights when a checkpoint is loaded; the official YAML's
        # `lora_rank` only selects the training-time wrapper, which this model does not use.
        model_cfg.pop("lora_rank", None)
        OmegaConf.resolve(model_cfg)
    except OmegaConfBaseException as exc:
        raise ModelConfigError(f"cannot use model config {config!s}: {exc}") from exc
    return model_cfg, name


def _load_yaml(path: Path, config: str | Path) -> Any:
    from omegaconf import DictConfig, OmegaConf
    from yaml import YAMLError  # type: ignore[import-untyped]

    try:
        loaded = OmegaConf.load(path)
    except (OSError, YAMLError) as exc:
        raise ModelConfigError(f"cannot read model config {config!s}: {exc}") from exc
    if not isinstance(loaded, DictConfig) or not isinstance(loaded.get("model"), DictConfig):
        raise ModelConfigError(f"model config {config!s} has no 'model' section")
    return loaded
