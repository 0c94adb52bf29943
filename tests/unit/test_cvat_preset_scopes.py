"""CVAT presets name the model lineage that serves them (default global)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from ml_backend.cvat.presets import Preset, PresetError, parse_presets
from ml_backend.cvat.service import CvatService


def test_presets_take_an_optional_scope() -> None:
    presets = parse_presets("fine:0.2, cars-part:0.5@ls:3 ,whole:1@project:2")
    assert [p.scope for p in presets] == ["global", "ls:3", "project:2"]
    assert str(presets[1]) == "cars-part:0.5@ls:3" and str(presets[0]) == "fine:0.2"
    with pytest.raises(PresetError, match="bad scope"):
        parse_presets("a:0.5@ls:zero")


def test_the_service_asks_for_the_preset_scope_model() -> None:
    asked: list[str] = []

    def serving(scope: str):
        asked.append(scope)
        raise LookupError("stop after the model lookup")

    service = CvatService(serving, [Preset("part", 0.5, "ls:7"), Preset("fine", 0.2)])
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, format="PNG")
    image = base64.b64encode(png.getvalue()).decode()
    body = {"image": image, "pos_points": [[1, 1]], "neg_points": []}
    for name in ("unsamv2-interactor-part", "unsamv2-detector-fine"):
        with pytest.raises(LookupError, match="stop after"):
            service.invoke(service.function(name), body)
    assert asked == ["ls:7", "global"]
