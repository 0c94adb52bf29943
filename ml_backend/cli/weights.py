"""`unsamv2 weights list|download|import`: base checkpoints in the data directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register `weights`."""
    weights = subparsers.add_parser("weights", help="download, import and list checkpoints")
    sub = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="known checkpoints and which are present")
    listing.set_defaults(run=run_list)
    download = sub.add_parser(
        "download",
        help="download an UnSAMv2 or SAM-2.1 checkpoint or a DINO feature model "
        "(verified, resumable)",
    )
    download.add_argument(
        "name", help="e.g. unsamv2, unsamv2plus, sam2.1_hiera_small, dinov2-small, dinov3-vits16"
    )
    download.add_argument("--url", help="download from this URL instead (a mirror)")
    download.set_defaults(run=run_download)
    importing = sub.add_parser(
        "import",
        help="import a manually downloaded checkpoint (verified: kind and model size)",
    )
    importing.add_argument("name", help="unsamv2, unsamv2plus, or a SAM-2.1 name")
    importing.add_argument("path", type=Path)
    importing.set_defaults(run=run_import)


def _weights_dir() -> Path:
    from ml_backend.settings import Settings

    return Settings.from_env().pipeline.weights_dir


def run_list(args: argparse.Namespace) -> int:
    """Print the known checkpoints, whether each is present, and its recorded sha256."""
    from labeling_pipeline.model_files.weights import WEIGHTS, read_manifest

    folder = _weights_dir()
    manifest = read_manifest(folder)
    print(f"weights folder: {folder.resolve()}")
    print(f"{'name':<24} {'variant':<10} {'size':>7}  {'present':<8} how to get it / sha256")
    for spec in WEIGHTS.values():
        present = "yes" if (folder / spec.filename).is_file() else "no"
        partial = folder / f"{spec.filename}.part"
        if present == "no" and partial.is_file():
            present = f"{partial.stat().st_size * 100 // (spec.approx_mb << 20)}%"
        sha = manifest.get(spec.filename, {}).get("sha256", "")
        how = f"sha256 {sha}" if sha else f"unsamv2 weights download {spec.name}"
        print(f"{spec.name:<24} {spec.variant:<10} {spec.approx_mb:>5}MB  {present:<8} {how}")
    from labeling_pipeline.model_files.hub import FEATURE_MODELS, is_present

    for feature in FEATURE_MODELS.values():
        present = "yes" if is_present(folder, feature.name) else "no"
        how = f"unsamv2 weights download {feature.name}" + (" (HF_TOKEN)" if feature.gated else "")
        print(f"{feature.name:<24} {'features':<10} {feature.approx_mb:>5}MB  {present:<8} {how}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Download with a progress bar (shown from the first byte on)."""
    from labeling_pipeline.model_files.hub import FEATURE_MODELS, download_feature_model

    if args.name in FEATURE_MODELS:  # Hugging Face Hub; its own progress bars
        print(f"{args.name}: {download_feature_model(args.name, _weights_dir())}")
        return 0
    from tqdm import tqdm

    from labeling_pipeline.model_files.release import download_release
    from labeling_pipeline.model_files.weights import download, spec_for

    bars: list[Any] = []

    def progress(done: int, total: int | None) -> None:
        if not bars:
            bars.append(tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=args.name))
        bar = bars[0]
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    fetch = download_release if spec_for(args.name).kind == "unsamv2" else download
    try:
        path = fetch(args.name, _weights_dir(), progress=progress, url=args.url)
    finally:
        for bar in bars:
            bar.close()
    print(f"{args.name}: {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Verify and copy a checkpoint into the weights folder."""
    from labeling_pipeline.model_files.weights import import_checkpoint

    path = import_checkpoint(args.name, args.path, _weights_dir())
    print(f"{args.name}: {path}")
    return 0
