"""`build_model`: a model variant or YAML, optionally with a checkpoint, on a device."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from core_model.config import load_model_config
from core_model.errors import DependencyError, ModelConfigError

if TYPE_CHECKING:
    import torch

    from core_model.modeling.unsamv2 import UnSAMv2Model

logger = logging.getLogger(__name__)


def build_model(
    config: str | Path,
    checkpoint: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    strict: bool = True,
) -> UnSAMv2Model:
    """Build an UnSAMv2 model, load weights, move it to `device` and set eval mode.

    Args:
        config: A variant of `core_model.config.MODEL_VARIANTS` ("tiny", "small", "base_plus",
            "large", "test-tiny") or the path of a model YAML (ours, the official
            `unsamv2_small.yaml`, or a stock SAM-2.1 config).
        checkpoint: An official UnSAMv2 checkpoint, a plain SAM-2.1 checkpoint, or one of this
            project's fine-tuned files; None keeps the random initialisation (tests, demos).
        device: Torch device for the model.
        strict: Raise on any checkpoint/model key mismatch (default). If False, unmatched
            tensors are logged and skipped.

    Returns:
        The model in eval mode with all parameters frozen (training unfreezes what it trains);
        ``model.info`` tells the version, checkpoint kind and granularity mode.

    Raises:
        ModelConfigError: unknown variant, bad YAML, or a config that does not instantiate.
        CheckpointError / CheckpointMismatchError: see `core_model.checkpoint`.
        DependencyError: sam2 is missing.
    """
    import torch

    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelConfigError(f"unknown device {device!r}: {exc}") from exc
    model_cfg, name = load_model_config(config)
    model = _instantiate(model_cfg, name)

    from core_model.checkpoint import load_checkpoint_into
    from core_model.modeling.unsamv2 import ModelInfo

    if checkpoint is None:
        info = ModelInfo(
            name, f"{name}-random-{uuid.uuid4().hex[:12]}", "random", None, "granularity"
        )
    else:
        loaded = load_checkpoint_into(model, checkpoint, strict=strict)
        info = ModelInfo(
            name,
            f"{name}-{loaded.kind}-{loaded.sha256[:12]}",
            loaded.kind,
            loaded.sha256,
            loaded.granularity_mode,
        )
        if loaded.granularity_mode == "sam2-multimask":
            logger.warning(
                "%s is a plain SAM-2.1 checkpoint without granularity modules: masks will be "
                "chosen among SAM-2's three multimask outputs by granularity",
                checkpoint,
            )
    model.info = info
    model.requires_grad_(False)
    built: UnSAMv2Model = model.to(torch_device).eval()
    return built


def _instantiate(model_cfg: object, name: str) -> UnSAMv2Model:
    try:
        from hydra.utils import instantiate

        from core_model.modeling.unsamv2 import UnSAMv2Model
    except ImportError as exc:
        raise DependencyError(
            f"cannot import the model code ({exc}); install sam2 with "
            "`SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0`"
        ) from exc
    try:
        model = instantiate(model_cfg, _recursive_=True)
    except Exception as exc:  # hydra wraps every constructor error in its own type
        raise ModelConfigError(f"cannot build model {name!r}: {exc}") from exc
    if not isinstance(model, UnSAMv2Model):
        raise ModelConfigError(f"model config {name!r} did not produce an UnSAMv2Model")
    return model
