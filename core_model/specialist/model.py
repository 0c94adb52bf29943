"""The task specialist network: adapted Hiera + frozen DINOv2 + dense glue + U-Net decoder.

Layout (after SAM2-UNeXT): the SAM 2 Hiera trunk is frozen, and every block gets a trainable
residual bottleneck adapter on its input (`AdaptedBlock`: ``x + GELU(W2 GELU(W1 x))`` then the
block). DINOv2 (`transformers.Dinov2Model`) is frozen without adapters and sees the same
normalised image resized to `dino_size`; its last token map (before the final norm) is aligned by
four 1x1 convs to the four Hiera stage widths, resized bilinearly to each stage, concatenated
with the stage and reduced to `channels` by 1x1 convs (the glue). Four U-Net up blocks (the first
without a skip) end at half the input side; a 1x1 head gives the logits, upsampled x2.

The frozen parts are `trunk` (minus the adapters) and `dino`; what training changes is
`trainable_state_dict` (adapters, glue, decoder and its BatchNorm buffers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.overrides import TorchFunctionMode

from core_model.specialist.config import SpecialistVariant, get_variant

#: ImageNet statistics, used by both SAM 2 and DINOv2 (RGB, values in [0, 1]).
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
#: Prefixes of the frozen tensors in the model's state dict.
FROZEN_PREFIXES = ("trunk.", "dino.")


class Adapter(nn.Module):
    """Residual bottleneck on a block's input: Linear(dim, r), GELU, Linear(r, dim), GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        for layer in (self.down, self.up):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return `x` (B, H, W, dim) plus the adapter's output."""
        return x + F.gelu(self.up(F.gelu(self.down(x))))


class AdaptedBlock(nn.Module):
    """A frozen Hiera block with a trainable adapter on its input (the block is not modified)."""

    def __init__(self, block: nn.Module, hidden: int) -> None:
        super().__init__()
        self.block = block
        self.adapter = Adapter(cast(int, block.dim), hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the adapter, then the block, on (B, H, W, C) tokens."""
        out: torch.Tensor = self.block(self.adapter(x))
        return out


class _ConvBnRelu(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Concatenate a skip (if any), upsample x2 bilinearly, then two Conv3x3-BN-ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_ConvBnRelu(cin, cin // 2), _ConvBnRelu(cin // 2, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """Return (B, cout, 2h, 2w) from (B, c, h, w) and an optional (B, c', h', w') skip."""
        if skip is not None:
            dy, dx = x.shape[-2] - skip.shape[-2], x.shape[-1] - skip.shape[-1]
            skip = F.pad(skip, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            x = torch.cat([x, skip], dim=1)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        out: torch.Tensor = self.convs(x)
        return out


class Glue(nn.Module):
    """Dense glue: align the DINOv2 map to each Hiera stage, concatenate, reduce to `channels`."""

    def __init__(self, dino_dim: int, stage_dims: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.align = nn.ModuleList(nn.Conv2d(dino_dim, d, 1) for d in stage_dims)
        self.reduce = nn.ModuleList(nn.Conv2d(2 * d, channels, 1) for d in stage_dims)

    def forward(self, stages: list[torch.Tensor], dino: torch.Tensor) -> list[torch.Tensor]:
        """Fuse (B, C_i, H_i, W_i) Hiera stages with the (B, D, h, w) DINOv2 map."""
        fused = []
        for feature, align, reduce in zip(stages, self.align, self.reduce, strict=True):
            extra = F.interpolate(align(dino), size=feature.shape[-2:], mode="bilinear")
            fused.append(reduce(torch.cat([feature, extra], dim=1)))
        return fused


class Decoder(nn.Module):
    """Four up blocks (deepest without a skip) and a 1x1 head to `out_channels` logits."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.deepest = UpBlock(channels, channels)
        self.ups = nn.ModuleList(UpBlock(2 * channels, channels) for _ in range(3))
        self.head = nn.Conv2d(channels, out_channels, 1)

    def forward(self, fused: list[torch.Tensor]) -> torch.Tensor:
        """Return (B, out_channels, H/2, W/2) logits from four fused maps (shallow first)."""
        x = self.deepest(fused[3])
        for up, skip in zip(self.ups, (fused[2], fused[1], fused[0]), strict=True):
            x = up(x, skip)
        out: torch.Tensor = self.head(x)
        return out


class SpecialistModel(nn.Module):
    """The specialist network of one variant.

    Args:
        variant: Its shapes.
        num_classes: Output channels: 1 for a binary (sigmoid) specialist, else C >= 2 classes
            with channel 0 the background (softmax).
        trunk: A built `sam2` Hiera trunk of `variant.hiera`.
        dino: A built `transformers.Dinov2Model` of `variant.dino`.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(
        self, variant: SpecialistVariant, num_classes: int, trunk: nn.Module, dino: nn.Module
    ) -> None:
        super().__init__()
        self.variant = variant
        self.num_classes = num_classes
        blocks = cast(nn.ModuleList, trunk.blocks)
        trunk.blocks = nn.ModuleList(AdaptedBlock(b, variant.adapter_dim) for b in blocks)
        self.trunk = trunk
        self.dino: Any = dino
        self.glue = Glue(variant.dino.hidden_size, variant.hiera.stage_dims, variant.channels)
        self.decoder = Decoder(variant.channels, num_classes)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)
        for name, param in self.named_parameters():
            param.requires_grad = not is_frozen_key(name)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Map (B, 3, H, W) RGB in [0, 1] to the encoders' normalised input."""
        return (images - self.pixel_mean) / self.pixel_std

    def dino_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (B, D, h, w) last DINOv2 token map for normalised (B, 3, H, W) input."""
        size = self.variant.dino_size
        small = F.interpolate(x, size=(size, size), mode="bilinear")
        with torch.no_grad():
            tokens: torch.Tensor = self.dino.encoder(self.dino.embeddings(small)).last_hidden_state
        side = size // self.variant.dino.patch_size
        patches = tokens[:, tokens.shape[1] - side * side :]
        return patches.transpose(1, 2).reshape(x.shape[0], -1, side, side)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return (B, num_classes, S, S) logits for (B, 3, S, S) RGB in [0, 1], S = `sam_size`."""
        x = self.normalise(images)
        stages: list[torch.Tensor] = self.trunk(x)
        fused = self.glue(list(stages), self.dino_features(x))
        logits: torch.Tensor = self.decoder(fused)
        return F.interpolate(logits, scale_factor=2.0, mode="bilinear")

    def train(self, mode: bool = True) -> SpecialistModel:
        """Set training mode; the frozen encoders always stay in eval mode."""
        super().train(mode)
        self.dino.eval()
        for block in cast(nn.ModuleList, self.trunk.blocks):
            cast(AdaptedBlock, block).block.eval()
        return self


def is_frozen_key(name: str) -> bool:
    """Return True for a state-dict key of a frozen base tensor (not an adapter)."""
    return name.startswith(FROZEN_PREFIXES) and ".adapter." not in name


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return what training changes: adapters, glue, decoder, decoder BatchNorm buffers."""
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not is_frozen_key(k) and not k.startswith("pixel_")
    }


def parameter_counts(model: SpecialistModel) -> dict[str, int]:
    """Count parameters per part: trunk, dino (frozen), adapters, glue, decoder, trainable."""
    counts = dict.fromkeys(("trunk", "dino", "adapters", "glue", "decoder"), 0)
    for name, param in model.named_parameters():
        part = name.split(".", 1)[0]
        if ".adapter." in name:
            part = "adapters"
        counts[part] += param.numel()
    counts["trainable"] = counts["adapters"] + counts["glue"] + counts["decoder"]
    return counts


class _LinspaceOnCpu(TorchFunctionMode):
    """Keep `torch.linspace` on the CPU: Hiera reads its drop-path rates with `.item()`."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.linspace and kwargs.get("device") is None:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def _build_trunk(variant: SpecialistVariant) -> nn.Module:
    from sam2.modeling.backbones.hieradet import Hiera

    spec = variant.hiera
    with _LinspaceOnCpu():
        trunk: nn.Module = Hiera(
            embed_dim=spec.embed_dim,
            num_heads=spec.num_heads,
            stages=spec.stages,
            global_att_blocks=spec.global_att_blocks,
            window_spec=spec.window_spec,
            window_pos_embed_bkg_spatial_size=spec.window_pos_embed_bkg_spatial_size,
        )
    return trunk


def dino_config(variant: SpecialistVariant) -> Any:
    """Return the `transformers.Dinov2Config` of the variant's DINOv2."""
    from transformers import Dinov2Config

    spec = variant.dino
    return Dinov2Config(
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        mlp_ratio=spec.mlp_ratio,
        patch_size=spec.patch_size,
        image_size=spec.image_size,
    )


def build_specialist(
    variant: str | SpecialistVariant,
    *,
    num_classes: int = 1,
    device: str | torch.device = "cpu",
    seed: int | None = 0,
) -> SpecialistModel:
    """Build a specialist with random weights (load bases with `core_model.specialist.weights`).

    Args:
        variant: Variant name or object.
        num_classes: 1 (binary) or C >= 2 (softmax; channel 0 is the background).
        device: Where to build; ``"meta"`` allocates nothing (for counting parameters).
        seed: Seeds the random weights so a random-base specialist can be rebuilt exactly;
            None leaves the global generator alone.

    Raises:
        ModelConfigError: unknown variant or a bad `num_classes`.
    """
    from transformers import Dinov2Model

    from core_model.errors import ModelConfigError

    spec = get_variant(variant)
    if num_classes < 1:
        raise ModelConfigError(f"num_classes must be >= 1, got {num_classes}")
    with _seeded(seed), torch.device(device):
        trunk = _build_trunk(spec)
        dino = Dinov2Model(dino_config(spec))
        model = SpecialistModel(spec, num_classes, trunk, dino)
    return model.eval()


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
