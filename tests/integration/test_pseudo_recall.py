"""End-to-end recall of the divide-and-conquer pipeline on synthetic part/whole scenes.

Weight-free extractor, default config: every ground-truth whole and part must be matched by an
output mask at IoU >= 0.8 in at least 90 % of cases, and granularities must order parts below
their wholes.
"""

from __future__ import annotations

import numpy as np
import pytest

from labeling_pipeline.evaluation.synthetic import generate_scenes
from labeling_pipeline.pseudo_labels import build_feature_extractor, pseudo_label_image

SEEDS = 6


@pytest.fixture(scope="module")
def runs():
    extractor = build_feature_extractor("color")
    return [(scene, pseudo_label_image(scene.image, extractor)) for scene in generate_scenes(SEEDS)]


def best_matches(scene, masks):
    """Return {region_id: (best IoU, index of the best output mask)}."""
    stacked = np.stack([m.decode() for m in masks]).reshape(len(masks), -1).astype(np.float32)
    areas = stacked.sum(axis=1)
    out = {}
    for region in scene.regions:
        truth = region.mask.reshape(-1).astype(np.float32)
        inter = stacked @ truth
        iou = inter / (areas + truth.sum() - inter)
        out[region.region_id] = (float(iou.max()), int(iou.argmax()))
    return out


def test_recall_of_wholes_and_parts_at_iou_08(runs) -> None:
    hits = {False: [], True: []}
    for scene, masks in runs:
        matches = best_matches(scene, masks)
        for region in scene.regions:
            hits[region.is_part].append(matches[region.region_id][0] >= 0.8)
    whole_recall, part_recall = np.mean(hits[False]), np.mean(hits[True])
    print(f"recall@0.8: wholes {whole_recall:.3f} ({len(hits[False])}), "
          f"parts {part_recall:.3f} ({len(hits[True])})")  # fmt: skip
    assert whole_recall >= 0.9
    assert part_recall >= 0.9


def test_matched_parts_have_lower_granularity_than_their_wholes(runs) -> None:
    for scene, masks in runs:
        matches = best_matches(scene, masks)
        for region in scene.regions:
            if not region.is_part:
                continue
            part_iou, part_index = matches[region.region_id]
            whole_iou, whole_index = matches[region.parent_id]
            if part_iou >= 0.8 and whole_iou >= 0.8:
                assert masks[part_index].is_part and not masks[whole_index].is_part
                assert masks[part_index].granularity < masks[whole_index].granularity


def test_every_hierarchy_is_consistent(runs) -> None:
    for _, masks in runs:
        instances = {m.instance_id: m for m in masks if not m.is_part}
        assert instances
        for m in masks:
            assert 0.1 <= m.granularity <= 1.0
            assert m.area > 0 and m.area == int(m.decode().sum())
            if m.is_part:
                head = instances[m.instance_id]
                assert m.granularity < head.granularity == 1.0
                assert m.area < head.area
        for instance_id in instances:
            family = [m for m in masks if m.instance_id == instance_id]
            if len(family) > 1:
                assert min(m.granularity for m in family) == 0.1
