"""Label Studio: the project option `specialist_score` picks the specialist prediction's score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import test_specialist_serving as serving

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
    # a specialist that says p = sigmoid(0.2) ~ 0.55 everywhere: foreground, but all uncertain
    version = serving.train_uniform_specialist(store, settings, tmp_path / "run", 0.2)

    [confident] = serving._open_task(client)  # default: the mean region score
    [region] = confident["result"]
    assert confident["score"] == pytest.approx(region["score"], abs=1e-3)
    assert confident["score"] == pytest.approx(0.55, abs=0.01)

    _setup(client, {"specialist_score": "uncertainty"})
    [uncertain] = serving._open_task(client)
    assert uncertain["score"] == pytest.approx(1.0)
    assert uncertain["result"] == confident["result"]  # the regions are unchanged
    assert uncertain["model_version"] == f"specialist {version}"

    _setup(client, {"specialist_score": "confidence"})
    assert serving._open_task(client)[0]["score"] == pytest.approx(confident["score"])

    bad = client.post(
        "/setup", json={"project": "12.1", "extra_params": {"specialist_score": "entropy"}}
    )
    assert bad.status_code == 400 and "specialist_score" in bad.get_json()["error"]
