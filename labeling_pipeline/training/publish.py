"""Write what a training run trained: the fine-tuned format, or an official checkpoint file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from core_model.checkpoint import (
    granularity_state_dict,
    lora_state_dict,
    save_finetuned_checkpoint,
    save_official_checkpoint,
)
from labeling_pipeline.training.config import TrainConfig


def write_trained_checkpoint(
    model: nn.Module,
    path: Path,
    *,
    config: TrainConfig,
    base_checkpoint: Path | None,
    metadata: Mapping[str, Any],
) -> Path:
    """Write what was trained.

    With the official recipe on a base file: the small fine-tuned format (granularity modules
    and LoRA, plus a reference to the base). Otherwise (the decoder or everything trained, or
    no base file): the full model in the official layout.
    """
    if config.trainable == "official" and base_checkpoint is not None:
        return save_finetuned_checkpoint(
            path,
            base_checkpoint=base_checkpoint,
            granularity_state=granularity_state_dict(model),
            lora_tensors=lora_state_dict(model),
            metadata=metadata,
        )
    lora = config.lora.rank if config.lora is not None else 8
    return save_official_checkpoint(model, path, lora_rank=lora)
