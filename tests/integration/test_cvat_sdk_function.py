"""The cvat-sdk auto-annotation module, run through the SDK's own contract on a local image.

`detect` is called the way `cvat_sdk.auto_annotation.annotate_task` calls it (its context
class, a PIL image opened from a file), and its output goes through the same validation and
label remapping the driver applies before uploading (`_AnnotationMapper`).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from cvat_sdk import models
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
from cvat_sdk.masks import decode_mask
from PIL import Image

from core_model.checkpoint import official_state_dict
from core_model.errors import GranularityError
from core_model.predictor import GranularityPredictor
from core_model.types import Prompts
from core_model.whole_image import WholeImageConfig, WholeImageSegmenter
from ml_backend.cvat import sdk_function
from ml_backend.cvat.presets import DetectorSettings
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.project_settings import ProjectSettings
from ml_backend.whole_image_defaults import PRED_IOU_THRESH

FAST = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
TASK_LABELS = [models.Label(name="object", id=71, type="any", attributes=[], sublabels=[])]


@pytest.fixture
def predictor(make_tiny) -> GranularityPredictor:
    return GranularityPredictor(make_tiny())


@pytest.fixture
def frame(tmp_path, scene_image) -> Image.Image:
    path = tmp_path / "frame_000003.png"
    Image.fromarray(scene_image).save(path)
    return Image.open(path)  # what the SDK's task dataset hands to detect()


def run_like_the_driver(function, image, *, conf_threshold=None, conv_mask_to_poly=False):
    """One frame of `annotate_task`: detect, then validate and remap as before an upload."""
    context = _DetectionFunctionContextImpl(
        frame_name="frame_000003.png",
        conf_threshold=conf_threshold,
        conv_mask_to_poly=conv_mask_to_poly,
    )
    mapper = _AnnotationMapper(
        logging.getLogger("test"),
        function.spec.labels,
        TASK_LABELS,
        allow_unmatched_labels=False,
        conv_mask_to_poly=conv_mask_to_poly,
    )
    tags, shapes = mapper.validate_and_remap(function.detect(context, image), 3)
    assert tags == [] and all((s.frame, s.label_id, s.source) == (3, 71, "auto") for s in shapes)
    return shapes


def test_detection_masks_decode_to_the_segmenter_output(predictor, frame, scene_image) -> None:
    function = sdk_function.create(granularity=0.2, predictor=predictor, **FAST)
    assert [(label.name, label.type) for label in function.spec.labels] == [("object", "mask")]
    shapes = run_like_the_driver(function, frame)
    expected = WholeImageSegmenter(predictor, WholeImageConfig(**FAST)).segment(
        scene_image, granularities=(0.2,)
    )
    assert len(shapes) == len(expected) > 0
    for shape, generated in zip(shapes, expected, strict=True):
        assert shape.type.value == "mask"
        decoded = decode_mask(shape.points, image_width=128, image_height=96)
        assert np.array_equal(decoded, generated.mask)


def test_threshold_and_polygons(predictor, frame, scene_image) -> None:
    fast = {**FAST, "box_nms_thresh": 1.0}
    function = sdk_function.create(granularity=1.0, predictor=predictor, **FAST)
    function.config = WholeImageConfig(**fast)  # keep every grid mask: distinct scores
    scores = sorted(
        g.score
        for g in WholeImageSegmenter(predictor, WholeImageConfig(**fast)).segment(
            scene_image, granularities=(1.0,)
        )
    )
    cut = scores[len(scores) // 2]
    kept = run_like_the_driver(function, frame, conf_threshold=cut)
    assert 0 < len(kept) == sum(s >= cut for s in scores) < len(scores)
    polygons = run_like_the_driver(function, frame, conf_threshold=cut, conv_mask_to_poly=True)
    assert {s.type.value for s in polygons} == {"polygon"}
    assert all(len(s.points) >= 6 and len(s.points) % 2 == 0 for s in polygons)


@pytest.mark.skipif(not sdk_function.HAS_INTERACTION, reason="cvat-sdk < 2.71")
def test_interaction_function_answers_the_models_mask(predictor, frame, scene_image) -> None:
    import cvat_sdk.auto_annotation as cvataa

    function = sdk_function.create(granularity=0.5, kind="interactor", predictor=predictor)
    assert isinstance(function.spec, cvataa.InteractionFunctionSpec)
    assert (function.spec.min_pos_points, function.spec.min_bounding_boxes) == (0, 0)
    embedding = function.preprocess_image(SimpleNamespace(), frame)
    prompts = SimpleNamespace(
        pos_points=[(60.0, 40.0)], neg_points=[(3.0, 3.0)], bounding_box=((10, 5), (100, 80))
    )
    (shape,) = function.detect(SimpleNamespace(), embedding, prompts)
    expected = predictor.predict(
        predictor.embed(scene_image),
        Prompts.from_arrays([[60, 40], [3, 3]], [1, 0], [10, 5, 100, 80]),
        granularity=0.5,
    ).masks[0]
    assert shape.type == "mask"
    assert np.array_equal(decode_mask(shape.points, image_width=128, image_height=96), expected)
    (confidence,) = shape.attributes
    assert confidence.spec_id == cvataa.InteractionResultAttributes.CONFIDENCE
    assert 0.0 <= float(confidence.value) <= 1.0


def test_create_loads_the_model_from_cli_parameters(tmp_path, make_tiny, monkeypatch) -> None:
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": official_state_dict(make_tiny())}, checkpoint)
    monkeypatch.setenv("UNSAMV2_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("UNSAMV2_CHECKPOINT", raising=False)
    # cvat-cli: -p granularity=float:0.3 -p checkpoint=str:... -p model=str:test-tiny
    function = sdk_function.create(
        granularity=0.3, checkpoint=str(checkpoint), model="test-tiny", device="cpu"
    )
    assert function.granularity == 0.3
    # the defaults of Label Studio's pre-annotation and the CVAT presets
    assert (
        function.config.points_per_side,
        function.config.pred_iou_thresh,
        function.config.stability_score_thresh,
    ) == (ProjectSettings.points_per_side, PRED_IOU_THRESH, DetectorSettings.stability_score_thresh)
    assert function.predictor.model_version.startswith("test-tiny-official-")
    with pytest.raises(BadRequestError, match="kind"):
        sdk_function.create(kind="tracker", predictor=function.predictor)
    with pytest.raises(GranularityError):
        sdk_function.create(granularity=2.0, predictor=function.predictor)
