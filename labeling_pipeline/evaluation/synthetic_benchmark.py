"""The synthetic part/whole benchmark, end to end on CPU.

Generated scenes (objects made of distinct parts, with known hierarchies) -> pseudo-labels with
the weight-free extractor -> a tiny model trained from scratch twice from the same random
initialisation: once with the granularity input, once SAM-2 style (three masks, no granularity)
-> evaluation on held-out scenes against their true wholes and parts: NoC90 and
1-IoU for the untrained model, the SAM-2-style model (single mask, and best of three) and the
granularity model (per-instance granularity search, and the per-click oracle, which like best of
three picks with the ground truth at every click), plus the share of nested click points
(inside a part, hence inside its whole) whose mask area grows with granularity.

The prompt encoder and mask decoder are trained; the image encoder keeps its random
initialisation (its features are cached). Training the encoder too from scratch on a few dozen
images collapsed to blob-shaped masks in our trials (`trainable="all"` remains available).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from labeling_pipeline.evaluation.interactive import InteractiveConfig, evaluate_methods
from labeling_pipeline.evaluation.samples import EvalSample
from labeling_pipeline.evaluation.synthetic import SceneConfig, SyntheticScene, generate_scenes
from labeling_pipeline.evaluation.synthetic_harder import HarderSceneConfig, generate_harder_scene

logger = logging.getLogger(__name__)

SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
STYLES = ("simple", "harder")


@dataclass(frozen=True)
class SyntheticBenchmarkConfig:
    """Sizes and recipe of the benchmark.

    Attributes:
        train_scenes: Generated training images (pseudo-labelled, never their ground truth).
        test_scenes: Held-out images, evaluated against their true hierarchies.
        style: Scene style of training and held-out images: ``simple``
            (`evaluation.synthetic`, `scene`) or ``harder`` (`evaluation.synthetic_harder`,
            `harder_scene`).
        scene: Scene generator settings of the simple style.
        harder_scene: Scene generator settings of the harder style (a fixed 320 px long side by
            default: the tiny model's input is 256 px, so larger scenes only cost time).
        steps: Training steps per model.
        train: Training settings shared by both trained models (see `TrainConfig`).
        max_clicks: Click budget of the interactive protocol.
        granularities: Grid of the per-instance granularity search.
        area_tolerance: Relative area decrease still counted as "not shrinking" (5 %).
        seed: Seed of scenes, initialisation and training.
    """

    train_scenes: int = 48
    test_scenes: int = 12
    style: str = "simple"
    scene: SceneConfig = field(default_factory=lambda: SceneConfig(height=192, width=256))
    harder_scene: HarderSceneConfig = field(
        default_factory=lambda: HarderSceneConfig(long_side_px=(320, 320))
    )
    steps: int = 1500
    train: dict[str, Any] = field(
        default_factory=lambda: {
            "trainable": "decoder",
            "lora": None,
            "lr": 1e-3,
            "min_lr": 1e-4,
            "images_per_step": 4,
            "max_masks_per_image": 8,
            "correction_clicks": 1,
            "loss_at_image_size": False,
            "cache_embeddings": True,
            "checkpoint_every": 500,
            "weight_decay": 1e-4,
        }
    )
    max_clicks: int = 20
    granularities: tuple[float, ...] = SWEEP
    area_tolerance: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")

    def scenes(self, count: int, seed: int) -> list[SyntheticScene]:
        """`count` scenes of the configured style with seeds `seed`, `seed + 1`, ...."""
        if self.style == "harder":
            return [generate_harder_scene(seed + i, self.harder_scene) for i in range(count)]
        return list(generate_scenes(count, seed=seed, config=self.scene))


def heldout_samples(scenes: Sequence[SyntheticScene]) -> list[EvalSample]:
    """Every whole and every part of the held-out scenes as one instance."""
    return [
        EvalSample(
            scene.image,
            region.mask,
            None,
            f"scene{scene.seed}",
            f"{'part' if region.is_part else 'whole'}{region.region_id}",
        )
        for scene in scenes
        for region in scene.regions
    ]


def nested_points(
    scenes: Sequence[SyntheticScene],
) -> list[tuple[npt.NDArray[np.uint8], float, float]]:
    """One click per part: its pixel farthest from the part's border (inside its whole too)."""
    points = []
    for scene in scenes:
        for obj in scene.objects:
            for part in obj.parts:
                distance = cv2.distanceTransform(
                    np.pad(part.mask, 1).astype(np.uint8), cv2.DIST_L2, 5
                )[1:-1, 1:-1]
                y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
                points.append((scene.image, float(x) + 0.5, float(y) + 0.5))
    return points


def area_growth(
    predictor: Any,
    points: Sequence[tuple[Any, float, float]],
    *,
    granularities: Sequence[float],
    tolerance: float,
) -> dict[str, float]:
    """How mask area follows granularity at click points, over a sweep of granularities.

    Returns shares of points where: "grows" - the area at the largest granularity exceeds the
    area at the smallest and area and granularity are positively rank-correlated; "coarse" - the
    area never shrinks (beyond `tolerance`) over the smallest, middle and largest granularity;
    "monotone" - it never shrinks over the whole sweep.
    """
    from scipy.stats import spearmanr

    from core_model.types import Prompts

    counts = {"grows": 0, "coarse": 0, "monotone": 0}
    coarse = [0, len(granularities) // 2, len(granularities) - 1]
    for image, x, y in points:
        result = predictor.predict_many(
            predictor.embed(image), Prompts.from_arrays([[x, y]], [1]), list(granularities)
        )
        areas = result.masks.reshape(len(granularities), -1).sum(1).astype(float)
        rho = spearmanr(granularities, areas).statistic if np.ptp(areas) > 0 else 0.0
        counts["grows"] += int(areas[-1] > areas[0] and rho > 0)
        for name, series in (("coarse", areas[coarse]), ("monotone", areas)):
            shrink = np.diff(series) < -tolerance * np.maximum(series[:-1], 1.0)
            counts[name] += int(not shrink.any() and series[-1] > series[0])
    return {name: count / max(len(points), 1) for name, count in counts.items()}


def _write_training_data(
    scenes: Sequence[SyntheticScene], folder: Path
) -> list[tuple[Path, Path, str]]:
    from PIL import Image

    from labeling_pipeline.pseudo_labels import build_feature_extractor, pseudo_label_image_file

    extractor = build_feature_extractor("color")
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for scene in scenes:
        path = folder / f"scene{scene.seed:05d}.png"
        if not path.exists():
            Image.fromarray(scene.image).save(path)
        result = pseudo_label_image_file(path, folder / "json", extractor=extractor)
        if result.ok and result.json_path is not None:
            pairs.append((path, result.json_path, f"scene:{scene.seed}"))
    return pairs


def _train(
    initial: dict[str, Any],
    images: Sequence[Any],
    settings: dict[str, Any],
    run_dir: Path,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    from core_model.build import build_model
    from labeling_pipeline.training.config import TrainConfig
    from labeling_pipeline.training.loop import Trainer

    model = build_model("test-tiny")
    model.load_state_dict(initial)
    result = Trainer(
        model, images, TrainConfig.from_mapping(settings), run_dir=run_dir, show_progress=progress
    ).train()
    return model, result.metrics


def run_synthetic_benchmark(
    out_dir: Path,
    config: SyntheticBenchmarkConfig | None = None,
    *,
    progress: bool = False,
    log: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Run everything; write ``report.md`` and ``report.json`` into `out_dir`; return the rows."""
    import torch

    from core_model.build import build_model
    from core_model.predictor import GranularityPredictor
    from labeling_pipeline.training.data import training_images

    cfg = config or SyntheticBenchmarkConfig()
    start = time.perf_counter()
    train_scenes = cfg.scenes(cfg.train_scenes, cfg.seed)
    held_out = cfg.scenes(cfg.test_scenes, cfg.seed + 100_000)
    images = training_images(_write_training_data(train_scenes, out_dir / "train"))
    masks = sum(len(i.annotations) for i in images)
    log(f"pseudo-labels: {len(images)} images, {masks} masks")
    torch.manual_seed(cfg.seed)
    untrained = build_model("test-tiny")
    initial = {k: v.clone() for k, v in untrained.state_dict().items()}
    common = {**cfg.train, "steps": cfg.steps, "seed": cfg.seed}
    granular, granular_metrics = _train(
        initial, images, {**common, "mode": "granularity"}, out_dir / "run-granularity", progress
    )
    sam2, sam2_metrics = _train(
        initial, images, {**common, "mode": "sam2-multimask"}, out_dir / "run-sam2", progress
    )
    predictors = {
        name: GranularityPredictor(model)
        for name, model in (("untrained", untrained), ("sam2", sam2), ("granularity", granular))
    }
    runs = [
        ("untrained (granularity search)", predictors["untrained"], "granularity"),
        ("trained without granularity, single mask", predictors["sam2"], "sam2-single"),
        ("trained without granularity, best of 3", predictors["sam2"], "sam2-best-of-3"),
        ("trained with granularity (search)", predictors["granularity"], "granularity"),
        (
            "trained with granularity, per-click oracle",
            predictors["granularity"],
            "granularity-oracle",
        ),
    ]
    results = evaluate_methods(
        [
            (p, InteractiveConfig(m, max_clicks=cfg.max_clicks, granularities=cfg.granularities))
            for _, p, m in runs
        ],
        heldout_samples(held_out),
    )
    points = nested_points(held_out)
    rows = []
    for (name, predictor, method), result in zip(runs, results, strict=True):
        growth = (
            area_growth(
                predictor, points, granularities=cfg.granularities, tolerance=cfg.area_tolerance
            )
            if method == "granularity"
            else None
        )
        rows.append(
            {
                "model": name,
                "method": method,
                "noc90": result.summary.noc["NoC90"],
                "noc80": result.summary.noc["NoC80"],
                "one_click_iou": result.summary.one_click_iou,
                "area_vs_granularity": growth,
            }
        )
    report = {
        "config": asdict(cfg),
        "rows": rows,
        "instances": len(heldout_samples(held_out)),
        "nested_points": len(points),
        "training": {"granularity": granular_metrics, "sam2": sam2_metrics},
        "pseudo_label_masks": masks,
        "seconds": round(time.perf_counter() - start, 1),
    }
    _write_report(out_dir, report)
    return report


def _write_report(out_dir: Path, report: dict[str, Any]) -> None:
    lines = [
        "# Synthetic part/whole benchmark",
        "",
        f"Style {report['config']['style']}: "
        f"{report['instances']} held-out instances (wholes and parts), "
        f"{report['nested_points']} nested click points; "
        f"{report['config']['steps']} training steps per model, {report['seconds']} s.",
        "",
        "| model | NoC80 | NoC90 | 1-IoU | area grows | coarse monotone | monotone |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        growth = row["area_vs_granularity"] or {}
        shares = [
            f"{growth[key]:.1%}" if key in growth else "" for key in ("grows", "coarse", "monotone")
        ]
        lines.append(
            f"| {row['model']} | {row['noc80']:.2f} | {row['noc90']:.2f} | "
            f"{row['one_click_iou']:.3f} | {' | '.join(shares)} |"
        )
    lines += [
        "",
        "Area columns: shares of nested click points where the mask area at the largest "
        "granularity exceeds the smallest and is positively rank-correlated with it (grows); "
        "never shrinks over the smallest, middle and largest granularity (coarse monotone); "
        f"never shrinks over the whole sweep {tuple(report['config']['granularities'])} "
        f"(monotone), each within {report['config']['area_tolerance']:.0%}.",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
