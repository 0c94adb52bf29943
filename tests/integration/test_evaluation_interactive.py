"""The evaluation loops on the tiny random model: bounded, deterministic, consistent baselines."""

from __future__ import annotations

import numpy as np
import pytest

from core_model.predictor import GranularityPredictor
from core_model.types import Prompts
from core_model.whole_image import WholeImageConfig
from labeling_pipeline.evaluation import (
    METHODS,
    ARConfig,
    EvalSample,
    InteractiveConfig,
    evaluate_ar1000,
    evaluate_interactive,
    run_ar_evaluation,
)


@pytest.fixture
def samples(scene_image: np.ndarray) -> list[EvalSample]:
    rect = np.zeros(scene_image.shape[:2], dtype=bool)
    rect[20:70, 30:90] = True
    part = np.zeros_like(rect)
    part[20:45, 30:60] = True
    ignore = np.zeros_like(rect)
    ignore[19, 30:90] = True
    return [
        EvalSample(scene_image, rect, ignore, image_id="scene", instance_id="whole"),
        EvalSample(scene_image, part, None, image_id="scene", instance_id="part"),
    ]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_bounded_and_deterministic(tiny_model, samples, method: str) -> None:
    config = InteractiveConfig(method=method, max_clicks=3, granularities=(0.2, 0.6, 1.0))
    first = evaluate_interactive(GranularityPredictor(tiny_model), samples, config=config)
    again = evaluate_interactive(GranularityPredictor(tiny_model), samples, config=config)
    assert [r.ious for r in first.instances] == [r.ious for r in again.instances]
    assert [r.clicks for r in first.instances] == [r.clicks for r in again.instances]
    for instance in first.instances:
        assert 1 <= len(instance.ious) <= 3
        assert all(0.0 <= v <= 1.0 for v in instance.ious)
        assert len(instance.clicks) == len(instance.ious) == len(instance.granularities)
        assert instance.clicks[0].positive  # empty prediction: a positive click first
    s = first.summary
    assert s.count == 2
    assert all(1.0 <= v <= 3.0 for v in s.noc.values())
    assert 0.0 <= s.one_click_iou <= 1.0
    if method == "granularity":
        assert all(r.chosen_granularity in (0.2, 0.6, 1.0) for r in first.instances)
        assert first.prediction_mode == "granularity"


def test_oracle_first_click_is_at_least_the_search_first_click(tiny_model, samples) -> None:
    predictor = GranularityPredictor(tiny_model)
    grid = (0.1, 0.5, 1.0)
    search = evaluate_interactive(
        predictor, samples, config=InteractiveConfig(max_clicks=2, granularities=grid)
    )
    oracle = evaluate_interactive(
        predictor,
        samples,
        config=InteractiveConfig(method="granularity-oracle", max_clicks=2, granularities=grid),
    )
    for s, o in zip(search.instances, oracle.instances, strict=True):
        assert o.ious[0] >= s.ious[0] - 1e-12
        # when every g fails, the search keeps the best first click: the oracle's first mask
        if s.ious[-1] < 0.9:
            assert o.ious[0] == pytest.approx(s.ious[0])


def test_sam2_single_mask_falls_back_to_the_best_scored_multimask(make_tiny, scene_image) -> None:
    model = make_tiny(3)
    predictor = GranularityPredictor(model)
    embedding = predictor.embed(scene_image)
    prompts = Prompts.from_arrays([[60.5, 45.5], [10.5, 10.5]], [1, 0])
    # a stability threshold above 1 makes SAM-2 always take its best-scored multimask output
    model.sam_mask_decoder.dynamic_multimask_stability_thresh = 2.0
    single = predictor.predict_sam2(embedding, prompts, multimask_output=False)
    multi = predictor.predict_sam2(embedding, prompts)
    best = int(np.argmax(multi.scores))
    assert single.masks.shape == (1, *scene_image.shape[:2])
    np.testing.assert_array_equal(single.masks[0], multi.masks[best])
    np.testing.assert_allclose(single.low_res_logits[0], multi.low_res_logits[best], atol=1e-5)
    assert single.scores[0] == pytest.approx(multi.scores[best], abs=1e-6)


def test_ar1000_on_the_tiny_model(tiny_model, scene_image) -> None:
    rect = np.zeros(scene_image.shape[:2], dtype=bool)
    rect[20:70, 30:90] = True
    config = ARConfig(
        granularities=(0.3, 1.0),
        whole_image=WholeImageConfig(
            points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
        ),
    )
    predictor = GranularityPredictor(tiny_model)
    result = run_ar_evaluation(predictor, [(scene_image, [rect])], config=config)
    assert 0 < result.predictions <= 2 * 16
    assert result.images == 1 and result.gt_masks == 1
    assert 0.0 <= result.ar1000 <= 1.0
    assert evaluate_ar1000(predictor, [(scene_image, [rect])], config=config) == result.ar1000
