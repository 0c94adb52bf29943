"""Training pieces: click samplers, losses, mask sampling, settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core_model.masks import encode_coco_rle
from labeling_pipeline.training.clicks import correction_clicks, first_clicks
from labeling_pipeline.training.config import TrainConfig, TrainConfigError
from labeling_pipeline.training.data import TrainingImage, read_annotations, sample_masks
from labeling_pipeline.training.losses import dice_loss, focal_loss, mask_iou, mask_losses


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_first_clicks_fall_inside_their_masks() -> None:
    rng = np.random.default_rng(0)
    gt = np.stack([rect(20, 30, 2, 5, 3, 9), rect(20, 30, 10, 19, 20, 29)])
    for _ in range(20):
        xy = first_clicks(gt, rng)
        for (x, y), mask in zip(xy, gt, strict=True):
            assert mask[int(y), int(x)]


def test_graco_sampler_clicks_deep_inside_the_larger_error() -> None:
    rng = np.random.default_rng(1)
    gt = rect(40, 40, 5, 35, 5, 35)[None]
    missed_core = gt.copy()
    missed_core[0, 12:28, 12:28] = False  # a big false negative in the middle
    xy, label = correction_clicks(gt, missed_core, rng, sampler="graco")
    assert label[0] == 1
    x, y = xy[0]
    assert 14 <= x <= 25 and 14 <= y <= 25  # distance > max / 2 keeps it near the centre
    overshoot = rect(40, 40, 0, 40, 0, 40)[None]
    xy, label = correction_clicks(gt, overshoot, rng, sampler="graco")
    assert label[0] == 0 and not gt[0, int(xy[0, 1]), int(xy[0, 0])]
    xy, label = correction_clicks(gt, gt.copy(), rng, sampler="graco")  # perfect: background
    assert label[0] == 0 and not gt[0, int(xy[0, 1]), int(xy[0, 0])]


def test_uniform_sampler_labels_by_the_error_kind() -> None:
    rng = np.random.default_rng(2)
    gt = rect(30, 30, 0, 15, 0, 30)[None]
    pred = rect(30, 30, 10, 30, 0, 30)[None]
    for _ in range(20):
        xy, label = correction_clicks(gt, pred, rng, sampler="uniform")
        x, y = int(xy[0, 0]), int(xy[0, 1])
        assert gt[0, y, x] != pred[0, y, x]
        assert label[0] == int(gt[0, y, x])


def test_losses_on_known_values() -> None:
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    perfect = torch.tensor([[[20.0, -20.0], [-20.0, -20.0]]])
    wrong = -perfect
    assert float(dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(dice_loss(wrong, target)) == pytest.approx(1 - 1 / 5, abs=1e-3)  # +1 smoothing
    assert float(focal_loss(perfect, target)) < 1e-8 < float(focal_loss(wrong, target))
    zero = torch.zeros(1, 2, 2)
    # focal at p = 0.5: 0.25 * ln2 * 0.25 on the positive, 0.75 * ln2 * 0.25 on negatives
    expected = (0.25 * np.log(2) * 0.25 + 3 * 0.75 * np.log(2) * 0.25) / 4
    assert float(focal_loss(zero, target)) == pytest.approx(expected, rel=1e-5)
    assert float(mask_iou(perfect, target)) == 1.0 and float(mask_iou(wrong, target)) == 0.0
    losses = mask_losses(perfect, target, torch.tensor([0.25]))
    assert float(losses["iou"]) == pytest.approx(0.75)


def test_sample_masks_resizes_and_respects_the_human_share(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    annotations = []
    for i in range(10):
        mask = rect(60, 80, i, i + 20, 2 * i, 2 * i + 30)
        annotations.append(
            {
                "segmentation": encode_coco_rle(mask),
                "granularity": 0.1 * (i + 1),
                "source": "human" if i < 5 else "conquer",
                "area": int(mask.sum()),
            }
        )
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"annotations": annotations + [{"segmentation": {}, "area": 0}]}))
    image = TrainingImage(tmp_path / "a.png", "k", tuple(read_annotations(path)))
    masks, values = sample_masks(image, rng, max_masks=4, size=32, human_share=0.75)
    assert masks.shape == (4, 32, 32) and masks.dtype == np.bool_
    chosen = [a for a in image.annotations if a["granularity"] in np.round(values, 6)]
    assert sum(a["source"] == "human" for a in chosen) == 3
    everything, _ = sample_masks(image, rng, max_masks=30, size=32)
    assert len(everything) == 10


def test_bad_granularity_values_in_json_count_as_whole(tmp_path: Path) -> None:
    mask = rect(10, 10, 0, 5, 0, 5)
    rle = encode_coco_rle(mask)
    path = tmp_path / "g.json"
    path.write_text(
        json.dumps(
            {
                "annotations": [
                    {"segmentation": rle, "area": 25},
                    {"segmentation": rle, "granularity": "x", "area": 25},
                    {"segmentation": rle, "granularity": float("nan"), "area": 25},
                    {"segmentation": rle, "granularity": 0.3, "area": 25},
                ]
            }
        )
    )
    assert [a["granularity"] for a in read_annotations(path)] == [1.0, 1.0, 1.0, 0.3]


def test_settings_validation() -> None:
    config = TrainConfig.from_mapping({"steps": 5, "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}})
    assert config.steps == 5 and config.lora.rank == 4 and config.sampler == "graco"
    assert TrainConfig().to_dict()["focal_weight"] == 20.0
    for bad in (
        {"stepz": 1},
        {"steps": 0},
        {"sampler": "random"},
        {"mode": "x"},
        {"human_share": 2.0},
        {"lr": 1e-6, "min_lr": 1e-5},
    ):
        with pytest.raises(TrainConfigError):
            TrainConfig.from_mapping(bad)
