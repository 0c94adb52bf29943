"""Training settings: the official UnSAMv2 recipe as defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from core_model.errors import UnSAMv2Error

Trainable = Literal["official", "decoder", "all"]
Mode = Literal["granularity", "sam2-multimask"]


class TrainConfigError(UnSAMv2Error, ValueError):
    """A training setting is unknown or out of range."""


@dataclass(frozen=True)
class LoRASettings:
    """LoRA on the mask decoder's attention projections (q, k, v, out), through peft."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        steps: Optimiser steps.
        images_per_step: Images per step (the official run used 2 per GPU).
        max_masks_per_image: Masks sampled per image per step (30 officially).
        correction_clicks: Clicks after the first, each from the previous prediction's errors.
        sampler: "graco" (farthest-from-boundary region of the larger error, as the released
            weights were trained) or "uniform" (uniform over the error region).
        mode: "granularity" (the granularity token and output mask) or "sam2-multimask"
            (SAM-2's three masks, no granularity input: the baseline).
        trainable: "official" (granularity modules + LoRA), "decoder" (the whole mask decoder
            and prompt encoder), "all" (encoder too: from-scratch demonstrations).
        lora: LoRA settings (used with trainable="official"), or None for no LoRA.
        focal_weight: Weight of the sigmoid focal loss (alpha 0.25, gamma 2).
        dice_weight: Weight of the dice loss.
        iou_weight: Weight of the L1 loss between predicted and actual IoU.
        lr: Initial learning rate (cosine decay to `min_lr`).
        min_lr: Final learning rate.
        weight_decay: AdamW weight decay.
        loss_at_image_size: Upsample logits to the model's input size for the loss (official);
            False computes it at the low resolution (4x cheaper per side).
        cache_embeddings: Compute each image's features once (frozen encoder only).
        human_share: Target share of human (accepted) masks among sampled masks when an image
            has both kinds (None: sample uniformly, the natural mix).
        checkpoint_every: Save a resumable checkpoint every this many steps.
        seed: Seed of every random choice.
        device: Torch device.
    """

    steps: int = 2000
    images_per_step: int = 2
    max_masks_per_image: int = 30
    correction_clicks: int = 3
    sampler: Literal["graco", "uniform"] = "graco"
    mode: Mode = "granularity"
    trainable: Trainable = "official"
    lora: LoRASettings | None = field(default_factory=LoRASettings)
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    lr: float = 1e-4
    min_lr: float = 1e-5
    weight_decay: float = 1e-5
    loss_at_image_size: bool = True
    cache_embeddings: bool = True
    human_share: float | None = None
    checkpoint_every: int = 200
    seed: int = 1234
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive = ("steps", "images_per_step", "max_masks_per_image", "checkpoint_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise TrainConfigError(f"{name} must be >= 1")
        if self.correction_clicks < 0:
            raise TrainConfigError("correction_clicks must be >= 0")
        if self.sampler not in ("graco", "uniform"):
            raise TrainConfigError(f"sampler must be graco or uniform, got {self.sampler!r}")
        if self.mode not in ("granularity", "sam2-multimask"):
            raise TrainConfigError(f"mode must be granularity or sam2-multimask, got {self.mode!r}")
        if self.trainable not in ("official", "decoder", "all"):
            raise TrainConfigError(
                f"trainable must be official, decoder or all, got {self.trainable!r}"
            )
        if self.human_share is not None and not 0.0 <= self.human_share <= 1.0:
            raise TrainConfigError("human_share must lie in [0, 1]")
        if not 0 < self.min_lr <= self.lr:
            raise TrainConfigError("need 0 < min_lr <= lr")

    @property
    def encoder_frozen(self) -> bool:
        """Whether image features can be cached."""
        return self.trainable != "all"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (stored with runs and model versions)."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, **overrides: Any) -> TrainConfig:
        """Build from a (partial) mapping as stored in job parameters; unknown keys raise."""
        data = {**dict(values or {}), **overrides}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainConfigError(f"unknown training settings {unknown}")
        lora = data.get("lora", "default")
        if isinstance(lora, Mapping):
            data["lora"] = LoRASettings(**lora)
        elif lora == "default":
            data.pop("lora", None)
        try:
            return replace(cls(), **data)
        except TypeError as exc:
            raise TrainConfigError(str(exc)) from None
