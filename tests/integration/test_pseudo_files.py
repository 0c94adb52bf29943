"""File-level pseudo-labelling: JSON output, idempotency, bad images, proposals, DINO extractors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from labeling_pipeline.evaluation.synthetic import generate_scene
from labeling_pipeline.pseudo_labels import (
    Proposal,
    ProposalError,
    PseudoLabelConfig,
    build_feature_extractor,
    generate_pseudo_labels,
    pseudo_label_image,
    pseudo_label_image_file,
    read_proposals,
)


@pytest.fixture(scope="module")
def extractor():
    return build_feature_extractor("color")


@pytest.fixture
def scene_file(tmp_path: Path) -> Path:
    path = tmp_path / "images" / "scene.png"
    path.parent.mkdir()
    Image.fromarray(generate_scene(2).image).save(path)
    return path


def load_coco(path: Path) -> COCO:
    payload = json.loads(path.read_text())
    coco = COCO()
    coco.dataset = {**payload, "images": [payload["image"]]}
    coco.createIndex()
    return coco


def test_file_to_json_is_loadable_and_idempotent(scene_file: Path, tmp_path: Path, extractor):
    out = tmp_path / "out"
    result = pseudo_label_image_file(
        scene_file, out, extractor=extractor, previews_dir=tmp_path / "p"
    )
    assert result.ok and result.status == "done" and result.num_masks > 2
    assert result.json_path == out / "scene.json"
    assert sorted(p.name for p in out.iterdir()) == ["scene.json"]  # no temporary files left
    assert (tmp_path / "p" / "scene.png").is_file()
    coco = load_coco(result.json_path)
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == result.num_masks
    for ann in anns:
        mask = coco.annToMask(ann)
        assert mask.shape == (256, 320) and int(mask.sum()) == ann["area"]
        assert ann["is_divide"] != ann["is_part"] and ann["category_id"] == 1
    info = json.loads(result.json_path.read_text())["info"]
    assert info["features"] == "color" and info["config"]["nms_iou"] == 0.8
    stamp = result.json_path.stat().st_mtime_ns
    again = pseudo_label_image_file(scene_file, out, extractor=extractor, config={"nms_iou": 0.8})
    assert again.status == "existing" and again.ok and again.num_masks == result.num_masks
    assert result.json_path.stat().st_mtime_ns == stamp


def write_bad_images(folder: Path) -> dict[str, str]:
    """Write one file per difficult case; return the expected status of each."""
    scene = generate_scene(4).image
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    Image.fromarray(np.full((80, 90, 3), 128, np.uint8)).save(folder / "blank.png")
    Image.fromarray(scene).convert("L").save(folder / "gray.png")
    Image.fromarray(scene).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(scene[..., 1].astype(np.uint16) * 257).save(folder / "deep16.png")
    Image.fromarray(np.kron(scene, np.ones((3, 3, 1), np.uint8))).save(folder / "large.png")
    Image.fromarray(np.kron(scene, np.ones((9, 9, 1), np.uint8))).save(folder / "huge.png")
    return {
        "blank.png": "skipped",
        "broken.jpg": "skipped",
        "deep16.png": "done",
        "gray.png": "done",
        "huge.png": "skipped",
        "large.png": "done",
        "rgba.png": "done",
    }


def test_bad_images_never_stop_a_run(tmp_path: Path, extractor) -> None:
    expected = write_bad_images(tmp_path / "images")
    images = sorted((tmp_path / "images").iterdir())
    config = PseudoLabelConfig(max_image_side=400, max_image_pixels=4_000_000)
    seen = []
    results = list(
        generate_pseudo_labels(
            images, extractor, out_dir=tmp_path / "out", config=config, on_progress=seen.append
        )
    )
    assert seen == results
    assert {r.image_path.name: r.status for r in results} == expected
    reasons = {r.image_path.name: r.reason for r in results}
    assert "blank" in reasons["blank.png"]
    assert "decode" in reasons["broken.jpg"] or "read" in reasons["broken.jpg"]
    assert "limit" in reasons["huge.png"]
    assert "downscaled from 960x768" in reasons["large.png"]
    large = json.loads((tmp_path / "out" / "large.json").read_text())
    assert large["image"]["width"] == 960 and large["image"]["height"] == 768
    assert all(a["segmentation"]["size"] == [768, 960] for a in large["annotations"])
    assert large["annotations"], "the downscaled image still gets masks"
    for name in ("gray", "rgba", "deep16"):
        payload = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert payload["image"]["width"] == 320 and payload["image"]["height"] == 256
    # an opaque RGBA image is composited to the same RGB: its objects are still found (gray and
    # 16-bit single-channel copies are processed, but colour-only parts may be lost there)
    assert json.loads((tmp_path / "out" / "rgba.json").read_text())["annotations"]


def test_same_name_in_one_run_is_reported(tmp_path: Path, extractor) -> None:
    a = tmp_path / "a.png"
    Image.fromarray(generate_scene(1).image).save(a)
    Image.fromarray(generate_scene(1).image).save(tmp_path / "a.jpg")
    results = list(
        generate_pseudo_labels([a, tmp_path / "a.jpg"], extractor, out_dir=tmp_path / "o")
    )
    assert [r.status for r in results] == ["done", "skipped"]
    assert "a.json" in results[1].reason


@pytest.mark.parametrize("use_ncut", [False, True])
def test_human_masks_enter_as_instances_unrefined(extractor, use_ncut: bool) -> None:
    scene = generate_scene(3)
    config = PseudoLabelConfig(use_ncut=use_ncut)  # with N-cut: its duplicates lose to them
    proposals = [Proposal(o.mask, 1.0, "human") for o in scene.objects]
    proposals.append(Proposal(scene.objects[0].mask, 0.2, "external"))  # below T_conf: ignored
    masks = pseudo_label_image(scene.image, extractor, config=config, proposals=proposals)
    instances = [m for m in masks if not m.is_part]
    assert len(instances) == len(scene.objects)
    for obj in scene.objects:
        assert any(np.array_equal(m.decode(), obj.mask) for m in instances)
    assert {m.source for m in instances} == {"human"}
    assert any(m.is_part and m.source == "conquer" for m in masks)
    with pytest.raises(ProposalError, match="shape"):
        pseudo_label_image(scene.image, extractor, proposals=[Proposal(np.ones((5, 5), bool))])


def test_proposals_from_json_file(tmp_path: Path, scene_file: Path, extractor) -> None:
    from core_model.masks import encode_coco_rle

    scene = generate_scene(2)
    path = tmp_path / "proposals.json"
    anns = [{"segmentation": encode_coco_rle(o.mask), "score": 0.9} for o in scene.objects]
    path.write_text(json.dumps({"annotations": anns}))
    proposals = read_proposals(path)
    assert [p.source for p in proposals] == ["external"] * len(scene.objects)
    result = pseudo_label_image_file(
        scene_file, tmp_path / "out", extractor=extractor, proposals=proposals,
        config=PseudoLabelConfig(use_ncut=False),
    )  # fmt: skip
    assert result.status == "done" and result.num_masks >= len(scene.objects)
    path.write_text(json.dumps([{"segmentation": {"size": [2, 2], "counts": "bad!"}}]))
    with pytest.raises(ProposalError):
        read_proposals(path)
