"""DINOv2 / DINOv3 feature weights from the Hugging Face Hub, and the default extractor choice.

`download_feature_model(name, weights_dir)` fetches one known model (`FEATURE_MODELS`) into
``weights_dir/features/<name>/`` with `huggingface_hub.snapshot_download` (its progress bars;
interrupted files resume on the next call). The revision is pinned: the spec's own commit when
it has one, else the commit recorded by an earlier download, else the commit ``main`` points to
now, resolved once and recorded (trust on first use). ``hub.json`` in the folder records the
repository, the commit and the sha256 of every file. Gated models (DINOv3) need a token with
the licence accepted: ``HF_TOKEN`` (read by huggingface_hub itself) or `token`.

`best_feature_spec(weights_dir)` returns the extractor spec of the best model present
(``dinov3:PATH`` / ``dinov2:PATH``) or ``color`` with a warning saying how to get one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from core_model.checkpoint import file_sha256
from core_model.errors import UnSAMv2Error

logger = logging.getLogger(__name__)

MANIFEST = "hub.json"
FILES = ("config.json", "model.safetensors")  # what `from_pretrained` needs for a ViT backbone


class HubDownloadError(UnSAMv2Error):
    """A feature model cannot be downloaded (unknown name, offline, gated, ...)."""


@dataclass(frozen=True)
class FeatureModelSpec:
    """A downloadable feature backbone.

    Attributes:
        name: Name on the command line.
        repo_id: Hugging Face repository.
        kind: Extractor kind ("dinov2" or "dinov3").
        gated: The repository needs an accepted licence and a token.
        approx_mb: Approximate download size, for messages.
        revision: A commit to pin, or None to pin the first download's commit.
    """

    name: str
    repo_id: str
    kind: str
    gated: bool
    approx_mb: int
    revision: str | None = None


# best first: the default extractor is the first one present
FEATURE_MODELS: dict[str, FeatureModelSpec] = {
    spec.name: spec
    for spec in (
        FeatureModelSpec(
            "dinov3-vitb16", "facebook/dinov3-vitb16-pretrain-lvd1689m", "dinov3", True, 343
        ),
        FeatureModelSpec("dinov2-base", "facebook/dinov2-base", "dinov2", False, 346),
        FeatureModelSpec(
            "dinov2-base-registers", "facebook/dinov2-with-registers-base", "dinov2", False, 346
        ),
        FeatureModelSpec(
            "dinov3-vits16", "facebook/dinov3-vits16-pretrain-lvd1689m", "dinov3", True, 86
        ),
        FeatureModelSpec("dinov2-small", "facebook/dinov2-small", "dinov2", False, 88),
        FeatureModelSpec(
            "dinov2-small-registers", "facebook/dinov2-with-registers-small", "dinov2", False, 88
        ),
    )
}


def model_dir(weights_dir: Path, name: str) -> Path:
    """Return the folder of a feature model: ``weights_dir/features/<name>``."""
    return Path(weights_dir) / "features" / name


def is_present(weights_dir: Path, name: str) -> bool:
    """Return whether a model's files are all in its folder."""
    folder = model_dir(weights_dir, name)
    return all((folder / f).is_file() for f in FILES)


def _spec(name: str) -> FeatureModelSpec:
    try:
        return FEATURE_MODELS[name]
    except KeyError:
        known = ", ".join(FEATURE_MODELS)
        raise HubDownloadError(f"unknown feature model {name!r}; known: {known}") from None


def _recorded_revision(folder: Path) -> str | None:
    try:
        value = json.loads((folder / MANIFEST).read_text()).get("revision")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def _resolve_revision(
    spec: FeatureModelSpec, revision: str, endpoint: str | None, token: str | None
) -> str:
    """Return the commit of `revision` (fails fast, without the download's retries, offline)."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint, token=token).model_info(spec.repo_id, revision=revision)
    if not info.sha:
        raise HubDownloadError(f"{spec.name}: the Hub gave no commit for {spec.repo_id}")
    return str(info.sha)


def _explain(spec: FeatureModelSpec, exc: Exception) -> HubDownloadError:
    """Return a one-line error for a failed Hub call."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"https://huggingface.co/{spec.repo_id}"
    if isinstance(exc, GatedRepoError):
        return HubDownloadError(
            f"{spec.name} is gated: accept its licence at {page} and set HF_TOKEN to a token "
            "of that account"
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubDownloadError(f"{spec.name}: revision not found in {spec.repo_id}")
    if isinstance(exc, RepositoryNotFoundError):
        hint = " (gated: set HF_TOKEN)" if spec.gated else ""
        return HubDownloadError(f"{spec.name}: repository {spec.repo_id} not found{hint}")
    transport = type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")
    if transport or isinstance(exc, OfflineModeIsEnabled | LocalEntryNotFoundError | OSError):
        return HubDownloadError(
            f"{spec.name}: cannot reach the Hugging Face Hub (offline or HF_HUB_OFFLINE=1); "
            f"download it where the Hub is reachable and copy {spec.name}/ into the weights "
            "folder's features/"
        )
    return HubDownloadError(f"{spec.name}: download failed: {type(exc).__name__}: {exc}")


def download_feature_model(
    name: str,
    weights_dir: Path,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """Download a known feature model into ``weights_dir/features/<name>`` (see module doc).

    Args:
        name: A key of `FEATURE_MODELS`.
        weights_dir: The weights folder.
        revision: Commit to download; default: the spec's, the recorded one, or main's now.
        endpoint: Hub URL (default: huggingface_hub's, i.e. ``HF_ENDPOINT`` or the public Hub).
        token: Hub token (default: huggingface_hub's, i.e. ``HF_TOKEN`` or the saved login).

    Returns:
        The model folder, with ``hub.json`` recording repository, commit and sha256 per file.

    Raises:
        HubDownloadError: unknown name, Hub unreachable, gated without access, or missing files.
    """
    from huggingface_hub import snapshot_download

    spec = _spec(name)
    folder = model_dir(weights_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    logger.info(
        "downloading %s (%s, about %d MB) into %s", name, spec.repo_id, spec.approx_mb, folder
    )
    try:
        wanted = revision or spec.revision or _recorded_revision(folder) or "main"
        commit = _resolve_revision(spec, wanted, endpoint, token)
        snapshot_download(
            spec.repo_id,
            revision=commit,
            local_dir=folder,
            allow_patterns=list(FILES),
            endpoint=endpoint,
            token=token,
        )
    except Exception as exc:  # every failure of the Hub client becomes one line
        raise _explain(spec, exc) from None
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise HubDownloadError(f"{name}: {spec.repo_id}@{commit} has no {', '.join(missing)}")
    manifest = {
        "repo_id": spec.repo_id,
        "revision": commit,
        "kind": spec.kind,
        "files": {
            f: {"sha256": file_sha256(folder / f), "bytes": (folder / f).stat().st_size}
            for f in FILES
        },
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


def best_feature_spec(weights_dir: Path) -> tuple[str, str]:
    """Return (extractor spec, warning) for the best feature model present in `weights_dir`.

    The warning is empty when a model was found; with none, the spec is ``color`` (the
    weight-free extractor) and the warning says how to download one.
    """
    for spec in FEATURE_MODELS.values():
        if is_present(weights_dir, spec.name):
            return f"{spec.kind}:{model_dir(weights_dir, spec.name)}", ""
    return "color", (
        f"no DINO feature weights in {Path(weights_dir) / 'features'}: using the weight-free "
        "'color' extractor (lower pseudo-label quality); get one with "
        "`unsamv2 weights download dinov2-small`"
    )
