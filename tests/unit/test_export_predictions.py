"""Pseudo-label JSON / COCO -> Label Studio predictions, with a fake Label Studio client."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core_model.masks import brush_rle_to_mask, encode_coco_rle
from labeling_pipeline.export import ExportError, ProjectTasks
from labeling_pipeline.export.predictions import (
    LabelMap,
    PredictionImporter,
    TaskIndex,
    import_predictions,
)
from labeling_pipeline.export.records import SkipReport
from labeling_pipeline.export.sources import iter_source_images
from labeling_pipeline.label_studio.config import BrushControl

H, W = 24, 32


class FakeLabelStudio:
    """Serves the few endpoints the importer and the task reader use."""

    def __init__(self, images: dict[int, str], predictions: dict[int, list] | None = None):
        self.tasks = [
            {"id": t, "data": {"image": url}, "annotations": []} for t, url in images.items()
        ]
        self.predictions = predictions or {}
        self.posted: list[list[dict]] = []
        self.calls: list[tuple[str, dict]] = []

    def get_json(self, path: str, **params):
        self.calls.append((path, params))
        if path == "/api/tasks":
            page, size = params["page"], params["page_size"]
            fields = params["include"].split(",")
            chunk = self.tasks[(page - 1) * size : page * size]
            listed = [
                {
                    k: v
                    for k, v in {
                        **t,
                        "total_predictions": len(self.predictions.get(t["id"], [])),
                    }.items()
                    if k in fields
                }
                for t in chunk
            ]
            return {"total": len(self.tasks), "tasks": listed}
        if path.endswith("/export"):
            return [t for t in self.tasks if t["id"] in params["ids[]"]]
        if path == "/api/predictions":
            return self.predictions.get(params["task"], [])
        raise AssertionError(path)

    def request_json(self, method: str, path: str, **kwargs):
        assert (method, path) == ("POST", "/api/projects/1/import/predictions")
        self.posted.append(kwargs["json"])
        return {"created": len(kwargs["json"])}


def _mask(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _pseudo_label_file(path: Path, file_name: str, masks, granularities) -> Path:
    path.write_text(
        json.dumps(
            {
                "info": {},
                "licenses": [],
                "categories": [{"id": 1, "name": "fg", "supercategory": "fg"}],
                "image": {"id": 99, "file_name": file_name, "width": W, "height": H},
                "annotations": [
                    {
                        "id": k,
                        "image_id": 99,
                        "category_id": 1,
                        "segmentation": encode_coco_rle(m),
                        "granularity": g,
                        "is_part": g != 1.0,
                    }
                    for k, (m, g) in enumerate(zip(masks, granularities, strict=True), start=1)
                ],
            }
        )
    )
    return path


def _importer(client, report, *, default="Car", version="pl-1", recorded=None, batch=10):
    index = TaskIndex.from_project(ProjectTasks(client, 1, page_size=2), "image")
    return PredictionImporter(
        client,
        1,
        target=BrushControl("mask", "image", ("Car", "Wheel")),
        labels=LabelMap(frozenset({"Car", "Wheel"}), {}, default),
        model_version=version,
        index=index,
        report=report,
        batch_size=batch,
        on_posted=(lambda task, regions: recorded.append((task, list(regions))))
        if recorded is not None
        else None,
    )


def test_pseudo_labels_become_brush_predictions(tmp_path) -> None:
    whole, part = _mask(2, 2, 20, 30), _mask(4, 4, 10, 10)
    bad = {"size": [H, W], "counts": "!!"}
    source = _pseudo_label_file(tmp_path / "a.json", "photo.png", [whole, part], ["x", 0.3])
    doc = json.loads(source.read_text())
    doc["annotations"].append({"id": 3, "category_id": 1, "segmentation": bad})
    source.write_text(json.dumps(doc))
    client = FakeLabelStudio({5: "/data/upload/1/ab12cd34-photo.png", 6: "/data/upload/1/x.png"})
    report, recorded = SkipReport(), []
    importer = _importer(client, report, recorded=recorded)
    summary = import_predictions(importer, iter_source_images([tmp_path], report))
    assert (summary.images, summary.predictions, summary.masks) == (1, 1, 2)
    assert summary.skipped == {"bad_rle": 1}
    ((prediction,),) = client.posted
    assert prediction["task"] == 5 and prediction["model_version"] == "pl-1"
    results = prediction["result"]
    assert [r["value"]["brushlabels"] for r in results] == [["Car"], ["Car"]]
    assert {(r["from_name"], r["to_name"], r["type"]) for r in results} == {
        ("mask", "image", "brushlabels")
    }
    for result, mask in zip(results, [whole, part], strict=True):
        assert (result["original_width"], result["original_height"]) == (W, H)
        decoded = brush_rle_to_mask(result["value"]["rle"], height=H, width=W)
        assert np.array_equal(decoded, mask)
    # a non-numeric granularity reads as 1.0 (the schema's rule); both are recorded
    assert recorded == [(5, [(results[0]["id"], "Car", 1.0), (results[1]["id"], "Car", 0.3)])]
    # stable result ids
    again = _importer(FakeLabelStudio({5: "/data/upload/1/ab12cd34-photo.png"}), SkipReport())
    import_predictions(again, iter_source_images([source], SkipReport()))
    assert [r["id"] for r in again.client.posted[0][0]["result"]] == [r["id"] for r in results]


def test_unmatched_ambiguous_existing_and_unknown_labels_are_skipped(tmp_path) -> None:
    files = [
        _pseudo_label_file(tmp_path / f"{n}.json", n, [_mask(0, 0, 5, 5)], [0.5])
        for n in ("nowhere.png", "twice.png", "done.png", "fresh.png")
    ]
    client = FakeLabelStudio(
        {
            1: "/data/upload/1/aaaaaaaa-twice.png",
            2: "/data/upload/1/bbbbbbbb-twice.png",
            3: "/data/local-files/?d=imgs/done.png",
            4: "/data/upload/1/cccccccc-fresh.png",
        },
        predictions={3: [{"model_version": "pl-1"}], 4: [{"model_version": "older"}]},
    )
    report = SkipReport()
    summary = import_predictions(
        _importer(client, report), iter_source_images(files, report), on_image=lambda: None
    )
    assert summary.skipped == {"no_task": 1, "ambiguous_task": 1, "exists": 1}
    assert [p["task"] for batch in client.posted for p in batch] == [4]
    report = SkipReport()
    summary = import_predictions(
        _importer(client, report, default=None, version="pl-2"),
        iter_source_images([files[3]], report),
    )
    assert summary.skipped == {"unknown_label": 1} and summary.predictions == 0


def test_coco_files_are_grouped_by_image_whatever_the_order(tmp_path) -> None:
    masks = {(i, k): _mask(k, k, k + 5 + i, k + 6) for i in (1, 2) for k in range(3)}
    annotations = [
        {
            "id": 10 * i + k,
            "image_id": i,
            "category_id": 2 if k else 1,
            "segmentation": encode_coco_rle(masks[i, k]),
            "granularity": None if k == 2 else 0.25 * (k + 1),
        }
        for k in range(3)
        for i in (1, 2)  # interleaved images
    ]
    annotations.append({"id": 99, "image_id": 42, "category_id": 1, "segmentation": {}})
    coco = {
        "images": [
            {"id": 1, "file_name": "one.png", "width": W, "height": H},
            {"id": 2, "file_name": "two.png", "width": W, "height": H},
        ],
        "categories": [{"id": 1, "name": "Car"}, {"id": 2, "name": "Wheel"}],
        "annotations": annotations,
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    report = SkipReport()
    images = list(iter_source_images([tmp_path / "coco.json"], report))
    assert report.counts == {"bad_record": 1}
    assert [i.file_name for i in images] == ["one.png", "two.png"]
    assert [m.key for m in images[1].masks] == ["20", "21", "22"]
    assert [m.category for m in images[0].masks] == ["Car", "Wheel", "Wheel"]
    assert [m.granularity for m in images[0].masks] == [0.25, 0.5, None]
    client = FakeLabelStudio({7: "/data/upload/1/one.png", 8: "/data/upload/1/two.png"})
    summary = import_predictions(_importer(client, SkipReport(), default=None, batch=1), images)
    assert summary.predictions == 2 and len(client.posted) == 2
    labels = [r["value"]["brushlabels"][0] for r in client.posted[1][0]["result"]]
    assert labels == ["Car", "Wheel", "Wheel"]


def test_unreadable_files_are_reported(tmp_path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text('{"image": {"id": 1}, "annotations": [')
    (tmp_path / "other.json").write_text('{"something": 1}')
    report = SkipReport()
    assert list(iter_source_images([tmp_path], report)) == []
    assert report.counts == {"bad_file": 3}
    with pytest.raises(ExportError, match="does not exist"):
        list(iter_source_images([tmp_path / "missing"], report))


def test_label_map() -> None:
    labels = frozenset({"Car", "Wheel"})
    mapping = LabelMap(labels, {"fg": "Wheel"}, "Car")
    assert [mapping.resolve(c) for c in ("fg", "Wheel", "other")] == ["Wheel", "Wheel", "Car"]
    assert LabelMap(labels).resolve("other") is None
    with pytest.raises(ExportError, match="Boat"):
        LabelMap(labels, {"fg": "Boat"})


def test_task_index_prefers_explicit_names() -> None:
    index = TaskIndex()
    index.add_task(1, "/data/upload/1/0123abcd-img.png")
    assert index.match("img.png") == (1, "")
    assert index.match("dir/0123abcd-img.png") == (1, "")
    index.add_task(2, "/data/upload/1/99999999-img.png")
    assert index.match("img.png") == (None, "ambiguous_task")
    index.add("img.png", 2, override=True)
    assert index.match("img.png") == (2, "")


def test_project_tasks_stream_in_pages() -> None:
    client = FakeLabelStudio({t: f"/data/upload/1/{t}.png" for t in range(1, 8)})
    tasks = ProjectTasks(client, 1, page_size=3)
    assert tasks.total == 7
    assert [t["id"] for t in tasks] == list(range(1, 8))
    exports = [p["ids[]"] for path, p in client.calls if path.endswith("/export")]
    assert exports == [[1, 2, 3], [4, 5, 6], [7]]
    with pytest.raises(ExportError):
        ProjectTasks(client, 1, page_size=0)
