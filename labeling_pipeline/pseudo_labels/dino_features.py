"""DINOv2 / DINOv3 patch features through `transformers`, from weights in a local folder.

The image is resized with torch (bilinear, antialias, aspect kept, long side `long_side`, sides
rounded up to the patch size), scaled to [0, 1] and normalised with the ImageNet mean and std,
as the official DINO preprocessing does; transformers' image processors are not used because
they import torchvision. The model's last-layer normalised tokens are returned without the CLS
and register tokens, as an (h, w, C) grid.

The image is fed as **RGB**. The official UnSAMv2 pseudo-label script feeds the OpenCV BGR
array to DINOv3 (a bug: the network was trained on RGB); this implementation does not copy it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from labeling_pipeline.pseudo_labels.errors import FeatureExtractorError
from labeling_pipeline.pseudo_labels.features import PatchFeatures, check_image, resized_hw

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_TYPES = {
    "dinov3": ("dinov3_vit",),
    "dinov2": ("dinov2", "dinov2_with_registers"),
}


class TransformersViTExtractor:
    """Patch tokens of a transformers DINO ViT (`DINOv3ViTModel`, `Dinov2Model`, ...).

    Args:
        model: The loaded model, in eval mode, on `device`.
        name: Label used in logs and summaries.
        long_side: Resize target of the long side in pixels.
        device: Torch device of the model.
    """

    def __init__(self, model: Any, *, name: str, long_side: int = 768, device: str = "cpu"):
        config = model.config
        patch = config.patch_size
        self.patch_size = int(patch if isinstance(patch, int) else patch[0])
        self.num_prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.model = model
        self.name = name
        self.long_side = long_side
        self.device = device

    def extract(self, image: npt.NDArray[np.uint8]) -> PatchFeatures:
        """Return (h, w, hidden) float32 last-layer patch tokens of an (H, W, 3) uint8 RGB image."""
        import torch
        import torch.nn.functional as F  # noqa: N812

        check_image(image)
        height, width = image.shape[:2]
        size = resized_hw(height, width, long_side=self.long_side, patch_size=self.patch_size)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
            x = x.permute(2, 0, 1)[None].float() / 255.0
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            dtype = next(self.model.parameters()).dtype
            tokens = self.model(pixel_values=((x - mean) / std).to(dtype)).last_hidden_state
            grid = size[0] // self.patch_size, size[1] // self.patch_size
            patches = tokens[0, self.num_prefix_tokens :].float()
            if patches.shape[0] != grid[0] * grid[1]:
                raise FeatureExtractorError(
                    f"{self.name}: expected {grid[0] * grid[1]} patch tokens, "
                    f"got {patches.shape[0]}"
                )
            features = patches.reshape(grid[0], grid[1], -1).cpu().numpy().astype(np.float32)
        return PatchFeatures(features, self.patch_size, (height, width), size)


def _model_class(model_type: str) -> Any:
    import transformers

    classes = {
        "dinov3_vit": "DINOv3ViTModel",
        "dinov2": "Dinov2Model",
        "dinov2_with_registers": "Dinov2WithRegistersModel",
    }
    return getattr(transformers, classes[model_type])


def load_dino_extractor(
    kind: str, path: Path, *, device: str = "cpu", long_side: int = 768
) -> TransformersViTExtractor:
    """Load a DINOv2/DINOv3 model saved with `save_pretrained` in `path` (no hub access).

    Args:
        kind: "dinov2" or "dinov3".
        path: Folder holding ``config.json`` and the weights (``model.safetensors``).
        device: Torch device.
        long_side: Resize target of the long side.

    Raises:
        FeatureExtractorError: missing folder or config, a model of another kind, or weights
            that do not load.
    """
    if kind not in MODEL_TYPES:
        raise FeatureExtractorError(f"unknown DINO kind {kind!r}; use dinov2 or dinov3")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise FeatureExtractorError(
            f"{kind} weights folder {path} has no config.json (download the model and save it "
            "with save_pretrained, or point to the folder holding config.json)"
        )
    try:
        model_type = str(json.loads(config_path.read_text()).get("model_type", ""))
    except (OSError, ValueError) as exc:
        raise FeatureExtractorError(f"cannot read {config_path}: {exc}") from None
    if model_type not in MODEL_TYPES[kind]:
        raise FeatureExtractorError(
            f"{path} holds a model of type {model_type!r}, not {kind} "
            f"(expected one of {MODEL_TYPES[kind]})"
        )
    try:
        model = _model_class(model_type).from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise FeatureExtractorError(f"cannot load {kind} weights from {path}: {exc}") from None
    model = model.to(device).eval()
    logger.info("loaded %s (%s) from %s on %s", kind, model_type, path, device)
    return TransformersViTExtractor(
        model, name=f"{kind}:{path.name}", long_side=long_side, device=device
    )


def dinov3_vit_config(size: str = "vitb16") -> Any:
    """Return a `DINOv3ViTConfig` with the real sizes of ViT-S/16 ("vits16") or ViT-B/16 ("vitb16").

    Both have patch 16, 4 register tokens, 12 layers, RoPE; use it to build random-weight models
    for benchmarks (`DINOv3ViTModel(config)`).
    """
    from transformers import DINOv3ViTConfig

    sizes = {"vits16": (384, 6, 1536), "vitb16": (768, 12, 3072)}
    if size not in sizes:
        raise FeatureExtractorError(f"unknown DINOv3 size {size!r}; use one of {sorted(sizes)}")
    hidden, heads, intermediate = sizes[size]
    return DINOv3ViTConfig(
        patch_size=16,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        num_hidden_layers=12,
        num_register_tokens=4,
    )
