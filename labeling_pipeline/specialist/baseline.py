"""A plain U-Net baseline: the specialist's decoder on a small trainable conv encoder.

It has the same decoder (four up blocks, 1x1 head, output x2) and the same stage strides (4, 8,
16, 32) as the specialist, but no SAM 2 or DINOv2 features: every weight is trained from
scratch. Benchmarks train it on the same data to show what the encoders add.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from core_model.specialist.model import PIXEL_MEAN, PIXEL_STD, Decoder


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PlainUNet(nn.Module):
    """Conv encoder (strides 4, 8, 16, 32) + the specialist decoder; binary or C classes.

    Args:
        channels: Decoder width (the specialist variant's `channels`).
        num_classes: Output channels.
        widths: Encoder stage widths.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(
        self,
        channels: int,
        num_classes: int = 1,
        widths: tuple[int, int, int, int] = (32, 64, 96, 128),
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _stage(3, widths[0] // 2, 2), _stage(widths[0] // 2, widths[0], 2)
        )
        self.stages = nn.ModuleList(_stage(widths[i], widths[i + 1], 2) for i in range(3))
        self.reduce = nn.ModuleList(nn.Conv2d(w, channels, 1) for w in widths)
        self.decoder = Decoder(channels, num_classes)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return (B, num_classes, S, S) logits for (B, 3, S, S) RGB in [0, 1]."""
        x = self.stem((images - self.pixel_mean) / self.pixel_std)
        features = [x]
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        fused = [reduce(f) for reduce, f in zip(self.reduce, features, strict=True)]
        logits: torch.Tensor = self.decoder(fused)
        return F.interpolate(logits, scale_factor=2.0, mode="bilinear")
