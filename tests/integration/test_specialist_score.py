"""Label Studio: the project option `specialist_score` picks the specialist prediction's score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import test_specialist_serving as serving
import torch

from labeling_pipeline.specialist.gate import SpecialistGate
from labeling_pipeline.specialist.service import train_specialist
from labeling_pipeline.specialist.trainer import SpecialistTrainConfig
from labeling_pipeline.store import Store
from ml_backend.settings import Settings

backend = serving.backend


def _setup(client: Any, extra: dict[str, Any]) -> None:
    answer = client.post(
        "/setup", json={"project": "12.1700000000", "schema": serving.CONFIG, "extra_params": extra}
    )
    assert answer.status_code == 200, answer.get_json()


def test_uncertainty_option_makes_the_score_the_uncertain_share(
    backend: tuple[Any, Store, Settings], tmp_path: Path
) -> None:
    client, store, settings = backend
    run = train_specialist(
        store,
        models_dir=settings.pipeline.models_dir,
        run_dir=tmp_path / "run",
        project="ls:12",
        labels=["Car"],
        config=SpecialistTrainConfig(variant="test-tiny", epochs=1),
        gate=SpecialistGate(min_miou=0.0, min_dice=0.0),
        min_images=2,
    )
    # a specialist that says p = sigmoid(0.2) ~ 0.55 everywhere: foreground, but all uncertain
    path = settings.pipeline.models_dir / run.version / "model.pt"
    saved = torch.load(path, weights_only=True)
    saved["state"]["decoder.head.weight"].zero_()
    saved["state"]["decoder.head.bias"].fill_(0.2)
    torch.save(saved, path)

    [confident] = serving._open_task(client)  # default: the mean region score
    [region] = confident["result"]
    assert confident["score"] == pytest.approx(region["score"], abs=1e-3)
    assert confident["score"] == pytest.approx(0.55, abs=0.01)

    _setup(client, {"specialist_score": "uncertainty"})
    [uncertain] = serving._open_task(client)
    assert uncertain["score"] == pytest.approx(1.0)
    assert uncertain["result"] == confident["result"]  # the regions are unchanged
    assert uncertain["model_version"] == f"specialist {run.version}"

    _setup(client, {"specialist_score": "confidence"})
    assert serving._open_task(client)[0]["score"] == pytest.approx(confident["score"])

    bad = client.post(
        "/setup", json={"project": "12.1", "extra_params": {"specialist_score": "entropy"}}
    )
    assert bad.status_code == 400 and "specialist_score" in bad.get_json()["error"]
