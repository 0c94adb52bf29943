"""Per-mask losses of SAM / UnSAMv2 training (focal, dice, IoU regression)."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss, mean over pixels: (N, H, W) logits and {0, 1} targets -> (N,)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft dice loss: (N, H, W) -> (N,)."""
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    numerator = 2 * (prob * target).sum(1)
    denominator = prob.sum(1) + target.sum(1)
    return 1 - (numerator + 1) / (denominator + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of the binarised prediction (logits > 0) with the target: (N,), no gradient."""
    with torch.no_grad():
        pred = (logits > 0).flatten(1)
        gt = target.flatten(1) > 0.5
        intersection = (pred & gt).sum(1).float()
        union = (pred | gt).sum(1).float()
        return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def mask_losses(
    logits: torch.Tensor, target: torch.Tensor, predicted_iou: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Return per-mask focal, dice and IoU-L1 losses, each (N,)."""
    actual = mask_iou(logits, target)
    return {
        "focal": focal_loss(logits, target),
        "dice": dice_loss(logits, target),
        "iou": (predicted_iou.float() - actual).abs(),
    }
