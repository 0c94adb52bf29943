"""Dataset loaders on tiny files written by the tests: COCO-format and image + mask folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from labeling_pipeline.evaluation import (
    CocoInstanceDataset,
    DatasetError,
    MaskFolderDataset,
    open_dataset,
    read_folder_mask,
)

H, W = 24, 32


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def compressed(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [H, W], "counts": encoded["counts"].decode()}


def uncompressed(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").astype(np.int64)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": [H, W], "counts": counts}


@pytest.fixture
def coco_dataset(tmp_path: Path) -> tuple[Path, Path]:
    images_dir = tmp_path / "imgs"
    images_dir.mkdir()
    Image.fromarray(image(0)).save(images_dir / "a.png")
    Image.fromarray(image(1)).save(images_dir / "b.png")
    Image.fromarray(image(2)).save(images_dir / "c.png")
    # polygon of the pixel block rows 2..9, cols 3..12 (COCO polygons run along pixel edges)
    polygon = [[3, 2, 13, 2, 13, 10, 3, 10]]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": compressed(box(0, 10, 0, 10))},
        {
            "id": 2,
            "image_id": 1,
            "category_id": 1,
            "segmentation": uncompressed(box(12, 20, 5, 30)),
            "is_part": True,
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 1,
            "segmentation": compressed(box(20, 24, 0, 32)),
            "iscrowd": 1,
        },
        {"id": 4, "image_id": 2, "category_id": 40, "segmentation": compressed(box(1, 5, 1, 5))},
        {"id": 5, "image_id": 2, "category_id": 2, "segmentation": polygon},
    ]
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": H, "width": W},
            {"id": 2, "file_name": "b.png", "height": H, "width": W},
            {"id": 3, "file_name": "c.png", "height": H, "width": W},  # no annotation
        ],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}, {"id": 40, "name": "bg"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, images_dir


def test_coco_every_annotation_is_one_instance(coco_dataset: tuple[Path, Path]) -> None:
    path, images_dir = coco_dataset
    dataset = CocoInstanceDataset(path, images_dir)
    samples = list(dataset)
    assert [s.instance_id for s in samples] == ["1", "2", "4", "5"]  # the crowd region is not
    assert len(dataset) == 4 and dataset.name == "ann"
    np.testing.assert_array_equal(samples[0].gt, box(0, 10, 0, 10))
    np.testing.assert_array_equal(samples[1].gt, box(12, 20, 5, 30))
    np.testing.assert_array_equal(samples[3].gt, box(2, 10, 3, 13))
    np.testing.assert_array_equal(samples[0].image, image(0))
    assert samples[0].image.dtype == np.uint8 and samples[0].gt.dtype == bool
    assert all(s.ignore is None for s in samples)
    assert samples[0].image_key == samples[1].image_key != samples[2].image_key
    assert [s.image_id for s in samples] == ["1", "1", "2", "2"]


def test_coco_kinds_and_excluded_categories(coco_dataset: tuple[Path, Path]) -> None:
    path, images_dir = coco_dataset
    parts = CocoInstanceDataset(path, images_dir, kind="parts")
    assert [s.instance_id for s in parts] == ["2"]
    wholes = CocoInstanceDataset(path, images_dir, kind="instances", exclude_category_ids=[40])
    assert [s.instance_id for s in wholes] == ["1", "5"]


def test_coco_images_keep_crowd_regions_for_ar(coco_dataset: tuple[Path, Path]) -> None:
    path, images_dir = coco_dataset
    images = list(CocoInstanceDataset(path, images_dir).images())
    assert [i.image_id for i in images] == ["1", "2"]
    assert len(images[0].masks) == 3 and list(images[0].iscrowd) == [False, False, True]


def test_coco_size_mismatch_and_bad_files_raise(tmp_path: Path) -> None:
    images_dir = tmp_path / "imgs"
    images_dir.mkdir()
    Image.fromarray(image(0)).save(images_dir / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": H + 1, "width": W}],
        "annotations": [{"id": 1, "image_id": 1, "segmentation": compressed(box(0, 5, 0, 5))}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="the JSON says"):
        list(CocoInstanceDataset(path, images_dir))
    path.write_text("{not json")
    with pytest.raises(DatasetError):
        CocoInstanceDataset(path, images_dir)


def write_folder(root: Path, masks: dict[str, np.ndarray], suffix: str = ".png") -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (stem, mask) in enumerate(masks.items()):
        Image.fromarray(image(i)).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}{suffix}")


def test_folder_dataset_grabcut_ignore_band(tmp_path: Path) -> None:
    grabcut = np.zeros((H, W), dtype=np.uint8)
    grabcut[5:15, 5:20] = 255
    grabcut[4, 5:20] = 128  # uncertain boundary band
    grabcut[0, 0] = 64  # other values are background
    berkeley = (box(2, 8, 2, 8) * 255).astype(np.uint8)
    write_folder(tmp_path, {"b_img": berkeley, "a_img": grabcut}, suffix=".bmp")
    dataset = MaskFolderDataset(tmp_path)
    samples = list(dataset)
    assert [s.instance_id for s in samples] == ["a_img", "b_img"]  # sorted by stem
    np.testing.assert_array_equal(samples[0].gt, box(5, 15, 5, 20))
    assert samples[0].ignore is not None
    np.testing.assert_array_equal(samples[0].ignore, box(4, 5, 5, 20))
    assert samples[1].ignore is None  # 0/255 masks have no ignore pixel
    np.testing.assert_array_equal(samples[1].image, image(0))
    no_ignore = list(MaskFolderDataset(tmp_path, ignore_value=None))
    assert no_ignore[0].ignore is None and not no_ignore[0].gt[4].any()
    images = list(dataset.images())
    assert len(images) == 2 and len(images[0].masks) == 1


def test_folder_masks_zero_one_and_colour(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(box(1, 3, 1, 3).astype(np.uint8)).save(path)  # values 0/1
    gt, ignore = read_folder_mask(path)
    np.testing.assert_array_equal(gt, box(1, 3, 1, 3))
    assert ignore is None
    colour = np.zeros((H, W, 3), dtype=np.uint8)
    colour[2:6, 2:6, 1] = 255  # a green object
    Image.fromarray(colour).save(path)
    gt, ignore = read_folder_mask(path)
    np.testing.assert_array_equal(gt, box(2, 6, 2, 6))
    assert ignore is None


def test_folder_missing_mask_and_specs(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", {"x": np.zeros((H, W), dtype=np.uint8)})
    Image.fromarray(image(5)).save(tmp_path / "ds" / "images" / "orphan.png")
    with pytest.raises(DatasetError, match="no mask for orphan.png"):
        MaskFolderDataset(tmp_path / "ds")
    (tmp_path / "ds" / "images" / "orphan.png").unlink()
    assert isinstance(open_dataset(f"folder:{tmp_path / 'ds'}"), MaskFolderDataset)
    assert list(open_dataset(f"folder:{tmp_path / 'ds'}")) == []  # empty mask skipped
    for bad in ("coco:only.json", "nothing", "folder:"):
        with pytest.raises(DatasetError):
            open_dataset(bad)
