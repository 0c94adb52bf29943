"""Benchmarks of the specialist: the synthetic task, prediction and training speed.

Quality: train on the accepted masks of `train_scenes` generated scenes ("every object", or
"every object of one template"), score on `test_scenes` other scenes (mIoU, Dice, MAE,
S-measure), and train the plain U-Net baseline (same decoder, no SAM 2 / DINOv2 features) on
the same data. Encoders here are random (no pretrained weights on this machine), so the figures
measure the architecture and the recipe, not pretrained features.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core_model.specialist import build_specialist, get_variant, parameter_counts
from core_model.specialist.predict import predict_probabilities
from labeling_pipeline.specialist.baseline import PlainUNet
from labeling_pipeline.specialist.data import Prepared, to_model_frame
from labeling_pipeline.specialist.gate import score_probabilities
from labeling_pipeline.specialist.synthetic import TaskScene, template_task
from labeling_pipeline.specialist.trainer import (
    SpecialistTrainConfig,
    SpecialistTrainer,
    predict_prepared,
)


@dataclass(frozen=True)
class TaskBenchConfig:
    """Settings of the synthetic task benchmark (sizes in pixels)."""

    variant: str = "bench-tiny"
    train_scenes: int = 40
    test_scenes: int = 20
    height: int = 256
    width: int = 320
    template: str = "any"
    epochs: int = 25
    baseline: bool = True
    seed: int = 0


def _prepared(scenes: list[TaskScene], side: int) -> Prepared:
    maps = [s.target.astype(np.uint8) for s in scenes]
    return to_model_frame([s.image for s in scenes], maps, 1, side)


def _train_and_score(
    name: str,
    model: nn.Module,
    train: Prepared,
    test: Prepared,
    cfg: SpecialistTrainConfig,
    trainable: int,
    progress: bool,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as run_dir:
        outcome = SpecialistTrainer(
            model, train, cfg, Path(run_dir), show_progress=progress
        ).train()
    start = time.perf_counter()
    probs = predict_prepared(model, test)
    predict_s = (time.perf_counter() - start) / max(len(test.images), 1)
    scores = score_probabilities(probs, test.full_targets)
    return {
        "model": name,
        **scores.to_dict(),
        "trainable_params": trainable,
        "steps": outcome.steps,
        "train_s": round(outcome.seconds, 1),
        "predict_s_per_image": round(predict_s, 4),
        "final_loss": round(float(np.mean(outcome.losses[-10:])), 4),
    }


def run_task_benchmark(
    config: TaskBenchConfig, *, show_progress: bool = False
) -> list[dict[str, Any]]:
    """Train and score the specialist (and the baseline) on the synthetic template task."""
    variant = get_variant(config.variant)
    train_scenes = template_task(
        config.train_scenes,
        seed=1000 + config.seed,
        template=config.template,
        height=config.height,
        width=config.width,
    )
    test_scenes = template_task(
        config.test_scenes,
        seed=5000 + config.seed,
        template=config.template,
        height=config.height,
        width=config.width,
    )
    train, test = (
        _prepared(train_scenes, variant.sam_size),
        _prepared(test_scenes, variant.sam_size),
    )
    cfg = SpecialistTrainConfig(variant=variant.name, epochs=config.epochs, seed=config.seed)
    torch.manual_seed(config.seed)
    model = build_specialist(variant, seed=config.seed)
    rows = [
        _train_and_score(
            f"specialist {variant.name} (random encoders)",
            model,
            train,
            test,
            cfg,
            parameter_counts(model)["trainable"],
            show_progress,
        )
    ]
    if config.baseline:
        torch.manual_seed(config.seed)
        plain = PlainUNet(variant.channels)
        count = sum(p.numel() for p in plain.parameters())
        rows.append(
            _train_and_score(
                "plain U-Net (same decoder)", plain, train, test, cfg, count, show_progress
            )
        )
    positives = sum(bool(s.target.any()) for s in test_scenes)
    for row in rows:
        row["test_images_with_target"] = positives
    return rows


def predict_speed(
    variant: str, *, height: int = 768, width: int = 1024, repeats: int = 2
) -> dict[str, Any]:
    """Time pre-annotation of one (height, width) image (random weights; best of `repeats`)."""
    model = build_specialist(variant)
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    predict_probabilities(model, image)  # warm-up
    best = min(_timed(lambda: predict_probabilities(model, image)) for _ in range(repeats))
    return {"variant": variant, "image": f"{width}x{height}", "seconds_per_image": round(best, 3)}


def train_speed(variant: str, *, images: int = 100, steps: int = 3) -> dict[str, Any]:
    """Estimate training seconds per epoch over `images` images from `steps` timed steps."""
    spec = get_variant(variant)
    model = build_specialist(spec)
    side = spec.sam_size
    rng = np.random.default_rng(0)
    data = Prepared(
        rng.integers(0, 255, (steps + 1, side, side, 3), dtype=np.uint8),
        (rng.random((steps + 1, 1, side, side)) > 0.5).astype(np.float32),
        [],
    )
    cfg = SpecialistTrainConfig(variant=spec.name, epochs=1, checkpoint_every=10_000)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = SpecialistTrainer(model, data, cfg, Path(run_dir))
        trainer.train(stop_after=1)  # warm-up
        outcome = trainer.train(stop_after=steps)
    per_step = outcome.seconds / steps
    return {
        "variant": variant,
        "seconds_per_step": round(per_step, 3),
        f"seconds_per_epoch_{images}_images": round(per_step * images, 1),
    }


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
