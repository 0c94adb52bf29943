"""Task -> image records: annotation choice, granularity sources, broken records reported."""

from __future__ import annotations

import numpy as np
import pytest

from core_model.masks import decode_coco_rle
from labeling_pipeline.export import ExportError
from labeling_pipeline.export.records import (
    SkipReport,
    TaskConverter,
    image_file_name,
    select_annotations,
)
from ml_backend.label_studio.convert import brush_result

H, W = 30, 40


def _mask(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _region(region_id: str, mask: np.ndarray, label: str = "Car") -> dict:
    return brush_result(
        mask, region_id=region_id, from_name="mask", to_name="image", label=label, score=0.9
    )


def _task(results_by_annotation: dict[int, list], task_id: int = 7, **flags) -> dict:
    return {
        "id": task_id,
        "data": {"image": "/data/upload/2/ab12cd34-scene.png"},
        "annotations": [
            {"id": a, "result": r, "was_cancelled": False, **flags.get(a, {})}
            for a, r in results_by_annotation.items()
        ],
    }


def test_regions_keep_masks_labels_and_sizes() -> None:
    whole, part = _mask(2, 2, 28, 38), _mask(5, 5, 12, 12)
    converter = TaskConverter(frozenset({"Car", "Wheel"}))
    images, skipped = converter.convert(
        _task({11: [_region("w", whole), _region("p", part, "Wheel")]})
    )
    assert skipped == []
    (image,) = images
    assert (image.image_id, image.ls_task_id, image.ls_annotation_id) == (7, 7, 11)
    assert (image.width, image.height, image.file_name) == (W, H, "ab12cd34-scene.png")
    assert [r.label for r in image.regions] == ["Car", "Wheel"]
    assert np.array_equal(decode_coco_rle(image.regions[0].rle), whole)
    assert image.regions[1].area == 49 and image.regions[1].bbox_xywh == (5.0, 5.0, 7.0, 7.0)
    assert all(r.granularity is None for r in image.regions)


def test_broken_records_are_reported_and_skipped() -> None:
    good = _region("good", _mask(1, 1, 9, 9))
    no_size = {k: v for k, v in _region("nosize", _mask(1, 1, 5, 5)).items()}
    del no_size["original_width"]
    bad_rle = _region("badrle", _mask(1, 1, 5, 5))
    bad_rle["value"] = {**bad_rle["value"], "rle": [0, 0, 0]}
    wrong_total = _region("total", _mask(1, 1, 5, 5))
    wrong_total["original_height"] = H + 1  # RLE holds H*W pixels, not (H+1)*W
    unknown = _region("boat", _mask(1, 1, 5, 5), "Boat")
    unlabeled = _region("nolabel", _mask(1, 1, 5, 5))
    unlabeled["value"] = {**unlabeled["value"], "brushlabels": []}
    empty = _region("empty", np.zeros((H, W), dtype=bool))
    other_size = brush_result(
        np.ones((H, 2 * W), dtype=bool),
        region_id="size",
        from_name="mask",
        to_name="image",
        label="Car",
        score=1.0,
    )
    results = [wrong_total, good, no_size, bad_rle, unknown, unlabeled, empty, other_size, "junk"]
    images, skipped = TaskConverter(frozenset({"Car"})).convert(_task({3: results}))
    assert [r.region_id for r in images[0].regions] == ["good"]
    reasons = {s.ls_region_id: s.reason for s in skipped}
    assert reasons == {
        "nosize": "missing_image_size",
        "badrle": "bad_rle",
        "total": "bad_rle",
        "boat": "unknown_label",
        "nolabel": "unknown_label",
        "empty": "empty_mask",
        "size": "size_mismatch",
    }
    assert all(s.ls_task_id == 7 and s.ls_annotation_id == 3 for s in skipped)


@pytest.mark.parametrize("task", [None, [], {"id": "x", "annotations": []}, {"id": 1}])
def test_a_task_that_is_not_a_task_is_reported(task) -> None:
    images, skipped = TaskConverter().convert(task)
    assert images == [] and [s.reason for s in skipped] == ["bad_task"]


def test_no_categories_accepts_every_label() -> None:
    images, skipped = TaskConverter(None).convert(
        _task({1: [_region("a", _mask(0, 0, 3, 3), "Anything")]})
    )
    assert skipped == [] and images[0].regions[0].label == "Anything"


def test_annotation_choice() -> None:
    old = {"id": 1, "updated_at": "2025-01-01T00:00:00Z"}
    new = {"id": 2, "updated_at": "2025-02-01T00:00:00Z"}
    truth = {"id": 3, "updated_at": "2024-01-01T00:00:00Z", "ground_truth": True}
    cancelled = {"id": 4, "updated_at": "2026-01-01T00:00:00Z", "was_cancelled": True}
    assert select_annotations([old, new, cancelled], "best") == [new]
    assert select_annotations([old, truth, new], "best") == [truth]
    assert select_annotations([old, new, cancelled], "all") == [old, new]
    assert select_annotations([cancelled, "junk"], "best") == []
    with pytest.raises(ExportError):
        TaskConverter(annotations="some")


def test_all_policy_gives_one_image_per_annotation() -> None:
    task = _task({5: [_region("a", _mask(0, 0, 3, 3))], 6: [_region("a", _mask(0, 0, 4, 4))]})
    images, _ = TaskConverter(annotations="all").convert(task)
    assert [(i.image_id, i.ls_annotation_id) for i in images] == [(5, 5), (6, 6)]
    images, _ = TaskConverter(annotations="best").convert(task)
    assert [(i.image_id, i.ls_annotation_id) for i in images] == [(7, 6)]


def test_granularity_sources_in_order() -> None:
    number = {"id": "c", "type": "number", "from_name": "granularity", "value": {"number": 0.35}}
    results = [_region(r, _mask(0, 0, 3, 3)) for r in ("a", "b", "c", "d")] + [number]
    known = {(9, "a"): 0.2, (None, "a"): 0.8, (None, "b"): 0.6, (None, "c"): 0.9}
    images, _ = TaskConverter().convert(_task({9: results}), lambda task_id: known)
    assert [r.granularity for r in images[0].regions] == [0.2, 0.6, 0.9, None]
    images, _ = TaskConverter().convert(_task({9: results}))
    assert [r.granularity for r in images[0].regions] == [None, None, 0.35, None]


def test_image_file_names() -> None:
    assert image_file_name("/data/upload/3/ab12cd34-photo.png") == "ab12cd34-photo.png"
    assert image_file_name("/data/local-files/?d=dir/sub/photo%201.jpg") == "photo 1.jpg"
    assert image_file_name("s3://bucket/key/photo.png") == "photo.png"
    assert image_file_name("photo.png") == "photo.png"


def test_skip_report_counts_and_writes_lines(tmp_path) -> None:
    from labeling_pipeline.export.records import SkippedRecord

    report = SkipReport(tmp_path / "skipped.jsonl")
    report.add(SkippedRecord("bad_rle", "truncated", 1, 2, "r"))
    report.add(SkippedRecord("bad_file", "nope", source="x.json"))
    report.close()
    lines = (tmp_path / "skipped.jsonl").read_text().splitlines()
    assert report.total == 2 and report.counts["bad_rle"] == 1
    assert '"source": "x.json"' in lines[1] and "ls_task_id" not in lines[1]
