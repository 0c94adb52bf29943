"""Pseudo-label JSON (pycocotools-loadable, atomic), config round trip and GrabCut refinement."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from core_model.masks import encode_coco_rle
from labeling_pipeline.pseudo_labels import (
    PseudoLabelConfig,
    PseudoLabelConfigError,
    PseudoLabelOutputError,
    PseudoMask,
)
from labeling_pipeline.pseudo_labels import output as output_module
from labeling_pipeline.pseudo_labels.output import (
    build_pseudo_label_json,
    granularities_of,
    read_pseudo_label_json,
    write_json_atomic,
)
from labeling_pipeline.pseudo_labels.refine import RefineConfig, accept_refined, grabcut_refine


def pseudo_mask(mask: np.ndarray, *, part: bool, g: float, instance: int = 1) -> PseudoMask:
    ys, xs = np.nonzero(mask)
    box = (float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1))
    return PseudoMask(encode_coco_rle(mask), int(mask.sum()), box, g, instance, part, 0.9, "ncut")


def two_masks() -> list[PseudoMask]:
    whole = np.zeros((40, 60), dtype=bool)
    whole[5:35, 10:50] = True
    part = np.zeros_like(whole)
    part[5:15, 10:30] = True
    return [pseudo_mask(whole, part=False, g=1.0), pseudo_mask(part, part=True, g=0.1)]


def test_json_schema_and_pycocotools(tmp_path: Path) -> None:
    payload = build_pseudo_label_json(
        two_masks(), file_name="a.jpg", image_id=7, height=40, width=60
    )
    assert set(payload) == {"info", "licenses", "categories", "image", "annotations"}
    assert payload["categories"][0]["name"] == "fg"
    assert payload["image"] == {"id": 7, "file_name": "a.jpg", "width": 60, "height": 40}
    first, second = payload["annotations"]
    assert first["is_divide"] and not first["is_part"] and first["granularity"] == 1.0
    assert second["is_part"] and not second["is_divide"] and second["instance_id"] == 1
    assert first["bbox"] == [10.0, 5.0, 40.0, 30.0] and first["area"] == 1200
    assert isinstance(first["segmentation"]["counts"], str)
    path = tmp_path / "a.json"
    write_json_atomic(path, payload)
    coco = COCO()
    coco.dataset = {**json.loads(path.read_text()), "images": [payload["image"]]}
    coco.createIndex()
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[7])):
        decoded = coco.annToMask(ann)
        assert decoded.shape == (40, 60) and decoded.sum() == ann["area"]
        assert mask_utils.toBbox(coco.annToRLE(ann)).tolist() == ann["bbox"]


def test_mismatched_mask_size_is_refused() -> None:
    with pytest.raises(PseudoLabelOutputError, match="size"):
        build_pseudo_label_json(two_masks(), file_name="a.jpg", image_id=1, height=41, width=60)


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path, monkeypatch) -> None:
    def broken_dump(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output_module.json, "dump", broken_dump)
    with pytest.raises(PseudoLabelOutputError, match="No space"):
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.json"
    write_json_atomic(path, {"annotations": [], "image": {}})
    write_json_atomic(path, {"annotations": [{"granularity": 0.5}], "image": {}})
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]
    assert read_pseudo_label_json(path) == {"annotations": [{"granularity": 0.5}], "image": {}}


def test_read_refuses_junk_and_granularity_defaults(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[]")
    assert read_pseudo_label_json(tmp_path / "bad.json") is None
    assert read_pseudo_label_json(tmp_path / "list.json") is None
    assert read_pseudo_label_json(tmp_path / "missing.json") is None
    anns = [{"granularity": 0.3}, {}, {"granularity": "x"}, {"granularity": math.nan}]
    assert granularities_of({"annotations": anns}) == [0.3, 1.0, 1.0, 1.0]


def test_config_round_trip_and_errors() -> None:
    config = PseudoLabelConfig.from_mapping(
        {"nms_iou": 0.7, "ncut": {"tau": 0.3}, "merge_thresholds": [0.8, 0.6]}
    )
    assert config.nms_iou == 0.7 and config.ncut.tau == 0.3
    assert config.merge_thresholds == (0.8, 0.6)
    assert PseudoLabelConfig.from_mapping(json.loads(json.dumps(config.to_dict()))) == config
    assert PseudoLabelConfig.from_mapping(None) == PseudoLabelConfig()
    with pytest.raises(PseudoLabelConfigError, match="ncut.bogus"):
        PseudoLabelConfig.from_mapping({"ncut": {"bogus": 1}})
    with pytest.raises(PseudoLabelConfigError, match="nms_iou"):
        PseudoLabelConfig(nms_iou=1.5)
    with pytest.raises(PseudoLabelConfigError, match="regroup_end_fraction"):
        PseudoLabelConfig.from_mapping({"regroup_end_fraction": 1.5})
    with pytest.raises(PseudoLabelConfigError, match="split_neck_ncut"):
        PseudoLabelConfig.from_mapping({"split_neck_ncut": float("nan")})
    with pytest.raises(PseudoLabelConfigError, match="regroup_min_elongation"):
        PseudoLabelConfig(regroup_min_elongation=-1.0)
    with pytest.raises(PseudoLabelConfigError, match="regroup_carry_fraction"):
        PseudoLabelConfig.from_mapping({"regroup_carry_fraction": -0.1})
    with pytest.raises(PseudoLabelConfigError, match="regroup_tie_ratio"):
        PseudoLabelConfig(regroup_tie_ratio=float("nan"))


def test_grabcut_snaps_a_blocky_mask_to_the_object() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(120, 6, size=(120, 160, 3)).clip(0, 255).astype(np.uint8)
    truth = np.zeros((120, 160), dtype=np.uint8)
    cv2.circle(truth, (80, 60), 35, 1, -1)
    image[truth > 0] = [200, 60, 40]
    truth = truth > 0
    blocky = cv2.resize(
        cv2.resize(truth.astype(np.uint8), (10, 8), interpolation=cv2.INTER_AREA), (160, 120),
        interpolation=cv2.INTER_NEAREST,
    ) > 0  # fmt: skip

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / (a | b).sum())

    refined = grabcut_refine(image, blocky, band_px=16)
    assert iou(refined, truth) > 0.95 > iou(blocky, truth)
    assert accept_refined(blocky, refined, RefineConfig())
    assert not accept_refined(blocky, np.zeros_like(blocky), RefineConfig())
    assert not accept_refined(blocky, ~blocky, RefineConfig())  # IoU 0 and area > 90 %
    assert grabcut_refine(image, np.zeros_like(truth), band_px=4).sum() == 0
