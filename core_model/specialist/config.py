"""Variants of the task specialist: (Hiera size, DINOv2 size, input resolutions) plus head width.

A variant fixes every shape of the model, so a saved specialist names only its variant. The
default is the reference setting (Hiera-L at 1024 px, DINOv2-L at 448 px); the cheaper ones trade
accuracy for CPU time; ``test-tiny`` builds in well under a second with random weights and is
meant for tests only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from core_model.errors import ModelConfigError


@dataclass(frozen=True)
class HieraSpec:
    """Shape of a SAM 2 Hiera trunk (the arguments of `sam2.modeling.backbones.hieradet.Hiera`).

    Attributes:
        name: Size name ("tiny", "small", "base_plus", "large", "test").
        embed_dim: Channels of the first stage (doubled at each later stage).
        num_heads: Heads of the first stage.
        stages: Blocks per stage.
        global_att_blocks: Blocks with global attention.
        window_spec: Window size per stage.
        window_pos_embed_bkg_spatial_size: Size of the background position embedding.
    """

    name: str
    embed_dim: int
    num_heads: int
    stages: tuple[int, int, int, int]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, int, int, int] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)

    @property
    def stage_dims(self) -> tuple[int, int, int, int]:
        """Channels of the four stage outputs."""
        d = self.embed_dim
        return (d, 2 * d, 4 * d, 8 * d)


@dataclass(frozen=True)
class DinoSpec:
    """Shape of a DINOv2 ViT (a `transformers.Dinov2Config`).

    Attributes:
        name: Size name ("small", "base", "large", "test").
        hidden_size: Token width.
        num_layers: Transformer blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP width over token width.
        patch_size: Patch side in pixels.
        image_size: Pre-training image side (sets the stored position-embedding grid).
    """

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_ratio: int = 4
    patch_size: int = 14
    image_size: int = 518


HIERA_SPECS: Mapping[str, HieraSpec] = {
    "tiny": HieraSpec("tiny", 96, 1, (1, 2, 7, 2), (5, 7, 9)),
    "small": HieraSpec("small", 96, 1, (1, 2, 11, 2), (7, 10, 13)),
    "base_plus": HieraSpec(
        "base_plus", 112, 2, (2, 3, 16, 3), (12, 16, 20), (8, 4, 14, 7), (14, 14)
    ),
    "large": HieraSpec("large", 144, 2, (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8)),
    # a global-attention block must not be a q-pool block (first block of stages 2-4)
    "test": HieraSpec("test", 16, 1, (1, 1, 2, 1), (3,), (8, 4, 4, 4), (4, 4)),
}

DINO_SPECS: Mapping[str, DinoSpec] = {
    "small": DinoSpec("small", 384, 12, 6),
    "base": DinoSpec("base", 768, 12, 12),
    "large": DinoSpec("large", 1024, 24, 16),
    "test": DinoSpec("test", 32, 2, 2, image_size=56),
}


@dataclass(frozen=True)
class SpecialistVariant:
    """One buildable specialist.

    Attributes:
        name: Variant name accepted by `build_specialist`.
        hiera: Hiera trunk shape.
        dino: DINOv2 shape.
        sam_size: Square input side of the Hiera trunk in pixels (a multiple of 32).
        dino_size: Square input side of DINOv2 in pixels (a multiple of its patch size).
        adapter_dim: Bottleneck width of the adapter before each Hiera block.
        channels: Width of the glue output and of the decoder.
        description: One line for listings.
    """

    name: str
    hiera: HieraSpec
    dino: DinoSpec
    sam_size: int
    dino_size: int
    adapter_dim: int = 32
    channels: int = 128
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.sam_size <= 0 or self.sam_size % 32:
            raise ModelConfigError(
                f"sam_size must be a positive multiple of 32, got {self.sam_size}"
            )
        if self.dino_size <= 0 or self.dino_size % self.dino.patch_size:
            raise ModelConfigError(
                f"dino_size must be a positive multiple of {self.dino.patch_size}, "
                f"got {self.dino_size}"
            )


def _variant(
    hiera: str, dino: str, sam_size: int, dino_size: int, **extra: object
) -> SpecialistVariant:
    name = f"hiera-{hiera}{sam_size}_dinov2-{dino}{dino_size}"
    return SpecialistVariant(
        name=name,
        hiera=HIERA_SPECS[hiera],
        dino=DINO_SPECS[dino],
        sam_size=sam_size,
        dino_size=dino_size,
        **extra,  # type: ignore[arg-type]
    )


#: The reference setting: Hiera-L at 1024 px, DINOv2-L at 448 px (~5.96 M trainable parameters).
DEFAULT_VARIANT = "hiera-large1024_dinov2-large448"
#: The cheapest variant meant for real (pretrained) weights on a CPU.
CPU_VARIANT = "hiera-small512_dinov2-small224"

SPECIALIST_VARIANTS: Mapping[str, SpecialistVariant] = {
    v.name: v
    for v in (
        _variant("large", "large", 1024, 448, description="reference setting (GPU)"),
        _variant("large", "base", 1024, 448, description="Hiera-L with DINOv2-B (GPU)"),
        _variant("base_plus", "base", 1024, 448, description="Hiera-B+ with DINOv2-B (GPU)"),
        _variant("small", "small", 512, 224, description="Hiera-S / DINOv2-S at 512/224 (CPU)"),
        _variant("tiny", "small", 512, 224, description="Hiera-T / DINOv2-S at 512/224 (CPU)"),
        _variant("tiny", "small", 256, 224, description="Hiera-T / DINOv2-S at 256/224 (CPU)"),
        SpecialistVariant(
            "test-tiny",
            HIERA_SPECS["test"],
            DINO_SPECS["test"],
            sam_size=128,
            dino_size=56,
            adapter_dim=8,
            channels=16,
            description="tiny random-weight model for tests",
        ),
        SpecialistVariant(
            "bench-tiny",
            HIERA_SPECS["test"],
            DINO_SPECS["test"],
            sam_size=256,
            dino_size=112,
            adapter_dim=8,
            channels=32,
            description="tiny random-weight model at 256 px for CPU benchmarks",
        ),
    )
}


def get_variant(name: str | SpecialistVariant) -> SpecialistVariant:
    """Return a variant by name ("default" is `DEFAULT_VARIANT`).

    Raises:
        ModelConfigError: unknown name (the message lists the known ones).
    """
    if isinstance(name, SpecialistVariant):
        return name
    key = DEFAULT_VARIANT if name == "default" else name
    try:
        return SPECIALIST_VARIANTS[key]
    except KeyError:
        known = ", ".join(SPECIALIST_VARIANTS)
        raise ModelConfigError(f"unknown specialist variant {name!r}; known: {known}") from None
