"""Base checkpoints: known files, verified downloads with resume, and imports.

SAM-2.1 checkpoints come from Meta's public URLs. No checksum is published for them, so the
expected sha256 is taken from the Hugging Face mirror's file metadata when reachable, else
recorded at the first download (trust on first use) in ``weights/manifest.json`` and enforced
afterwards. The official UnSAMv2 checkpoints are downloaded by `release.download_release`
(Hugging Face Hub or Google Drive); a copy obtained elsewhere is brought in by
`import_checkpoint`, after checking that it is an UnSAMv2 checkpoint of the right model size
(`verify_checkpoint`), and its hash is recorded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from core_model.checkpoint import file_sha256
from core_model.errors import UnSAMv2Error
from labeling_pipeline.model_files.transfer import (
    OfflineError,
    Progress,
    TransferError,
    fetch_resumable,
)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_SAM2_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_HF_BASE = "https://huggingface.co/facebook"
_GDRIVE = "https://drive.google.com/file/d/{}/view"


class WeightsError(UnSAMv2Error):
    """A checkpoint cannot be downloaded, verified or imported."""


@dataclass(frozen=True)
class WeightSpec:
    """A known checkpoint.

    Attributes:
        name: Name used on the command line.
        filename: File name in the weights folder.
        variant: Model variant it belongs to.
        kind: "sam2" (Meta's files) or "unsamv2" (the official UnSAMv2 releases).
        url: Download URL (Meta) or the Google Drive page (UnSAMv2, for a browser).
        mirror_url: URL whose metadata carries a sha256 (Hugging Face), if any.
        approx_mb: Approximate size, for messages.
    """

    name: str
    filename: str
    variant: str
    kind: str
    url: str
    mirror_url: str | None
    approx_mb: int


def _sam2(size: str, variant: str, mb: int) -> WeightSpec:
    filename = f"sam2.1_hiera_{size}.pt"
    repo = f"sam2.1-hiera-{size.replace('_', '-')}"
    return WeightSpec(
        f"sam2.1_hiera_{size}",
        filename,
        variant,
        "sam2",
        f"{_SAM2_BASE}/{filename}",
        f"{_HF_BASE}/{repo}/resolve/main/{filename}",
        mb,
    )


WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        _sam2("tiny", "tiny", 149),
        _sam2("small", "small", 176),
        _sam2("base_plus", "base_plus", 309),
        _sam2("large", "large", 857),
        WeightSpec(
            "unsamv2",
            "unsamv2_ckpt.pt",
            "small",
            "unsamv2",
            _GDRIVE.format("1iYmYFeJxY4aI1lG5F2ZFL8tzzyGkCgX0"),
            None,
            186,
        ),
        WeightSpec(
            "unsamv2_plus",
            "unsamv2_plus_ckpt.pt",
            "small",
            "unsamv2",
            _GDRIVE.format("1M56QN2CWfou7h5azxJvc_igmbQh9D2af"),
            None,
            186,
        ),
    )
}


#: other spellings accepted on the command line
ALIASES = {"unsamv2plus": "unsamv2_plus", "unsamv2+": "unsamv2_plus"}


def read_manifest(weights_dir: Path) -> dict[str, Any]:
    """Return ``manifest.json`` of the weights folder: {filename: {name, sha256, source}}."""
    path = weights_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path} is corrupt: {exc}") from None
    return data if isinstance(data, dict) else {}


def record(weights_dir: Path, spec: WeightSpec, sha256: str, source: str) -> None:
    """Record a file's sha256 and origin in the manifest (atomically)."""
    data = read_manifest(weights_dir)
    data[spec.filename] = {"name": spec.name, "sha256": sha256, "source": source}
    tmp = weights_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, weights_dir / MANIFEST)


def spec_for(name: str) -> WeightSpec:
    """Return the spec of a known checkpoint name (or alias), or raise `WeightsError`."""
    spec = WEIGHTS.get(ALIASES.get(name, name))
    if spec is None:
        raise WeightsError(f"unknown checkpoint {name!r}; known: {', '.join(WEIGHTS)}")
    return spec


def expected_sha256(spec: WeightSpec, weights_dir: Path, *, timeout_s: float = 10.0) -> str | None:
    """Return the sha256 to verify against: recorded earlier, or from the mirror's metadata."""
    recorded = read_manifest(weights_dir).get(spec.filename, {}).get("sha256")
    if recorded:
        return str(recorded)
    if spec.mirror_url is None:
        return None
    try:
        answer = requests.head(spec.mirror_url, allow_redirects=False, timeout=timeout_s)
    except requests.RequestException:
        return None
    linked = answer.headers.get("x-linked-etag") or answer.headers.get("x-xet-hash") or ""
    linked = linked.strip('"').lower()
    return linked if len(linked) == 64 and all(c in "0123456789abcdef" for c in linked) else None


def download(
    name: str,
    weights_dir: Path,
    *,
    progress: Progress | None = None,
    timeout_s: float = 30.0,
    url: str | None = None,
) -> Path:
    """Download a SAM-2.1 checkpoint into `weights_dir`, resuming a partial download.

    Args:
        name: A name of `WEIGHTS` with kind "sam2".
        weights_dir: Destination folder.
        progress: Called with (bytes so far, total bytes or None).
        timeout_s: Connect/read timeout.
        url: Override the download URL (mirrors, tests).

    Returns:
        The verified file.

    Raises:
        WeightsError: unknown name, offline, HTTP error, or checksum mismatch (the partial file
            is deleted so the next attempt starts clean).
    """
    spec = spec_for(name)
    if spec.kind != "sam2":
        raise WeightsError(
            f"{name} is an UnSAMv2 release: download it with `release.download_release` "
            f"(`unsamv2 weights download {name}`)"
        )
    weights_dir.mkdir(parents=True, exist_ok=True)
    target, partial = weights_dir / spec.filename, weights_dir / f"{spec.filename}.part"
    expected = expected_sha256(spec, weights_dir)
    if target.is_file():
        if expected is None or file_sha256(target) == expected:
            return target
        raise WeightsError(f"{target} exists but its sha256 differs from {expected}; delete it")
    _fetch(url or spec.url, partial, progress=progress, timeout_s=timeout_s)
    actual = file_sha256(partial)
    if expected is not None and actual != expected:
        partial.unlink(missing_ok=True)
        raise WeightsError(f"{spec.filename}: sha256 {actual} does not match {expected}")
    os.replace(partial, target)
    record(weights_dir, spec, actual, url or spec.url)
    if expected is None:
        logger.warning(
            "%s: no published checksum; recorded sha256 %s for later checks", spec.filename, actual
        )
    return target


def _fetch(url: str, partial: Path, *, progress: Progress | None, timeout_s: float) -> None:
    try:
        fetch_resumable(url, partial, progress=progress, timeout_s=timeout_s)
    except OfflineError as exc:
        raise WeightsError(
            f"offline: {exc}; download the file on another machine, then "
            f"`unsamv2 weights import {partial.with_suffix('').stem} PATH`"
        ) from None
    except TransferError as exc:
        raise WeightsError(f"download of {url} failed: {exc}") from None


def verify_checkpoint(name: str, source: Path, *, variant: str | None = None) -> str:
    """Check that a file is a checkpoint of the kind and model variant a known name stands for.

    The file is read as weights only (never unpickled as objects) and loaded into a freshly
    built model of the name's variant with the strict key and shape check of
    `core_model.checkpoint.load_checkpoint_into`, so a checkpoint of another model size, a
    fine-tuned file of this project, or a file that is not a checkpoint at all is refused.

    Args:
        name: A name of `WEIGHTS` (or an alias).
        source: The file.
        variant: Model variant to check against instead of the name's (test mirrors only).

    Returns:
        The checkpoint kind: "official" (UnSAMv2) or "sam2".

    Raises:
        WeightsError: unknown name, missing or unreadable file, wrong kind or wrong variant,
            with a one-line reason.
    """
    from core_model.build import build_model
    from core_model.checkpoint import load_checkpoint_into
    from core_model.errors import CheckpointError, CheckpointMismatchError

    spec = spec_for(name)
    variant = variant or spec.variant
    if not Path(source).is_file():
        what = "is a folder, not a file" if Path(source).is_dir() else "does not exist"
        raise WeightsError(f"{source} {what}")
    model = build_model(variant)
    try:
        kind = load_checkpoint_into(model, source).kind
    except CheckpointMismatchError as exc:
        raise WeightsError(
            f"{source} is not a checkpoint of {spec.name} (model {variant}): {exc}"
        ) from None
    except CheckpointError as exc:  # unreadable: the message names the file and the reason
        raise WeightsError(str(exc)) from None
    wanted = "official" if spec.kind == "unsamv2" else "sam2"
    if kind != wanted:
        what = "an UnSAMv2" if spec.kind == "unsamv2" else "a plain SAM-2.1"
        found = {
            "official": "an UnSAMv2 checkpoint (with granularity modules)",
            "sam2": "a plain SAM-2.1 checkpoint (no granularity modules)",
            "finetuned": "a fine-tuned checkpoint of this project (see `unsamv2 models export`)",
        }.get(kind, kind)
        raise WeightsError(f"{source} is not {what} checkpoint: it is {found}")
    return kind


def import_checkpoint(name: str, source: Path, weights_dir: Path) -> Path:
    """Copy a manually downloaded checkpoint into the weights folder after verifying it.

    The file must be a checkpoint of the name's kind and model variant (`verify_checkpoint`).
    The sha256 is recorded (or checked against an earlier record).
    """
    spec = spec_for(name)
    verify_checkpoint(name, source)
    sha256 = file_sha256(source)
    recorded = read_manifest(weights_dir).get(spec.filename, {}).get("sha256")
    if recorded and recorded != sha256:
        raise WeightsError(f"{source}: sha256 {sha256} differs from the recorded {recorded}")
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / spec.filename
    tmp = weights_dir / f".{spec.filename}.tmp"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    record(weights_dir, spec, sha256, f"import:{Path(source).name}")
    return target


def find_checkpoint(weights_dir: Path, variant: str) -> Path | None:
    """Return the best checkpoint present for a variant: UnSAMv2+, UnSAMv2, then SAM-2.1."""
    order = sorted(WEIGHTS.values(), key=lambda s: (s.kind != "unsamv2", s.name != "unsamv2_plus"))
    for spec in order:
        if spec.variant == variant and (weights_dir / spec.filename).is_file():
            return weights_dir / spec.filename
    return None
