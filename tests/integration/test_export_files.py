"""`unsamv2 export` on JSON export files: masks -> brush JSON -> export -> pycocotools.

Scenes are generated part/whole scenes (labeling_pipeline.evaluation.synthetic) with a third
level added: a disc inside every part large enough. Their masks go through `brush_result` (the
exact result JSON the backend emits) into a Label Studio JSON export file, next to broken records.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from core_model.masks import decode_coco_rle
from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
from labeling_pipeline.export import ExportConfig, ExportError, export_annotations
from labeling_pipeline.export import reader as export_reader
from labeling_pipeline.export.png import read_index_png
from labeling_pipeline.export.reader import iter_export_file
from labeling_pipeline.export.records import SkipReport
from labeling_pipeline.export.sources import iter_source_images
from labeling_pipeline.store import Store
from labeling_pipeline.store.repository import (
    MaskRecord,
    get_or_create_project,
    record_predictions,
    replace_human_masks,
)
from ml_backend.cli import main
from ml_backend.label_studio.convert import brush_result
from ml_backend.label_studio.label_config import build_label_config

LABELS = ["Car", "Door", "Wheel"]


def three_level_scene(seed: int):
    """Return [(region id, mask, label, parent region id or None)] of a generated scene."""
    scene = generate_scene(seed, SceneConfig(height=112, width=144, clutter_count=6))
    regions = []
    for obj in scene.objects:
        regions.append((f"w{obj.object_id}", obj.mask, "Car", None))
        for part in obj.parts:
            regions.append((f"p{part.part_id}", part.mask, "Door", f"w{obj.object_id}"))
            depth = cv2.distanceTransform(part.mask.astype(np.uint8), cv2.DIST_L2, 5)
            if depth.max() >= 4:  # a disc well inside the part
                cy, cx = np.unravel_index(int(depth.argmax()), depth.shape)
                yy, xx = np.mgrid[: depth.shape[0], : depth.shape[1]]
                disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (0.6 * depth.max()) ** 2
                regions.append((f"s{part.part_id}", disc, "Wheel", f"p{part.part_id}"))
    return regions


def _result(region_id: str, mask: np.ndarray, label: str) -> dict:
    return brush_result(
        mask, region_id=region_id, from_name="mask", to_name="image", label=label, score=0.9
    )


def _broken(mask: np.ndarray) -> list[dict]:
    bad_rle = _result("bad-rle", mask, "Car")
    bad_rle["value"]["rle"] = bad_rle["value"]["rle"][:5]
    no_size = _result("no-size", mask, "Car")
    del no_size["original_height"]
    return [bad_rle, no_size, _result("boat", mask, "Boat")]


@pytest.fixture(scope="module")
def scenes():
    return {1: three_level_scene(11), 2: three_level_scene(12)}


@pytest.fixture
def export_file(tmp_path: Path, scenes) -> Path:
    first, second = scenes[1], scenes[2]
    tasks = [
        {
            "id": 1,
            "data": {"image": "/data/upload/4/0badcafe-first.png"},
            "annotations": [
                {
                    "id": 101,
                    "result": [_result(r, m, lab) for r, m, lab, _ in first] + _broken(first[0][1]),
                },
                {"id": 102, "was_cancelled": True, "result": [_result("x", first[0][1], "Car")]},
            ],
        },
        {
            "id": 2,
            "data": {"image": "/data/local-files/?d=images/second.png"},
            "annotations": [
                {
                    "id": 201,
                    "updated_at": "2025-01-01",
                    "result": [_result("old", second[0][1], "Car")],
                },
                {
                    "id": 202,
                    "updated_at": "2025-06-01",
                    "result": [_result(r, m, lab) for r, m, lab, _ in second],
                },
            ],
        },
        {"id": 3, "data": {"image": "/data/upload/4/unlabelled.png"}, "annotations": []},
        {"id": "not-a-task"},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    return path


def _run_export(tmp_path: Path, export_file: Path, monkeypatch, *extra: str) -> Path:
    monkeypatch.setenv("UNSAMV2_DATA_DIR", str(tmp_path / "data"))
    config = tmp_path / "config.xml"
    config.write_text(build_label_config(LABELS, [0.2, 1.0]))
    out = tmp_path / "out"
    argv = ["export", "--from-file", str(export_file), "--label-config", str(config)]
    assert main([*argv, "--out", str(out), "--no-progress", *extra]) == 0
    return out


def test_round_trip_masks_parents_and_categories(
    tmp_path, export_file, scenes, monkeypatch, capsys
):
    out = _run_export(tmp_path, export_file, monkeypatch)
    stdout = capsys.readouterr().out
    coco = COCO(str(out / "coco.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == LABELS
    assert sorted(coco.getImgIds()) == [1, 2]
    assert coco.imgs[2]["ls_annotation_id"] == 202 and coco.imgs[2]["file_name"] == "second.png"
    for image_id, regions in scenes.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        by_region = {a["ls_region_id"]: a for a in anns}
        assert set(by_region) == {r for r, *_ in regions}
        for region_id, mask, label, parent in regions:
            ann = by_region[region_id]
            assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
            assert coco.cats[ann["category_id"]]["name"] == label
            assert ann["area"] == int(mask.sum()) and ann["iscrowd"] == 0
            assert ann["granularity"] is None
            expected = by_region[parent]["id"] if parent else None
            assert ann["parent_id"] == expected, region_id
    assert sum(1 for r in scenes[1] + scenes[2] if r[0].startswith("s")) >= 3  # three levels
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert {(s["reason"], s.get("ls_region_id")) for s in skipped} == {
        ("bad_rle", "bad-rle"),
        ("missing_image_size", "no-size"),
        ("unknown_label", "boat"),
        ("bad_task", None),
    }
    assert "exported 2 images" in stdout and "skipped 4 records" in stdout


def test_png_masks_index_map_and_hierarchy(tmp_path, export_file, scenes, monkeypatch) -> None:
    out = _run_export(tmp_path, export_file, monkeypatch, "--formats", "png,hierarchy")
    assert not (out / "coco.json").exists()
    regions = scenes[1]
    tree = json.loads((out / "hierarchy" / "1.json").read_text())
    nodes, parent_of = {}, {}

    def walk(node, parent):
        nodes[node["ls_region_id"]] = node
        parent_of[node["ls_region_id"]] = parent
        for child in node["children"]:
            walk(child, node["ls_region_id"])

    for root in tree["regions"]:
        walk(root, None)
    assert parent_of == {r: p for r, _, _, p in regions}
    assert {n["label"] for n in nodes.values()} == set(LABELS)
    index = read_index_png(out / "masks" / "1" / "index.png")
    smallest = np.zeros(index.shape, dtype=np.int64)
    best_area = np.full(index.shape, np.iinfo(np.int64).max)
    for region_id, mask, _, _ in regions:
        node = nodes[region_id]
        png = np.asarray(cv2.imread(str(out / "masks" / "1" / f"{node['id']}.png"), 0))
        assert np.array_equal(png > 0, mask) and set(np.unique(png)) <= {0, 255}
        better = mask & (node["area"] < best_area)
        smallest[better], best_area[better] = node["index"], node["area"]
    assert np.array_equal(index, smallest)


def test_granularity_comes_from_the_store(tmp_path, export_file, scenes, monkeypatch) -> None:
    whole, part, accepted = (scenes[1][k][0] for k in range(3))
    store = Store(f"sqlite:///{tmp_path / 'data' / 'unsamv2.sqlite3'}")
    with store.session() as session:
        stored = MaskRecord(accepted, "Car", {}, 144, 112, 1, granularity=0.55)
        project_id = get_or_create_project(session, "ls-4").id
        replace_human_masks(session, project_id, ls_task_id=1, annotation_id=101, masks=[stored])
        record_predictions(
            session,
            ls_project_id=4,
            ls_task_id=1,
            regions=[(whole, "Car", 1.0), (part, "Car", 0.3)],
            model_version="v1",
        )
    store.dispose()
    out = _run_export(tmp_path, export_file, monkeypatch)
    anns = json.loads((out / "coco.json").read_text())["annotations"]
    known = {a["ls_region_id"]: a["granularity"] for a in anns if a["image_id"] == 1}
    assert (known[whole], known[part], known[accepted]) == (1.0, 0.3, 0.55)
    assert sum(v is not None for v in known.values()) == 3
    out = _run_export(tmp_path, export_file, monkeypatch, "--no-store")
    anns = json.loads((out / "coco.json").read_text())["annotations"]
    assert all(a["granularity"] is None for a in anns)


def test_without_ijson_the_same_file_is_exported(tmp_path, export_file, monkeypatch) -> None:
    streamed = tmp_path / "streamed"
    export_annotations(iter_export_file(export_file), streamed, ExportConfig(formats=("coco",)))
    monkeypatch.setattr(export_reader, "ijson_module", lambda: None)
    loaded = tmp_path / "loaded"
    export_annotations(iter_export_file(export_file), loaded, ExportConfig(formats=("coco",)))
    first, second = (json.loads((d / "coco.json").read_text()) for d in (streamed, loaded))
    assert first["annotations"] == second["annotations"] and first["images"] == second["images"]
    monkeypatch.setattr(export_reader, "FALLBACK_MAX_BYTES", 10)
    with pytest.raises(ExportError, match="ijson"):
        list(iter_export_file(export_file))


def test_the_file_is_read_lazily_and_a_truncated_one_fails_cleanly(tmp_path, export_file) -> None:
    text = export_file.read_text()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    tasks = iter_export_file(truncated)
    assert next(tasks)["id"] == 1  # the first task arrives before the broken tail is read
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="not valid JSON"):
        export_annotations(iter_export_file(truncated), out)
    assert not (out / "coco.json").exists() and not list(out.glob(".coco-*"))
    min_export = tmp_path / "min.json"
    min_export.write_text('{"image": "x"}')
    with pytest.raises(ExportError, match="JSON export"):
        list(iter_export_file(min_export))


def test_exported_coco_reads_back_as_prediction_sources(tmp_path, export_file, scenes, monkeypatch):
    out = _run_export(tmp_path, export_file, monkeypatch, "--formats", "coco")
    report = SkipReport()
    images = list(iter_source_images([out / "coco.json"], report))
    assert report.total == 0
    assert [i.file_name for i in images] == ["0badcafe-first.png", "second.png"]
    masks = {r: m for r, m, _, _ in scenes[1]}
    coco = json.loads((out / "coco.json").read_text())
    region_of = {str(a["id"]): a["ls_region_id"] for a in coco["annotations"]}
    for mask in images[0].masks:
        assert np.array_equal(decode_coco_rle(mask.rle), masks[region_of[mask.key]])


def test_bad_options_are_one_line_errors(tmp_path, export_file, monkeypatch, capsys) -> None:
    monkeypatch.setenv("UNSAMV2_DATA_DIR", str(tmp_path / "data"))
    out = str(tmp_path / "out")
    assert main(["export", "--from-file", str(export_file), "--out", out, "--formats", "x"]) == 2
    assert main(["export", "--from-file", str(tmp_path / "none.json"), "--out", out]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("unsamv2 export: error:") for e in errors)
