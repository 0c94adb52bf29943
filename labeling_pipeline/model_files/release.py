"""The official UnSAMv2 checkpoints: downloaded from the Hugging Face Hub or Google Drive.

Where from, decided at download time (`release_sources`):

1. a mirror URL, when one is given (``--url``, ``UNSAMV2_CHECKPOINT_URL``): only that;
2. the Hugging Face model repository `HF_REPO`, when its file listing (``model_info`` with
   file metadata, at its current commit) holds a file named like the release
   (``unsamv2_ckpt.pt``, ``unsamv2_plus_ckpt.pt``, in any folder): that file at that commit,
   checked against the sha256 the Hub publishes for it;
3. Google Drive, by the file id the authors link from their README (`DRIVE_FILE_IDS`), through
   the large-file confirmation page (see `transfer`). Drive publishes no checksum: the sha256
   is recorded at the first download and enforced on later ones (``weights/manifest.json``).

The file is written to ``<weights>/<file>.part`` (kept when the transfer breaks off, resumed by
the next call; a broken transfer is resumed up to `attempts` times in one call), verified to be
an official UnSAMv2 checkpoint of the ``small`` model by loading its tensors with the strict
key and shape check (`weights.verify_checkpoint`), then renamed into place.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests

from core_model.checkpoint import file_sha256
from labeling_pipeline.model_files.transfer import (
    InterruptedTransferError,
    OfflineError,
    Progress,
    TransferError,
    fetch_resumable,
)
from labeling_pipeline.model_files.weights import (
    WeightsError,
    WeightSpec,
    read_manifest,
    record,
    spec_for,
    verify_checkpoint,
)

logger = logging.getLogger(__name__)

HF_REPO = "yujunwei04/UnSAMv2"
DRIVE_DOWNLOAD = "https://drive.google.com/uc?export=download&id={id}"
DRIVE_FILE_IDS = {
    "unsamv2": "1iYmYFeJxY4aI1lG5F2ZFL8tzzyGkCgX0",
    "unsamv2_plus": "1M56QN2CWfou7h5azxJvc_igmbQh9D2af",
}
#: the checkpoint a backend downloads on first start
DEFAULT_RELEASE = "unsamv2_plus"


@dataclass(frozen=True)
class ReleaseSource:
    """One place to download a release from.

    Attributes:
        url: Download URL.
        where: "huggingface", "google-drive" or "mirror".
        sha256: The checksum the source publishes, if any.
    """

    url: str
    where: str
    sha256: str | None = None


def hub_source(
    filename: str, *, endpoint: str | None = None, timeout_s: float = 10.0
) -> ReleaseSource | None:
    """Return the Hub file named `filename` in `HF_REPO` (at its current commit), if any.

    Returns:
        The source with the Hub's sha256 of the file, or None when the repository does not
        exist, is not public, or holds no file of that name.

    Raises:
        OfflineError: The Hub cannot be reached.
    """
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        info = HfApi(endpoint=endpoint).model_info(HF_REPO, files_metadata=True, timeout=timeout_s)
    except HfHubHTTPError as exc:  # missing, private or gated repository, or a server error
        logger.info("%s is not usable on the Hub (%s): using Google Drive", HF_REPO, exc)
        return None
    except OfflineModeIsEnabled:
        raise OfflineError("the Hugging Face Hub is disabled (HF_HUB_OFFLINE)") from None
    except Exception as exc:  # the Hub client's transport errors (httpx) and timeouts, or junk
        transport = type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "requests")
        if transport or isinstance(exc, OSError):
            raise OfflineError(
                f"cannot reach the Hugging Face Hub ({type(exc).__name__})"
            ) from None
        logger.warning(
            "the Hub's answer about %s is unusable (%r): using Google Drive", HF_REPO, exc
        )
        return None
    for sibling in info.siblings or []:
        if PurePosixPath(sibling.rfilename).name == filename:
            url = hf_hub_url(HF_REPO, sibling.rfilename, revision=info.sha, endpoint=endpoint)
            sha256 = sibling.lfs.sha256 if sibling.lfs is not None else None
            return ReleaseSource(url, "huggingface", sha256)
    logger.info("%s has no %s: using Google Drive", HF_REPO, filename)
    return None


def release_sources(
    spec: WeightSpec,
    *,
    url: str | None = None,
    endpoint: str | None = None,
    drive_url: str = DRIVE_DOWNLOAD,
    timeout_s: float = 10.0,
) -> list[ReleaseSource]:
    """Return where to download a release from, best first (see the module docstring)."""
    if url:
        return [ReleaseSource(url, "mirror")]
    sources: list[ReleaseSource] = []
    try:
        hub = hub_source(spec.filename, endpoint=endpoint, timeout_s=timeout_s)
    except OfflineError as exc:
        logger.info("%s: %s; trying Google Drive", spec.name, exc)
        hub = None
    if hub is not None:
        sources.append(hub)
    sources.append(ReleaseSource(drive_url.format(id=DRIVE_FILE_IDS[spec.name]), "google-drive"))
    return sources


def _offline_message(spec: WeightSpec, weights_dir: Path) -> str:
    return (
        f"offline: cannot reach the Hugging Face Hub or Google Drive to download {spec.name}; "
        f"on a machine with internet run `unsamv2 weights download {spec.name}` and copy "
        f"{spec.filename} into {weights_dir.resolve()}, or download it in a browser from "
        f"{spec.url} and run `unsamv2 weights import {spec.name} PATH`"
    )


def _transfer(
    source: ReleaseSource,
    partial: Path,
    *,
    progress: Progress | None,
    timeout_s: float,
    attempts: int,
) -> None:
    """Download one source into `partial`, resuming a broken transfer up to `attempts` times."""
    session = requests.Session()
    for attempt in range(1, attempts + 1):
        try:
            fetch_resumable(
                source.url,
                partial,
                progress=progress,
                timeout_s=timeout_s,
                session=session,
                follow_drive_page=source.where == "google-drive",
            )
            return
        except InterruptedTransferError as exc:
            if attempt == attempts:
                raise
            logger.warning("%s (attempt %d of %d): resuming", exc, attempt, attempts)


def _check(
    spec: WeightSpec, partial: Path, source: ReleaseSource, recorded: str | None, variant: str
) -> str:
    """Return the sha256 of a complete download after checking it; delete it if refused."""
    sha256 = file_sha256(partial)
    expected = source.sha256 or recorded
    try:
        if expected is not None and sha256 != expected:
            raise WeightsError(
                f"{spec.filename} from {source.where}: sha256 {sha256} does not match {expected}"
            )
        verify_checkpoint(spec.name, partial, variant=variant)
    except WeightsError as exc:
        partial.unlink(missing_ok=True)
        raise WeightsError(f"refused the download from {source.where}: {exc}") from None
    return sha256


def download_release(
    name: str,
    weights_dir: Path,
    *,
    progress: Progress | None = None,
    url: str | None = None,
    endpoint: str | None = None,
    drive_url: str = DRIVE_DOWNLOAD,
    variant: str | None = None,
    timeout_s: float = 30.0,
    attempts: int = 3,
) -> Path:
    """Download an official UnSAMv2 checkpoint into `weights_dir` (see the module docstring).

    Args:
        name: "unsamv2" or "unsamv2_plus" (or an alias such as "unsamv2plus").
        weights_dir: The weights folder; the file is ``weights_dir / spec.filename``.
        progress: Called with (bytes so far, total bytes or None).
        url: A mirror to download from instead of the Hub or Drive.
        endpoint: Hugging Face Hub URL (default: huggingface_hub's, i.e. ``HF_ENDPOINT``).
        drive_url: Google Drive download URL with an ``{id}`` field.
        variant: Model variant the file must load into; only with `url` (a test mirror).
        timeout_s: Connect and read timeout.
        attempts: Tries per source when a transfer breaks off.

    Returns:
        The verified file.

    Raises:
        WeightsError: one line: unknown name, offline (what to run, where to put the file),
            refused file (not an official checkpoint of the model size), checksum mismatch.
    """
    spec = spec_for(name)
    if spec.kind != "unsamv2":
        raise WeightsError(f"{spec.name} is not an UnSAMv2 release: use `weights.download`")
    if variant is not None and variant != spec.variant and not url:
        raise WeightsError("another model variant can only be checked for a mirror URL")
    weights_dir.mkdir(parents=True, exist_ok=True)
    target, partial = weights_dir / spec.filename, weights_dir / f"{spec.filename}.part"
    recorded = read_manifest(weights_dir).get(spec.filename, {}).get("sha256")
    if target.is_file():
        if recorded and file_sha256(target) != recorded:
            raise WeightsError(f"{target} exists but its sha256 differs from {recorded}; delete it")
        return target
    offline: OfflineError | None = None
    for source in release_sources(spec, url=url, endpoint=endpoint, drive_url=drive_url):
        logger.info("downloading %s from %s (%s)", spec.name, source.where, source.url)
        try:
            _transfer(source, partial, progress=progress, timeout_s=timeout_s, attempts=attempts)
        except OfflineError as exc:
            offline = exc
            continue
        except TransferError as exc:
            raise WeightsError(f"{spec.name}: download from {source.where} failed: {exc}") from None
        sha256 = _check(spec, partial, source, recorded, variant or spec.variant)
        os.replace(partial, target)
        record(weights_dir, spec, sha256, f"{source.where}:{source.url}")
        logger.info("%s: %s (sha256 %s)", spec.name, target, sha256)
        return target
    if url:
        raise WeightsError(f"offline: {offline}; check the mirror URL {url}")
    raise WeightsError(_offline_message(spec, weights_dir))
