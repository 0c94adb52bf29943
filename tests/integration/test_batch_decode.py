"""`predict_clicks`: clicks of several images and prompt shapes in one call equal single clicks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core_model.batch_decode import ClickJob, check_job, predict_clicks
from core_model.build import build_model
from core_model.errors import GranularityError, InvalidPromptError
from core_model.predictor import GranularityPredictor
from core_model.types import Prompts


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    sizes = [(96, 128), (80, 80), (64, 112)]
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]


def _jobs(predictor: GranularityPredictor) -> list[ClickJob]:
    first, second, third = (predictor.embed(image) for image in _images())
    return [
        ClickJob(first, Prompts.from_arrays([[40, 30]], [1]), 0.5),
        ClickJob(second, Prompts.from_arrays([[10, 70]], [1]), 0.9),
        ClickJob(first, Prompts.from_arrays([[100, 60], [20, 20]], [1, 0]), 0.3),
        ClickJob(third, Prompts.from_arrays([[50, 20]], [1]), 0.1),
        ClickJob(second, Prompts.from_arrays(None, None, box=[5, 5, 60, 50]), 0.7),
        ClickJob(third, Prompts.from_arrays([[90, 40]], [0], box=[10, 10, 100, 60]), 0.6),
        ClickJob(first, Prompts.from_arrays([[64, 48]], [1]), 1.0, multimask_output=True),
        ClickJob(third, Prompts.from_arrays([[5, 5], [70, 50]], [1, 1]), 0.45),
    ]


@pytest.mark.parametrize("mode", ["granularity", "sam2-multimask"])
@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_batched_clicks_equal_single_clicks(tiny_model, mode: str, max_batch: int) -> None:
    model = tiny_model
    if mode != model.info.granularity_mode:
        torch.manual_seed(1234)
        model = build_model("test-tiny")
        model.info = dataclasses.replace(model.info, granularity_mode=mode)
    predictor = GranularityPredictor(model)
    jobs = [check_job(predictor, job) for job in _jobs(predictor)]
    batched = predict_clicks(predictor, jobs, max_batch=max_batch)
    assert len(batched) == len(jobs)
    for job, result in zip(jobs, batched, strict=True):
        alone = predictor.predict(
            job.embedding,
            job.prompts,
            granularity=job.granularity,
            multimask_output=job.multimask_output,
        )
        assert result.masks.shape == alone.masks.shape == (1, *job.embedding.original_hw)
        np.testing.assert_allclose(result.low_res_logits, alone.low_res_logits, atol=1e-5)
        np.testing.assert_allclose(result.scores, alone.scores, atol=1e-5)
        assert np.array_equal(result.masks, alone.masks)
        assert result.granularities == (job.granularity,) and result.mode == alone.mode


def test_check_job_refuses_what_predict_refuses(tiny_model, scene_image) -> None:
    predictor = GranularityPredictor(tiny_model)
    embedding = predictor.embed(scene_image)
    with pytest.raises(GranularityError):
        check_job(predictor, ClickJob(embedding, Prompts.from_arrays([[5, 5]], [1]), 1.5))
    with pytest.raises(InvalidPromptError):
        check_job(predictor, ClickJob(embedding, Prompts.from_arrays([[500, 5]], [1]), 0.5))
    with pytest.raises(ValueError, match="max_batch"):
        predict_clicks(predictor, [], max_batch=0)
