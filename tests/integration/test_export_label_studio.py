"""`unsamv2 export` and `unsamv2 import-predictions` against a real Label Studio 1.23.

The project has a brush config (Car, Wheel); two images are uploaded; one gets an annotation
of nested brush regions (as `brush_result` makes them) plus a region with an unknown label.
The export goes through the API (one task per page), with granularities from the backend's
store, and the COCO file is checked with pycocotools. Then a pseudo-label JSON for the second
image is imported as predictions and read back through ``GET /api/predictions?task=``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image
from pycocotools.coco import COCO

from core_model.masks import encode_coco_rle
from labeling_pipeline.store import Store
from labeling_pipeline.store.repository import prediction_granularities, record_predictions
from ml_backend.label_studio.convert import brush_result
from ml_backend.label_studio.label_config import build_label_config

from helpers import label_studio_caller

H, W = 72, 96


def _masks() -> dict[str, tuple[np.ndarray, str, str | None]]:
    """Region id -> (mask, label, parent region id): a car with a wheel with a hub, a 2nd car."""
    yy, xx = np.mgrid[:H, :W]
    car = (yy >= 8) & (yy < 60) & (xx >= 4) & (xx < 56)
    wheel = (yy >= 30) & (yy < 56) & (xx >= 10) & (xx < 36)
    hub = (yy - 43) ** 2 + (xx - 23) ** 2 <= 36
    other = (yy >= 20) & (yy < 50) & (xx >= 64) & (xx < 90)
    return {
        "car": (car, "Car", None),
        "wheel": (wheel, "Wheel", "car"),
        "hub": (hub, "Wheel", "wheel"),
        "other": (other, "Car", None),
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ml_backend.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_export_and_import_predictions(label_studio, tmp_path, scene_image) -> None:
    ls_url, token = label_studio["url"], label_studio["token"]
    call = label_studio_caller(ls_url, token)

    config = build_label_config(["Car", "Wheel"], [0.3, 1.0])
    project = call(
        "POST", "/api/projects", json={"title": "unsamv2-export", "label_config": config}
    )
    tasks = []
    for name in ("scene.png", "other.png"):
        png = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(scene_image[:H, :W])).save(png, format="PNG")
        imported = call(
            "POST",
            f"/api/projects/{project['id']}/import?return_task_ids=true",
            files={"file": (name, png.getvalue(), "image/png")},
        )
        tasks += imported["task_ids"]
    regions = _masks()
    results = [
        brush_result(m, region_id=r, from_name="mask", to_name="image", label=lab, score=0.9)
        for r, (m, lab, _) in regions.items()
    ]
    results.append(
        brush_result(
            regions["car"][0],
            region_id="boat",
            from_name="mask",
            to_name="image",
            label="Boat",
            score=0.5,
        )
    )
    call("POST", f"/api/tasks/{tasks[0]}/annotations", json={"result": results})

    # the backend's store knows the granularity it used for two of the regions
    data_dir = tmp_path / "data"
    store = Store(f"sqlite:///{data_dir / 'unsamv2.sqlite3'}")
    with store.session() as session:
        record_predictions(
            session,
            ls_project_id=project["id"],
            ls_task_id=tasks[0],
            regions=[("car", "Car", 1.0), ("wheel", "Car", 0.4)],
            model_version="v1",
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNSAMV2_", "LABEL_STUDIO"))}
    env.update(
        {
            "LABEL_STUDIO_URL": ls_url,
            "LABEL_STUDIO_API_KEY": token,
            "UNSAMV2_DATA_DIR": str(data_dir),
        }
    )

    out = tmp_path / "export"
    done = _cli(
        env, "export", "--ls-project", str(project["id"]), "--out", str(out), "--page-size", "1"
    )
    assert done.returncode == 0, done.stderr
    assert "exported 1 images, 4 masks (2 with a parent, 2 with a granularity)" in done.stdout
    assert "skipped 1 records (unknown_label 1)" in done.stdout
    assert "2/2" in done.stderr  # the progress bar saw both tasks

    coco = COCO(str(out / "coco.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["Car", "Wheel"]
    (image,) = coco.loadImgs(coco.getImgIds())
    assert (image["id"], image["width"], image["height"]) == (tasks[0], W, H)
    assert image["file_name"].endswith("-scene.png")
    anns = {a["ls_region_id"]: a for a in coco.loadAnns(coco.getAnnIds())}
    assert set(anns) == set(regions)
    for region_id, (mask, label, parent) in regions.items():
        ann = anns[region_id]
        assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
        assert coco.cats[ann["category_id"]]["name"] == label
        assert ann["parent_id"] == (anns[parent]["id"] if parent else None)
    assert [anns[r]["granularity"] for r in regions] == [1.0, 0.4, None, None]
    skipped = json.loads((out / "skipped.jsonl").read_text())
    assert (skipped["reason"], skipped["ls_region_id"]) == ("unknown_label", "boat")
    tree = json.loads((out / "hierarchy" / f"{tasks[0]}.json").read_text())
    assert [n["ls_region_id"] for n in tree["regions"]] == ["car", "other"]
    assert tree["regions"][0]["children"][0]["children"][0]["ls_region_id"] == "hub"

    # pseudo-labels for the second image -> predictions of that task
    pseudo = [regions["car"][0], regions["hub"][0]]
    document = {
        "info": {},
        "licenses": [],
        "categories": [{"id": 1, "name": "fg", "supercategory": "fg"}],
        "image": {"id": 5, "file_name": "other.png", "width": W, "height": H},
        "annotations": [
            {
                "id": k,
                "image_id": 5,
                "category_id": 1,
                "segmentation": encode_coco_rle(m),
                "granularity": g,
                "is_part": g < 1.0,
            }
            for k, (m, g) in enumerate(zip(pseudo, (1.0, 0.2), strict=True), start=1)
        ],
    }
    source = tmp_path / "pseudo" / "other.json"
    source.parent.mkdir()
    source.write_text(json.dumps(document))
    argv = ["import-predictions", str(source.parent), "--ls-project", str(project["id"])]
    done = _cli(env, *argv, "--label", "Wheel", "--model-version", "pl-e2e", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "posted 1 predictions (2 masks" in done.stdout
    (prediction,) = call("GET", f"/api/predictions?task={tasks[1]}")
    assert prediction["model_version"] == "pl-e2e"
    for result, mask in zip(prediction["result"], pseudo, strict=True):
        assert result["value"]["brushlabels"] == ["Wheel"]
        decoded = decode_rle(result["value"]["rle"]).reshape(H, W, 4)[:, :, 3]
        assert np.array_equal(decoded == 255, mask) and set(np.unique(decoded)) <= {0, 255}
    with store.session() as session:
        recorded = prediction_granularities(session, tasks[1])
    assert sorted(recorded.values()) == [0.2, 1.0]
    assert set(recorded) == {r["id"] for r in prediction["result"]}

    # a second run adds nothing
    done = _cli(env, *argv, "--label", "Wheel", "--model-version", "pl-e2e", "--no-progress")
    assert done.returncode == 0 and "skipped 1 records (exists 1)" in done.stdout
    assert len(call("GET", f"/api/predictions?task={tasks[1]}")) == 1
