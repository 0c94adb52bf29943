"""Checkpoint kinds, strict loading, LoRA merging and writing.

Three kinds are read, detected from their content:

* **official**: an UnSAMv2 release, ``torch.load(f)["model"]`` holding the full model with LoRA
  unmerged (``P.original_layer.weight``, ``P.lora_A`` (r, in), ``P.lora_B`` (out, r), scaling
  alpha / r = 2). LoRA is merged at load: ``W = W0 + 2 * B @ A`` (exact at inference, where
  LoRA dropout is off).
* **sam2**: a plain SAM-2.1 checkpoint; the 14 granularity tensors are absent and the model
  falls back to SAM-2's multimask outputs.
* **finetuned**: this project's format: a reference to an official or SAM-2.1 base file (path
  relative to this file, with its sha256), the 14 granularity tensors and LoRA deltas in the
  official naming, plus metadata.

Every mismatch between checkpoint and model raises `CheckpointMismatchError` naming the first
missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core_model.errors import CheckpointError, CheckpointMismatchError
from core_model.modeling.unsamv2 import GranularityMode

logger = logging.getLogger(__name__)

FINETUNED_FORMAT = "unsamv2-backend.finetuned"
FINETUNED_FORMAT_VERSION = 1
OFFICIAL_LORA_SCALING = 2.0  # the official model sets alpha = 2 * rank
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
LORA_SCOPE = "sam_mask_decoder.transformer."
GRANULARITY_PREFIXES = (
    "sam_prompt_encoder.granularity_embedding.",
    "sam_prompt_encoder.fourier_embedder.",
    "sam_mask_decoder.gra_token.",
    "sam_mask_decoder.gra_output_token_mlp.",
)
_ORIGINAL = ".original_layer."
_LORA_A, _LORA_B = ".lora_A", ".lora_B"

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What `load_checkpoint_into` loaded.

    Attributes:
        kind: "official", "sam2" or "finetuned".
        sha256: sha256 of the file that was given.
        granularity_mode: "granularity", or "sam2-multimask" for a plain SAM-2.1 checkpoint.
    """

    kind: str
    sha256: str
    granularity_mode: GranularityMode


def file_sha256(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def is_granularity_key(key: str) -> bool:
    """Return True for the 14 granularity-module tensors of the state dict."""
    return key.startswith(GRANULARITY_PREFIXES)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or pickled-object files
        raise CheckpointError(f"cannot read checkpoint {path}: {_read_failure(exc)}") from exc


def _read_failure(exc: Exception) -> str:
    """Say in one line why `torch.load(weights_only=True)` refused a file.

    torch's own message for a file holding Python objects advises loading it with
    ``weights_only=False`` (arbitrary code execution); checkpoints are never loaded that way.
    """
    text = str(exc)
    if "weights only load failed" in text.lower():
        if "Unsupported global" in text:
            return "it holds Python objects besides tensors, so it is not a plain weights file"
        return "not a torch checkpoint, or damaged (its content cannot be read as weights)"
    detail = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"not a torch checkpoint, or damaged ({exc.__class__.__name__}" + (
        f": {detail})" if detail else ")"
    )


def _state_dict_of(obj: Any, path: Path) -> StateDict:
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(
            f"{path} is not a model checkpoint (expected a state dict or a dict with 'model')"
        )
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: the state dict holds non-tensor values")
    return dict(state)


def merge_lora(state: Mapping[str, torch.Tensor], *, scaling: float) -> StateDict:
    """Fold LoRA pairs into their base weights.

    Args:
        state: State dict with ``P.weight`` (or ``P.original_layer.weight``) and LoRA pairs
            ``P.lora_A`` (r, in) / ``P.lora_B`` (out, r).
        scaling: alpha / r (2.0 for official checkpoints).

    Returns:
        A new state dict without LoRA keys, ``P.weight += scaling * B @ A`` computed in float32.

    Raises:
        CheckpointMismatchError: a LoRA half without its partner, or shapes that do not fit.
    """
    merged = {k.replace(_ORIGINAL, "."): v for k, v in state.items()}
    prefixes = {k[: -len(_LORA_A)] for k in merged if k.endswith(_LORA_A)}
    prefixes |= {k[: -len(_LORA_B)] for k in merged if k.endswith(_LORA_B)}
    for prefix in sorted(prefixes):
        a, b = merged.pop(prefix + _LORA_A, None), merged.pop(prefix + _LORA_B, None)
        weight = merged.get(prefix + ".weight")
        if a is None or b is None or weight is None:
            raise CheckpointMismatchError(
                f"LoRA for {prefix} is incomplete: lora_A, lora_B and weight are all required"
            )
        if b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(weight.shape):
            raise CheckpointMismatchError(
                f"LoRA for {prefix}: lora_B {tuple(b.shape)} @ lora_A {tuple(a.shape)} does not "
                f"fit weight {tuple(weight.shape)}"
            )
        delta = scaling * (b.float() @ a.float())
        merged[prefix + ".weight"] = (weight.float() + delta).to(weight.dtype)
    return merged


def check_keys(
    model_state: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    *,
    source: str,
    allowed_missing: frozenset[str] = frozenset(),
) -> None:
    """Raise `CheckpointMismatchError` unless `given` matches `model_state` key for key.

    Args:
        model_state: The model's state dict (names and shapes expected).
        given: Tensors to load.
        source: What `given` came from, for the message.
        allowed_missing: Model keys that may be absent from `given`.
    """
    missing = [k for k in model_state if k not in given and k not in allowed_missing]
    unexpected = [k for k in given if k not in model_state]
    shaped = [k for k in given if k in model_state and given[k].shape != model_state[k].shape]
    if not (missing or unexpected or shaped):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), first {missing[0]!r}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}")
    if shaped:
        k = shaped[0]
        parts.append(
            f"{len(shaped)} mis-shaped tensor(s), first {k!r}: checkpoint "
            f"{tuple(given[k].shape)} vs model {tuple(model_state[k].shape)}"
        )
    raise CheckpointMismatchError(
        f"{source} does not match the model: "
        + "; ".join(parts)
        + " (is it a checkpoint of another model size?)"
    )


def load_checkpoint_into(
    model: nn.Module, path: str | Path, *, strict: bool = True
) -> LoadedCheckpoint:
    """Load any supported checkpoint kind into `model` (in place).

    Args:
        model: A freshly built `UnSAMv2Model`.
        path: Checkpoint file.
        strict: If False, mismatching keys are logged and skipped instead of raising.

    Returns:
        The kind, file hash and granularity mode.

    Raises:
        CheckpointError: unreadable or unknown file; a finetuned file whose base is missing or
            changed.
        CheckpointMismatchError: keys or shapes do not match (with `strict`).
    """
    path = Path(path)
    sha256 = file_sha256(path) if path.is_file() else ""
    obj = _read(path)
    if isinstance(obj, Mapping) and obj.get("format") == FINETUNED_FORMAT:
        _load_finetuned(model, obj, path, strict=strict)
        return LoadedCheckpoint("finetuned", sha256, "granularity")
    kind = _load_base(model, _state_dict_of(obj, path), path, strict=strict)
    mode: GranularityMode = "granularity" if kind == "official" else "sam2-multimask"
    return LoadedCheckpoint(kind, sha256, mode)


def _load_base(model: nn.Module, state: StateDict, path: Path, *, strict: bool) -> str:
    """Load an official or plain SAM-2.1 state dict; return its kind."""
    kind = "official" if any(is_granularity_key(k) for k in state) else "sam2"
    merged = merge_lora(state, scaling=OFFICIAL_LORA_SCALING)
    model_state = model.state_dict()
    allowed = (
        frozenset(k for k in model_state if is_granularity_key(k))
        if kind == "sam2"
        else frozenset()
    )
    source = f"{kind} checkpoint {path}"
    if strict:
        check_keys(model_state, merged, source=source, allowed_missing=allowed)
    else:
        bad = [k for k in merged if k not in model_state or merged[k].shape != model_state[k].shape]
        if bad:
            logger.warning(
                "%s: skipping %d unmatched tensor(s), first %s", source, len(bad), bad[0]
            )
        merged = {k: v for k, v in merged.items() if k not in bad}
    model.load_state_dict(merged, strict=False)
    return kind


def _load_finetuned(model: nn.Module, obj: Mapping[str, Any], path: Path, *, strict: bool) -> None:
    version = obj.get("format_version")
    if version != FINETUNED_FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported finetuned format version {version!r}")
    base = obj.get("base") or {}
    base_path = Path(str(base.get("checkpoint", "")))
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    if not base_path.is_file():
        raise CheckpointError(f"{path}: its base checkpoint {base_path} does not exist")
    expected_sha = base.get("sha256")
    if expected_sha and file_sha256(base_path) != expected_sha:
        raise CheckpointError(
            f"{path}: base checkpoint {base_path} changed (sha256 differs from the recorded one)"
        )
    _load_base(model, _state_dict_of(_read(base_path), base_path), base_path, strict=strict)

    model_state = model.state_dict()
    granularity = dict(obj.get("granularity") or {})
    expected = {k: v for k, v in model_state.items() if is_granularity_key(k)}
    check_keys(expected, granularity, source=f"granularity modules of {path}")
    lora = obj.get("lora") or {}
    tensors = dict(lora.get("tensors") or {})
    targets = {k[: -len(_LORA_A)] + ".weight" for k in tensors if k.endswith(_LORA_A)}
    for key in targets:
        if key not in model_state or not key.startswith(LORA_SCOPE):
            raise CheckpointMismatchError(f"{path}: LoRA targets {key!r}, not a decoder projection")
    partial = {k: model_state[k] for k in targets}
    merged = merge_lora({**partial, **tensors}, scaling=float(lora.get("scaling", 2.0)))
    model.load_state_dict({**granularity, **merged}, strict=False)


def lora_target_names(model: nn.Module) -> list[str]:
    """Return the module paths LoRA applies to: the 28 attention projections of the decoder."""
    names = []
    for name, module in model.named_modules():
        if not name.startswith(LORA_SCOPE) or name.rsplit(".", 1)[-1] not in LORA_TARGETS:
            continue
        if isinstance(module, nn.Linear) or hasattr(module, "base_layer"):
            names.append(name)
    return names


def lora_state_dict(model: nn.Module) -> StateDict:
    """Return a peft-adapted model's LoRA tensors in the official naming and scaling.

    Keys ``P.lora_A`` (r, in) and ``P.lora_B`` (out, r) for each adapted projection ``P``, with
    B rescaled so that the official alpha / r = 2 reproduces the adapter (empty without peft).
    """
    out: StateDict = {}
    modules = dict(model.named_modules())
    for name in lora_target_names(model):
        module = modules[name]
        if not hasattr(module, "base_layer"):
            continue
        state = {f"{name}.{k}": v.detach().cpu().clone() for k, v in module.state_dict().items()}
        taken: StateDict = {}
        _take_peft(module, name, state, taken)
        out.update({k: v for k, v in taken.items() if _ORIGINAL not in k})
    return out


def official_state_dict(model: nn.Module, *, lora_rank: int = 8, seed: int = 0) -> StateDict:
    """Return the model's tensors in the official release layout (LoRA unmerged).

    Projections that carry a peft LoRA adapter keep it (rescaled to the official alpha / r = 2).
    Plain projections are written as ``original_layer`` with a fresh LoRA pair that changes
    nothing (B = 0) and can be trained further (A = 0.01 * N(0, 1), seeded), as the official
    initialisation does.
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    out: StateDict = {}
    targets = set(lora_target_names(model))
    modules = dict(model.named_modules())
    for name in sorted(targets):
        module = modules[name]
        if hasattr(module, "base_layer"):
            _take_peft(module, name, state, out)
            continue
        weight = state.pop(f"{name}.weight")
        out[f"{name}{_ORIGINAL}weight"] = weight
        if f"{name}.bias" in state:
            out[f"{name}{_ORIGINAL}bias"] = state.pop(f"{name}.bias")
        out[f"{name}{_LORA_A}"] = (
            torch.randn(lora_rank, weight.shape[1], generator=generator) * 0.01
        )
        out[f"{name}{_LORA_B}"] = torch.zeros(weight.shape[0], lora_rank)
    out.update(state)
    return out


def _take_peft(module: nn.Module, name: str, state: StateDict, out: StateDict) -> None:
    adapters = list(getattr(module, "lora_A", {}))
    if len(adapters) != 1:
        raise CheckpointError(f"{name}: expected exactly one LoRA adapter, found {adapters}")
    adapter = adapters[0]
    scaling = float(module.scaling[adapter])  # type: ignore[index]
    for part in ("weight", "bias"):
        key = f"{name}.base_layer.{part}"
        if key in state:
            out[f"{name}{_ORIGINAL}{part}"] = state.pop(key)
    out[f"{name}{_LORA_A}"] = state.pop(f"{name}.lora_A.{adapter}.weight")
    out[f"{name}{_LORA_B}"] = state.pop(f"{name}.lora_B.{adapter}.weight") * (
        scaling / OFFICIAL_LORA_SCALING
    )


def save_official_checkpoint(
    model: nn.Module, path: str | Path, *, lora_rank: int = 8, seed: int = 0
) -> Path:
    """Write ``{"model": state}`` in the official UnSAMv2 layout, atomically.

    See `official_state_dict` for the LoRA layout. Returns the path written.
    """
    return atomic_torch_save(
        {"model": official_state_dict(model, lora_rank=lora_rank, seed=seed)}, path
    )


def granularity_state_dict(model: nn.Module) -> StateDict:
    """Return copies of the 14 granularity-module tensors."""
    return {
        k: v.detach().cpu().clone() for k, v in model.state_dict().items() if is_granularity_key(k)
    }


def save_finetuned_checkpoint(
    path: str | Path,
    *,
    base_checkpoint: str | Path,
    granularity_state: Mapping[str, torch.Tensor],
    lora_tensors: Mapping[str, torch.Tensor] | None = None,
    lora_scaling: float = OFFICIAL_LORA_SCALING,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write this project's fine-tuned format (small trained part + base reference), atomically.

    Args:
        path: Output file.
        base_checkpoint: The official or SAM-2.1 file the model was trained from; stored
            relative to `path`'s folder when possible, with its sha256.
        granularity_state: The 14 granularity tensors (see `granularity_state_dict`).
        lora_tensors: LoRA deltas in the official naming (``P.lora_A`` (r, in),
            ``P.lora_B`` (out, r)), applied on top of the base weights.
        lora_scaling: alpha / r of `lora_tensors`.
        metadata: JSON-like description (data, config, metrics).

    Returns:
        The path written.
    """
    path, base = Path(path), Path(base_checkpoint)
    try:
        reference = os.path.relpath(base.resolve(), path.parent.resolve())
    except ValueError:  # another drive on Windows
        reference = str(base.resolve())
    payload = {
        "format": FINETUNED_FORMAT,
        "format_version": FINETUNED_FORMAT_VERSION,
        "base": {"checkpoint": reference, "sha256": file_sha256(base)},
        "granularity": {k: v.detach().cpu() for k, v in granularity_state.items()},
        "lora": {
            "scaling": float(lora_scaling),
            "tensors": {k: v.detach().cpu() for k, v in (lora_tensors or {}).items()},
        },
        "metadata": dict(metadata or {}),
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(obj: object, path: str | Path) -> Path:
    """`torch.save` to a temporary file in the same folder, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
