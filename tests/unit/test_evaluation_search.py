"""Method logic of the interactive loop with a scripted fake predictor (no model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from core_model.types import MaskPrediction, Prompts
from labeling_pipeline.evaluation import (
    EvalSample,
    EvaluationError,
    InteractiveConfig,
    evaluate_interactive,
    evaluate_methods,
)

H = W = 20
GT = np.zeros((H, W), dtype=bool)
GT[0:10, 0:10] = True  # 100 px


def rows(n: int) -> np.ndarray:
    """A mask inside GT with IoU n / 10 (the first n rows of the GT square)."""
    mask = np.zeros((H, W), dtype=bool)
    mask[0:n, 0:10] = True
    return mask


EMPTY = np.zeros((H, W), dtype=bool)


@dataclass(frozen=True)
class _Info:
    granularity_mode: str = "granularity"


@dataclass(frozen=True)
class _Model:
    info: _Info = _Info()


class ScriptedPredictor:
    """Returns, for granularity g and k clicks, `script[g][min(k, len) - 1]`."""

    def __init__(self, script: dict[float, list[np.ndarray]], multimask=None) -> None:
        self.script = script
        self.multimask = multimask or [EMPTY, EMPTY, EMPTY]
        self.model = _Model()
        self.calls: list[tuple[str, int, tuple[float, ...]]] = []

    def embed(self, image: np.ndarray, *, key: str | None = None) -> str:
        return "embedding"

    def _mask(self, granularity: float, clicks: int) -> np.ndarray:
        masks = self.script.get(round(granularity, 1), [EMPTY])
        return masks[min(clicks, len(masks)) - 1]

    def _prediction(self, masks: list[np.ndarray], granularities: tuple[float, ...]):
        return MaskPrediction(
            masks=np.stack(masks),
            scores=np.zeros(len(masks), dtype=np.float32),
            low_res_logits=np.zeros((len(masks), 4, 4), dtype=np.float32),
            granularities=granularities,
            mode="granularity",
            model_version="fake",
        )

    def predict(self, embedding, prompts: Prompts, *, granularity: float, mask_input=None):
        self.calls.append(("predict", len(prompts.points), (granularity,)))
        return self._prediction([self._mask(granularity, len(prompts.points))], (granularity,))

    def predict_many(self, embedding, prompts: Prompts, granularities, *, mask_input=None):
        values = tuple(granularities)
        self.calls.append(("many", len(prompts.points), values))
        masks = [self._mask(g, len(prompts.points)) for g in values]
        return self._prediction(masks, values)

    def predict_sam2(self, embedding, prompts: Prompts, *, multimask_output=True, mask_input=None):
        self.calls.append(("sam2", len(prompts.points), ()))
        return self._prediction(list(self.multimask), ())


SAMPLE = EvalSample(np.zeros((H, W, 3), dtype=np.uint8), GT, image_id="img", instance_id="a")
GRID = (0.1, 0.2, 0.3, 0.4)


def config(method: str = "granularity", **kwargs) -> InteractiveConfig:
    return InteractiveConfig(method=method, granularities=GRID, max_clicks=5, **kwargs)


def test_instance_search_keeps_the_fewest_clicks_and_abandons_early() -> None:
    predictor = ScriptedPredictor(
        {
            0.1: [EMPTY],  # never: 5 clicks
            0.2: [rows(3), rows(5), GT],  # reaches 0.9 at click 3
            0.3: [rows(2), GT],  # reaches at click 2: the best
            0.4: [rows(8)],  # never: abandoned after 2 clicks
        }
    )
    result = evaluate_interactive(predictor, [SAMPLE], config=config())
    instance = result.instances[0]
    assert instance.chosen_granularity == 0.3
    assert instance.ious == (0.2, 1.0)
    assert instance.granularities == (0.3, 0.3)
    assert result.summary.noc == {"NoC80": 2.0, "NoC90": 2.0}
    assert result.summary.one_click_iou == pytest.approx(0.2)
    # 5 (g 0.1) + 3 (g 0.2) + 2 (g 0.3) + 2 (g 0.4, abandoned) decoder calls
    assert instance.decoder_calls == 12 and instance.sequences == 4
    assert [c[1] for c in predictor.calls if c[2] == (0.4,)] == [1, 2]
    full = evaluate_interactive(predictor, [SAMPLE], config=config(abandon_early=False))
    assert full.instances[0].decoder_calls == 15
    assert full.instances[0].ious == instance.ious


def test_instance_search_ties_go_to_the_higher_first_click_iou_then_smaller_g() -> None:
    predictor = ScriptedPredictor(
        {0.1: [rows(3), GT], 0.2: [rows(6), GT], 0.3: [rows(6), GT], 0.4: [rows(8)]}
    )
    result = evaluate_interactive(predictor, [SAMPLE], config=config())
    assert result.instances[0].chosen_granularity == 0.2
    assert result.instances[0].ious == (0.6, 1.0)


def test_instance_search_when_every_g_fails() -> None:
    predictor = ScriptedPredictor({0.1: [rows(2)], 0.2: [rows(4)], 0.3: [rows(1)], 0.4: [EMPTY]})
    result = evaluate_interactive(predictor, [SAMPLE], config=config())
    instance = result.instances[0]
    assert instance.chosen_granularity == 0.2  # best first-click IoU among equal failures
    assert len(instance.ious) == 5
    assert result.summary.noc["NoC90"] == 5.0 and result.summary.nof["NoF90"] == 1


def test_per_click_oracle_takes_the_best_mask_of_one_batched_call() -> None:
    predictor = ScriptedPredictor(
        {0.1: [rows(2), rows(9)], 0.2: [rows(5), rows(3)], 0.3: [EMPTY], 0.4: [rows(4), GT]}
    )
    result = evaluate_interactive(predictor, [SAMPLE], config=config("granularity-oracle"))
    instance = result.instances[0]
    assert instance.ious == (0.5, 1.0)
    assert instance.granularities == (0.2, 0.4)
    assert instance.chosen_granularity is None
    assert predictor.calls == [("many", 1, GRID), ("many", 2, GRID)]
    assert result.summary.noc == {"NoC80": 2.0, "NoC90": 2.0}


def test_sam2_best_of_three_is_an_oracle_over_the_three_masks() -> None:
    predictor = ScriptedPredictor({}, multimask=[rows(2), rows(7), EMPTY])
    result = evaluate_interactive(predictor, [SAMPLE], config=config("sam2-best-of-3"))
    assert result.instances[0].ious == (0.7,) * 5
    assert result.prediction_mode == "sam2"
    assert result.summary.noc["NoC80"] == 5.0


def test_several_methods_share_one_pass_and_tuples_are_samples() -> None:
    predictor = ScriptedPredictor({0.1: [GT]}, multimask=[rows(9), EMPTY, EMPTY])
    results = evaluate_methods(
        [(predictor, config()), (predictor, config("sam2-best-of-3"))],
        [(SAMPLE.image, SAMPLE.gt), (SAMPLE.image, SAMPLE.gt, None)],
    )
    assert [r.method for r in results] == ["granularity", "sam2-best-of-3"]
    assert [r.summary.count for r in results] == [2, 2]
    assert results[0].summary.noc["NoC90"] == 1.0 and results[1].summary.noc["NoC90"] == 1.0
    assert results[0].instances[1].instance_id == "1"


def test_ignore_pixels_do_not_count() -> None:
    ignore = np.zeros((H, W), dtype=bool)
    ignore[5:10, 0:10] = True  # the lower half of the GT square
    sample = EvalSample(SAMPLE.image, GT, ignore)
    predictor = ScriptedPredictor({}, multimask=[rows(5), EMPTY, EMPTY])
    result = evaluate_interactive(predictor, [sample], config=config("sam2-best-of-3"))
    assert result.instances[0].ious == (1.0,)


def test_bad_configs_raise() -> None:
    with pytest.raises(EvaluationError):
        InteractiveConfig(method="magic")
    with pytest.raises(EvaluationError):
        InteractiveConfig(stop_iou=0.85)  # below the NoC90 target
    with pytest.raises(EvaluationError):
        InteractiveConfig(granularities=(0.0,))
    assert InteractiveConfig(iou_thresholds=(0.85,)).target_iou == 0.85
