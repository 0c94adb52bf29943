"""A backend app serving the tiny random model, for hostile-request and fuzz tests.

Task images are local files (Label Studio's ``/data/local-files/?d=...`` form): one 96 x 128
scene image. The webhook secret is ``hook-secret``; CVAT presets are ``fine:0.2,whole:1.0``.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flask import Flask
from PIL import Image

from core_model.checkpoint import official_state_dict
from labeling_pipeline.store import Store
from ml_backend.label_studio.app import create_app
from ml_backend.label_studio.label_config import shipped_config
from ml_backend.runtime import ModelRuntime
from ml_backend.settings import Settings

CONFIG = shipped_config()
SECRET = "hook-secret"
IMAGE_HW = (96, 128)
TASK: dict[str, Any] = {
    "id": 5,
    "data": {"image": "/data/local-files/?d=scene.png"},
    "drafts": [{"user": 3, "result": []}],
}


def scene() -> np.ndarray:
    """(96, 128, 3) uint8: noise with a flat red rectangle (rows 20-69, cols 30-89)."""
    image = np.random.default_rng(0).integers(0, 256, size=(*IMAGE_HW, 3), dtype=np.uint8)
    image[20:70, 30:90] = [200, 40, 40]
    return image


def frame_b64() -> str:
    """The scene as a base64 PNG file, as CVAT sends a frame."""
    buffer = io.BytesIO()
    Image.fromarray(scene()).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def build_backend(folder: Path, model: torch.nn.Module, **env: str) -> tuple[Flask, Store]:
    """Build the app in `folder` (data dir, image files, checkpoint of `model`)."""
    checkpoint = folder / "tiny.pt"
    torch.save({"model": official_state_dict(model)}, checkpoint)
    files = folder / "files"
    files.mkdir()
    Image.fromarray(scene()).save(files / "scene.png")
    settings = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(folder / "data"),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(checkpoint),
            "UNSAMV2_LOCAL_FILES_ROOT": str(files),
            "UNSAMV2_WEBHOOK_SECRET": SECRET,
            "UNSAMV2_CVAT_PRESETS": "fine:0.2,whole:1.0",
            **env,
        }
    )
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    runtime.refresh()
    app = create_app(settings, runtime=runtime, store=store, start_runtime=False)
    return app, store


def click(region_id: Any = "k1", x: Any = 50, y: Any = 45, label: Any = "Car @0.5") -> dict:
    """A smart keypoint of the shipped config, in percent of the 128 x 96 scene."""
    return {
        "id": region_id,
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": IMAGE_HW[1],
        "original_height": IMAGE_HW[0],
        "is_positive": True,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]},
    }


def interactive_body(results: list[Any], task: Any = None) -> dict[str, Any]:
    """A /predict body with a context, as Label Studio sends it for a smart click."""
    return {
        "tasks": [TASK if task is None else task],
        "project": "12.1700000000",
        "label_config": CONFIG,
        "params": {"login": None, "password": None, "context": {"result": results}},
    }


def assert_clear_error(answer: Any, status: int | None = None) -> str:
    """Check a 4xx answer: JSON with a one-line message and no traceback; return the message."""
    text = answer.get_data(as_text=True)
    assert answer.status_code < 500, text
    if status is not None:
        assert answer.status_code == status, text
    assert 400 <= answer.status_code < 500, text
    body = json.loads(text)
    message = body["error"]
    assert isinstance(message, str) and message, body
    assert "\n" not in message and len(message) <= 500, message
    assert "Traceback" not in text and 'File "' not in text, text
    return message
