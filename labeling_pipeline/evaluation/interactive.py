"""Interactive evaluation: simulated click sequences, granularity search, SAM-2 baselines.

Protocol (SimpleClick / GraCo, adapted to UnSAMv2; see `clicker` and `metrics`):

- Each instance gets up to `max_clicks` (20) clicks from the deterministic `Clicker`; all clicks
  so far go to the model as points, and the sequence stops once the IoU reaches `stop_iou`
  (default: the largest NoC threshold, so every NoC comes from the same sequences).
- Previous low-resolution logits are **not** fed back as a mask prompt (the protocol for SAM
  models); `feed_previous_logits=True` changes that for experiments.
- Methods:
  - "granularity": per-instance granularity search (GraCo's default). For each g of the grid
    (0.1 .. 1.0, step 0.1) a full click sequence with g fixed; a sequence is abandoned as soon
    as it has used as many clicks as the best one so far without reaching the target. The
    instance keeps the g with the fewest clicks to reach `stop_iou`; ties go to the higher IoU
    after the first click, then to the smaller g (grid order).
  - "granularity-oracle": per-click oracle (GraCo's `--oracle`). At every click all grid values
    are decoded in one batched call (`predict_many`) and the mask with the best IoU against the
    ground truth becomes the prediction (ties: the first, i.e. smaller g).
  - "sam2-best-of-3": SAM-2 baseline, per click the best-IoU mask of the three multimask outputs.
  - "sam2-single": SAM-2 baseline, per click SAM-2's single-mask output (`predict_sam2`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from core_model.types import GRANULARITY_MAX, GRANULARITY_MIN, granularity_or_none
from labeling_pipeline.evaluation.clicker import Click, Clicker, clicks_to_prompts
from labeling_pipeline.evaluation.metrics import (
    DEFAULT_IOU_THRESHOLDS,
    DEFAULT_MAX_CLICKS,
    InteractiveSummary,
    mask_iou,
    noc,
    summarize,
)
from labeling_pipeline.evaluation.samples import EvalSample, EvaluationError, as_eval_sample

if TYPE_CHECKING:
    from core_model.predictor import GranularityPredictor
    from core_model.types import ImageEmbedding

logger = logging.getLogger(__name__)

METHODS = ("granularity", "granularity-oracle", "sam2-best-of-3", "sam2-single")
GRANULARITY_GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))

# A step decodes the clicks so far (and optional previous logits) into
# (mask (H, W) bool, low-res logits (S/4, S/4) float32, granularity used or None).
_Step = Callable[
    [Sequence[Click], npt.NDArray[np.float32] | None],
    tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32], float | None],
]


@dataclass(frozen=True)
class InteractiveConfig:
    """Settings of `evaluate_interactive`.

    Attributes:
        method: One of `METHODS`.
        max_clicks: Click budget per instance (NoC of a failure).
        iou_thresholds: Targets of the NoC metrics (0.8, 0.9: NoC80, NoC90).
        stop_iou: IoU at which a sequence stops; None means max(iou_thresholds). It may not be
            below a threshold (the NoC at that threshold would be wrong).
        granularities: Grid searched by the granularity methods, each in [0.1, 1.0].
        feed_previous_logits: Feed the previous low-res logits as mask prompt (off in the
            protocol for SAM models).
        abandon_early: Stop a per-instance search sequence once it cannot beat the best one.
    """

    method: str = "granularity"
    max_clicks: int = DEFAULT_MAX_CLICKS
    iou_thresholds: tuple[float, ...] = DEFAULT_IOU_THRESHOLDS
    stop_iou: float | None = None
    granularities: tuple[float, ...] = GRANULARITY_GRID
    feed_previous_logits: bool = False
    abandon_early: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EvaluationError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.max_clicks < 1:
            raise EvaluationError(f"max_clicks must be >= 1, got {self.max_clicks}")
        if not self.iou_thresholds or not all(0 < t <= 1 for t in self.iou_thresholds):
            raise EvaluationError(f"iou_thresholds must lie in (0, 1], got {self.iou_thresholds}")
        if self.stop_iou is not None and self.stop_iou < max(self.iou_thresholds):
            raise EvaluationError(
                f"stop_iou {self.stop_iou} is below the NoC threshold {max(self.iou_thresholds)}"
            )
        if not self.granularities or any(
            granularity_or_none(g) is None for g in self.granularities
        ):
            raise EvaluationError(
                f"granularities must lie in [{GRANULARITY_MIN}, {GRANULARITY_MAX}], "
                f"got {self.granularities}"
            )

    @property
    def target_iou(self) -> float:
        """The IoU at which a click sequence stops."""
        return self.stop_iou if self.stop_iou is not None else max(self.iou_thresholds)


@dataclass(frozen=True)
class InstanceResult:
    """The click sequence kept for one instance.

    Attributes:
        image_id: Image identifier.
        instance_id: Instance identifier.
        ious: IoU after each click (stops at the target, at most `max_clicks`).
        clicks: The clicks, (x, y) pixel indices and sign.
        granularities: Granularity of each click's mask (None for SAM-2 baselines).
        chosen_granularity: The per-instance search's g, else None.
        sequences: Click sequences run for this instance (> 1 for the per-instance search).
        decoder_calls: Decoder calls made for this instance (a batched call counts once).
    """

    image_id: str
    instance_id: str
    ious: tuple[float, ...]
    clicks: tuple[Click, ...]
    granularities: tuple[float | None, ...]
    chosen_granularity: float | None = None
    sequences: int = 1
    decoder_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        data = asdict(self)
        data["clicks"] = [c.to_dict() for c in self.clicks]
        return data


@dataclass(frozen=True)
class InteractiveResult:
    """Per-instance sequences and the summary of one method.

    Attributes:
        method: The evaluated method.
        config: The settings used.
        instances: One result per instance, in input order.
        summary: NoC@t, NoF@t, 1-IoU, mIoU curve.
        prediction_mode: The predictor's mode for the granularity methods ("granularity", or
            "sam2-multimask" when the model has no trained granularity modules), "sam2" for the
            baselines.
    """

    method: str
    config: InteractiveConfig
    instances: tuple[InstanceResult, ...]
    summary: InteractiveSummary
    prediction_mode: str = "granularity"

    def to_dict(self, *, with_instances: bool = True) -> dict[str, Any]:
        """Return a JSON-ready dict (per-instance sequences included unless told otherwise)."""
        data: dict[str, Any] = {
            "method": self.method,
            "prediction_mode": self.prediction_mode,
            "config": asdict(self.config),
            "summary": self.summary.to_dict(),
        }
        if with_instances:
            data["instances"] = [r.to_dict() for r in self.instances]
        return data


@dataclass
class _Sequence:
    ious: list[float] = field(default_factory=list)
    granularities: list[float | None] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)


def _run_sequence(
    sample: EvalSample, step: _Step, *, max_clicks: int, stop_iou: float, feed_logits: bool
) -> _Sequence:
    clicker = Clicker(sample.gt, sample.ignore)
    result = _Sequence()
    pred: npt.NDArray[np.bool_] | None = None
    logits: npt.NDArray[np.float32] | None = None
    for _ in range(max_clicks):
        if clicker.next_click(pred) is None:
            break  # no error pixel left to click
        pred, logits, granularity = step(clicker.clicks, logits if feed_logits else None)
        result.ious.append(mask_iou(sample.gt, pred, sample.ignore))
        result.granularities.append(granularity)
        if result.ious[-1] >= stop_iou:
            break
    result.clicks = list(clicker.clicks)
    return result


class _Counter:
    def __init__(self) -> None:
        self.calls = 0


def _best_by_iou(sample: EvalSample, masks: npt.NDArray[np.bool_]) -> int:
    """Return the index of the mask with the highest IoU (first on ties)."""
    ious = [mask_iou(sample.gt, m, sample.ignore) for m in masks]
    return int(np.argmax(ious))


def _make_step(
    predictor: GranularityPredictor,
    embedding: ImageEmbedding,
    sample: EvalSample,
    config: InteractiveConfig,
    counter: _Counter,
    granularity: float | None = None,
) -> _Step:
    method = config.method
    fixed = granularity if granularity is not None else config.granularities[0]

    def step(
        clicks: Sequence[Click], mask_input: npt.NDArray[np.float32] | None
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32], float | None]:
        prompts = clicks_to_prompts(clicks)
        counter.calls += 1
        if method == "granularity":
            out = predictor.predict(embedding, prompts, granularity=fixed, mask_input=mask_input)
            return out.masks[0], out.low_res_logits[0], fixed
        if method == "granularity-oracle":
            out = predictor.predict_many(
                embedding, prompts, config.granularities, mask_input=mask_input
            )
            best = _best_by_iou(sample, out.masks)
            return out.masks[best], out.low_res_logits[best], out.granularities[best]
        if method == "sam2-best-of-3":
            out = predictor.predict_sam2(embedding, prompts, mask_input=mask_input)
            best = _best_by_iou(sample, out.masks)
            return out.masks[best], out.low_res_logits[best], None
        out = predictor.predict_sam2(
            embedding, prompts, multimask_output=False, mask_input=mask_input
        )
        return out.masks[0], out.low_res_logits[0], None

    return step


def _search_granularity(
    predictor: GranularityPredictor,
    embedding: ImageEmbedding,
    sample: EvalSample,
    config: InteractiveConfig,
    counter: _Counter,
) -> tuple[_Sequence, float, int]:
    """Run the per-instance search; return the kept sequence, its g and the sequences run."""
    target, budget = config.target_iou, config.max_clicks
    best: _Sequence | None = None
    best_g, best_noc, runs = config.granularities[0], budget + 1, 0
    for granularity in config.granularities:
        limit = min(best_noc, budget) if config.abandon_early else budget
        step = _make_step(predictor, embedding, sample, config, counter, granularity)
        seq = _run_sequence(
            sample,
            step,
            max_clicks=limit,
            stop_iou=target,
            feed_logits=config.feed_previous_logits,
        )
        runs += 1
        reached = bool(seq.ious) and seq.ious[-1] >= target
        clicks = noc(seq.ious, target, max_clicks=budget)
        complete = reached or len(seq.ious) >= budget or len(seq.ious) < limit
        if not complete:
            continue  # abandoned: needs more clicks than the best sequence
        first = seq.ious[0] if seq.ious else 0.0
        if (
            best is None
            or clicks < best_noc
            or (clicks == best_noc and first > (best.ious[0] if best.ious else 0.0))
        ):
            best, best_g, best_noc = seq, granularity, clicks
    if best is None:  # unreachable: the first granularity runs a complete sequence
        raise EvaluationError("granularity search kept no sequence")
    return best, best_g, runs


def evaluate_instance(
    predictor: GranularityPredictor,
    sample: EvalSample,
    *,
    config: InteractiveConfig,
) -> InstanceResult:
    """Run the configured method on one instance.

    Args:
        predictor: The predictor (its embedding cache serves every click).
        sample: Image (H, W, 3) uint8 RGB, gt (H, W) bool, ignore (H, W) bool or None.
        config: Method and protocol settings.

    Returns:
        The kept click sequence with its IoUs.
    """
    embedding = predictor.embed(sample.image, key=sample.image_key)
    counter = _Counter()
    chosen: float | None = None
    runs = 1
    if config.method == "granularity":
        seq, chosen, runs = _search_granularity(predictor, embedding, sample, config, counter)
    else:
        step = _make_step(predictor, embedding, sample, config, counter)
        seq = _run_sequence(
            sample,
            step,
            max_clicks=config.max_clicks,
            stop_iou=config.target_iou,
            feed_logits=config.feed_previous_logits,
        )
    return InstanceResult(
        image_id=sample.image_id,
        instance_id=sample.instance_id,
        ious=tuple(seq.ious),
        clicks=tuple(seq.clicks),
        granularities=tuple(seq.granularities),
        chosen_granularity=chosen,
        sequences=runs,
        decoder_calls=counter.calls,
    )


def evaluate_interactive(
    predictor: GranularityPredictor,
    samples: Iterable[EvalSample | tuple[Any, ...]],
    *,
    config: InteractiveConfig | None = None,
    on_instance: Callable[[int, InstanceResult], None] | None = None,
) -> InteractiveResult:
    """Evaluate one method over instances: NoC@t, NoF@t, 1-IoU and per-instance sequences.

    Args:
        predictor: A `GranularityPredictor`.
        samples: `EvalSample`s or tuples (image (H, W, 3) uint8 RGB, gt (H, W) bool
            [, ignore (H, W) bool or None]).
        config: Method and protocol settings (default: per-instance granularity search).
        on_instance: Called with (index, result) after each instance (progress reports).

    Returns:
        The method's results; deterministic for a given model and inputs.
    """
    runs = [(predictor, config or InteractiveConfig())]
    callback = None if on_instance is None else (lambda i, _m, r: on_instance(i, r))
    return evaluate_methods(runs, samples, on_instance=callback)[0]


def evaluate_methods(
    runs: Sequence[tuple[GranularityPredictor, InteractiveConfig]],
    samples: Iterable[EvalSample | tuple[Any, ...]],
    *,
    on_instance: Callable[[int, str, InstanceResult], None] | None = None,
) -> list[InteractiveResult]:
    """Evaluate several (predictor, method) runs in one pass over the samples.

    Each sample is loaded once and every run evaluates it in turn, so a predictor's cached
    embedding serves all its methods.

    Args:
        runs: (predictor, config) pairs, e.g. the model with "granularity" and a SAM-2.1
            predictor with "sam2-best-of-3".
        samples: As in `evaluate_interactive`.
        on_instance: Called with (index, method, result) after each instance and run.

    Returns:
        One result per run, in the order of `runs`.
    """
    per_run: list[list[InstanceResult]] = [[] for _ in runs]
    for index, raw in enumerate(samples):
        sample = as_eval_sample(raw, index)
        for (predictor, config), results in zip(runs, per_run, strict=True):
            result = evaluate_instance(predictor, sample, config=config)
            results.append(result)
            logger.debug(
                "%s instance %s: %d clicks, IoU %.3f",
                config.method,
                sample.instance_id,
                len(result.ious),
                result.ious[-1] if result.ious else float("nan"),
            )
            if on_instance is not None:
                on_instance(index, config.method, result)
    return [
        InteractiveResult(
            method=config.method,
            config=config,
            instances=tuple(results),
            summary=summarize(
                [r.ious for r in results],
                thresholds=config.iou_thresholds,
                max_clicks=config.max_clicks,
            ),
            prediction_mode="sam2"
            if config.method.startswith("sam2")
            else predictor.model.info.granularity_mode,
        )
        for (predictor, config), results in zip(runs, per_run, strict=True)
    ]
