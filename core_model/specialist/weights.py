"""Base weights of a specialist (SAM 2 Hiera trunk, DINOv2) and the specialist file itself.

- Hiera: a SAM 2.0 or 2.1 checkpoint (``{"model": state_dict}`` or a bare state dict); only the
  ``image_encoder.trunk.*`` tensors are read, strictly (every trunk tensor present, shapes equal).
- DINOv2: a `transformers` ``save_pretrained`` folder (``config.json`` + ``model.safetensors``) or
  a timm ``model.safetensors`` (``vit_*_patch14_dinov2``), whose names are mapped to the
  `transformers` layout (fused ``qkv`` split into query/key/value; timm has no ``mask_token``,
  which only masked pre-training uses: it is set to zeros).
- A specialist file holds the trained tensors (`trainable_state_dict`), the variant, the labels
  and a reference (path, sha256) to each base, or the seed of random bases. Loading it checks the
  bases' sha256, so a specialist never runs on changed base weights.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core_model.checkpoint import atomic_torch_save, check_keys, file_sha256
from core_model.errors import CheckpointError, CheckpointMismatchError
from core_model.specialist.model import SpecialistModel, build_specialist, trainable_state_dict

logger = logging.getLogger(__name__)

SPECIALIST_FORMAT = "unsamv2-specialist/1"
TRUNK_PREFIX = "image_encoder.trunk."
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_TIMM_NAMES = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attn.proj.weight": "attention.output.dense.weight",
    "attn.proj.bias": "attention.output.dense.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_TIMM_TOP = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}


#: Attention names of saved `transformers` DINOv2 files and of newer in-memory modules.
_ATTENTION_ALIASES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


class BaseWeightsChangedError(CheckpointError):
    """A specialist's base weights file is missing or no longer the one it was trained on."""


@dataclass(frozen=True)
class BaseRef:
    """Where a base's weights came from.

    Attributes:
        path: Weights file or folder; None for random weights.
        sha256: sha256 of the weights file (of ``model.safetensors`` for a folder).
        seed: Seed of random weights (when `path` is None).
    """

    path: str | None = None
    sha256: str | None = None
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"path": self.path, "sha256": self.sha256, "seed": self.seed}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> BaseRef:
        """Read `to_dict` output."""
        seed = value.get("seed")
        return cls(value.get("path"), value.get("sha256"), None if seed is None else int(seed))


def _torch_read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or non-weights files
        raise CheckpointError(
            f"cannot read {path} as plain torch weights ({exc.__class__.__name__})"
        ) from exc


def _unwrapped_trunk_state(model: SpecialistModel) -> dict[str, torch.Tensor]:
    """Frozen trunk tensors of `model` under their SAM 2 names (without the adapter wrapper)."""
    out = {}
    for key, value in model.trunk.state_dict().items():
        if ".adapter." in key:
            continue
        out[key.replace(".block.", ".", 1) if key.startswith("blocks.") else key] = value
    return out


def load_hiera_weights(model: SpecialistModel, path: str | Path) -> BaseRef:
    """Load the trunk of a SAM 2.0/2.1 checkpoint into `model.trunk`, strictly.

    Raises:
        CheckpointError: unreadable file, or no ``image_encoder.trunk.*`` tensors in it.
        CheckpointMismatchError: trunk of another Hiera size (names the first difference).
    """
    path = Path(path)
    obj = _torch_read(path)
    state = obj.get("model", obj) if isinstance(obj, Mapping) else {}
    trunk = {
        k[len(TRUNK_PREFIX) :]: v
        for k, v in state.items()
        if isinstance(k, str) and k.startswith(TRUNK_PREFIX) and isinstance(v, torch.Tensor)
    }
    if not trunk:
        raise CheckpointError(
            f"{path} has no {TRUNK_PREFIX}* tensors: expected a SAM 2.0 or 2.1 checkpoint "
            "(e.g. sam2.1_hiera_large.pt)"
        )
    expected = _unwrapped_trunk_state(model)
    check_keys(expected, trunk, source=f"Hiera trunk of {path} (variant {model.variant.name})")
    wrapped = {(re.sub(r"^blocks\.(\d+)\.", r"blocks.\1.block.", k)): v for k, v in trunk.items()}
    model.trunk.load_state_dict(wrapped, strict=False)
    return BaseRef(str(path), file_sha256(path))


def timm_to_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm DINOv2 ViT state dict to `transformers.Dinov2Model` names.

    Raises:
        CheckpointMismatchError: a name that has no counterpart (e.g. a register-token model).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _TIMM_TOP:
            out[_TIMM_TOP[key]] = value
            continue
        match = _TIMM_BLOCK.match(key)
        prefix = f"encoder.layer.{match.group(1)}." if match else ""
        rest = match.group(2) if match else key
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"{prefix}attention.attention.{name}.{kind}"] = part.contiguous()
        elif match and rest in _TIMM_NAMES:
            out[prefix + _TIMM_NAMES[rest]] = value
        else:
            raise CheckpointMismatchError(
                f"timm DINOv2 tensor {key!r} has no counterpart in transformers' Dinov2Model "
                "(only plain vit_*_patch14_dinov2 checkpoints are supported)"
            )
    return out


def _model_names(
    state: Mapping[str, torch.Tensor], model_keys: Mapping[str, object]
) -> dict[str, torch.Tensor]:
    """Rename attention tensors to the naming the installed `transformers` uses in memory."""
    out = {}
    for key, value in state.items():
        name = key
        if name not in model_keys:
            for old, new in _ATTENTION_ALIASES:
                for a, b in ((old, new), (new, old)):
                    if a in name and name.replace(a, b) in model_keys:
                        name = name.replace(a, b)
        out[name] = value
    return out


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"cannot read {path} as safetensors ({exc})") from exc


def _check_dino_config(folder: Path, model: SpecialistModel) -> None:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder} has no config.json: expected a save_pretrained folder")
    config = json.loads(config_path.read_text())
    spec = model.variant.dino
    want = {"hidden_size": spec.hidden_size, "num_hidden_layers": spec.num_layers}
    got = {k: config.get(k) for k in want}
    if got != want:
        raise CheckpointMismatchError(
            f"DINOv2 in {folder} has {got}, variant {model.variant.name} needs {want}"
        )


def load_dino_weights(model: SpecialistModel, path: str | Path) -> BaseRef:
    """Load DINOv2 from a ``save_pretrained`` folder or a timm safetensors file, strictly.

    Raises:
        CheckpointError: missing or unreadable files.
        CheckpointMismatchError: another DINOv2 size or unknown tensor names.
    """
    path = Path(path)
    if path.is_dir():
        _check_dino_config(path, model)
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{path} has no model.safetensors")
        state = _read_safetensors(weights)
        state = {k.removeprefix("dinov2."): v for k, v in state.items()}
        allowed: frozenset[str] = frozenset()
    elif path.is_file():
        weights = path
        state = timm_to_transformers(_read_safetensors(path))
        state.setdefault(
            "embeddings.mask_token", torch.zeros_like(model.dino.embeddings.mask_token)
        )
        allowed = frozenset()
    else:
        raise CheckpointError(f"DINOv2 weights not found: {path}")
    expected = model.dino.state_dict()
    state = _model_names(state, expected)
    check_keys(
        expected,
        state,
        source=f"DINOv2 weights {path} (variant {model.variant.name})",
        allowed_missing=allowed,
    )
    model.dino.load_state_dict(state, strict=True)
    return BaseRef(str(path), file_sha256(weights))


def _verify(ref: BaseRef, what: str) -> Path:
    if ref.path is None:
        raise BaseWeightsChangedError(f"{what} base has neither a path nor a seed")
    path = Path(ref.path)
    weights = path / "model.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise BaseWeightsChangedError(f"{what} base weights {weights} are gone; retrain")
    if ref.sha256 and file_sha256(weights) != ref.sha256:
        raise BaseWeightsChangedError(
            f"{what} base weights {weights} changed since the specialist was trained "
            f"(sha256 {ref.sha256[:12]}... expected); retrain it on the new weights"
        )
    return path


def build_with_bases(
    variant: str,
    *,
    hiera: BaseRef,
    dino: BaseRef,
    num_classes: int = 1,
    verify: bool = True,
) -> SpecialistModel:
    """Build a specialist and load its bases (random bases: rebuilt from their seed).

    Raises:
        BaseWeightsChangedError: a base file is gone or its sha256 differs (`verify`).
    """
    seeds = [ref.seed for ref in (hiera, dino) if ref.path is None and ref.seed is not None]
    seed = seeds[0] if seeds else 0
    model = build_specialist(variant, num_classes=num_classes, seed=seed)
    if hiera.path is not None:
        load_hiera_weights(model, _verify(hiera, "Hiera") if verify else hiera.path)
    if dino.path is not None:
        load_dino_weights(model, _verify(dino, "DINOv2") if verify else dino.path)
    return model


def save_specialist(
    path: str | Path,
    model: SpecialistModel,
    *,
    hiera: BaseRef,
    dino: BaseRef,
    labels: Sequence[str],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write the trained tensors, the variant, labels and base references (atomically)."""
    payload = {
        "format": SPECIALIST_FORMAT,
        "variant": model.variant.name,
        "num_classes": model.num_classes,
        "labels": list(labels),
        "bases": {"hiera": hiera.to_dict(), "dino": dino.to_dict()},
        "state": trainable_state_dict(model),
        "metadata": json.dumps(dict(metadata or {}), default=str),
    }
    return atomic_torch_save(payload, path)


@dataclass
class LoadedSpecialist:
    """A specialist ready to predict.

    Attributes:
        model: The network (eval mode, CPU).
        labels: Label names; binary: one label, multi-class: labels of channels 1..C-1.
        hiera: Hiera base reference.
        dino: DINOv2 base reference.
        metadata: What training recorded.
    """

    model: SpecialistModel
    labels: list[str]
    hiera: BaseRef
    dino: BaseRef
    metadata: dict[str, Any]


def load_specialist(path: str | Path, *, verify_bases: bool = True) -> LoadedSpecialist:
    """Rebuild a saved specialist over its bases.

    Raises:
        CheckpointError: not a specialist file.
        BaseWeightsChangedError: a base changed or is gone.
        CheckpointMismatchError: trained tensors do not fit the variant.
    """
    path = Path(path)
    obj = _torch_read(path)
    if not isinstance(obj, Mapping) or obj.get("format") != SPECIALIST_FORMAT:
        raise CheckpointError(f"{path} is not a specialist file ({SPECIALIST_FORMAT})")
    bases = obj["bases"]
    hiera, dino = BaseRef.from_dict(bases["hiera"]), BaseRef.from_dict(bases["dino"])
    model = build_with_bases(
        str(obj["variant"]),
        hiera=hiera,
        dino=dino,
        num_classes=int(obj["num_classes"]),
        verify=verify_bases,
    )
    state = dict(obj["state"])
    check_keys(trainable_state_dict(model), state, source=f"specialist {path}")
    model.load_state_dict(state, strict=False)
    return LoadedSpecialist(
        model.eval(), list(obj["labels"]), hiera, dino, json.loads(obj.get("metadata") or "{}")
    )
