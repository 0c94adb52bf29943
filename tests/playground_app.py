"""The backend app with a playground folder, serving the tiny random model, for playground tests.

The folder holds ``scene.png`` (a 96 x 128 synthetic-looking scene) and a few things the picker
must never offer (a hidden file, a text file, a sub-folder, a symlink leaving the folder).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from flask import Flask
from PIL import Image

from core_model.checkpoint import official_state_dict
from labeling_pipeline.store import Store
from ml_backend.label_studio.app import create_app
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings

HEADERS = {"X-UnSAMv2-Playground": "1"}
IMAGE_HW = (96, 128)


def scene() -> np.ndarray:
    """(96, 128, 3) uint8: noise with a flat red rectangle (rows 20-69, cols 30-89)."""
    image = np.random.default_rng(0).integers(0, 256, size=(*IMAGE_HW, 3), dtype=np.uint8)
    image[20:70, 30:90] = [200, 40, 40]
    return image


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 image as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Write `model` as an official-layout checkpoint file."""
    torch.save({"model": official_state_dict(model)}, path)
    return path


def make_folder(folder: Path) -> Path:
    """Create the playground folder with its one offered image and decoys; return it."""
    images = folder / "pictures"
    images.mkdir(parents=True)
    (images / "scene.png").write_bytes(png_bytes(scene()))
    (images / ".hidden.png").write_bytes(png_bytes(scene()))
    (images / "notes.txt").write_text("not an image")
    (images / "sub").mkdir()
    (images / "sub" / "inner.png").write_bytes(png_bytes(scene()))
    outside = folder / "secret.png"
    outside.write_bytes(png_bytes(scene()))
    (images / "link.png").symlink_to(outside)
    return images


def build_playground_app(folder: Path, model: torch.nn.Module, **env: str) -> Flask:
    """Build the app in `folder` (data dir, playground folder, checkpoint of `model`)."""
    checkpoint = save_checkpoint(model, folder / "tiny.pt")
    settings = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(folder / "data"),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(checkpoint),
            "UNSAMV2_PLAYGROUND_DIR": str(make_folder(folder)),
            **env,
        }
    )
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    runtime.refresh()
    return create_app(settings, runtime=runtime, store=store, start_runtime=False)
