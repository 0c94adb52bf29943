"""Which parameters train: granularity modules + LoRA (official), the decoder, or everything."""

from __future__ import annotations

import logging

from torch import nn

from core_model.checkpoint import LORA_TARGETS, is_granularity_key
from core_model.modeling.unsamv2 import UnSAMv2Model
from labeling_pipeline.training.config import TrainConfig

logger = logging.getLogger(__name__)


def add_lora(model: UnSAMv2Model, config: TrainConfig) -> None:
    """Inject peft LoRA into the mask decoder's two-way transformer.

    Scoped to that submodule: its 28 attention projections get adapters; memory attention and
    every other Linear stay untouched.
    """
    from peft import LoraConfig, inject_adapter_in_model

    assert config.lora is not None
    inject_adapter_in_model(
        LoraConfig(
            r=config.lora.rank,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=list(LORA_TARGETS),
        ),
        model.sam_mask_decoder.transformer,
    )


def prepare_for_training(model: UnSAMv2Model, config: TrainConfig) -> list[nn.Parameter]:
    """Freeze, add LoRA and unfreeze per `config.trainable`; return the trainable parameters.

    The model is put in train mode (dropout of the granularity MLP and LoRA on), except a frozen
    image encoder, which stays in eval mode.
    """
    model.requires_grad_(False)
    if config.trainable == "official":
        if config.lora is not None:
            add_lora(model, config)
        for name, param in model.named_parameters():
            if is_granularity_key(name) or ".lora_" in name:
                param.requires_grad_(True)
    elif config.trainable == "decoder":
        model.sam_prompt_encoder.requires_grad_(True)
        model.sam_mask_decoder.requires_grad_(True)
    else:
        model.requires_grad_(True)
    model.train()
    if config.encoder_frozen:
        model.image_encoder.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    logger.info(
        "training %d tensors, %d parameters (%s)",
        len(params),
        sum(p.numel() for p in params),
        config.trainable,
    )
    return params
