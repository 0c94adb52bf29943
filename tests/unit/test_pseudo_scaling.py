"""The stages work at a reduced size; masks and the stage trace come back at the image's size."""

from __future__ import annotations

from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
from labeling_pipeline.pseudo_labels import PseudoLabelConfig, pseudo_label_image
from labeling_pipeline.pseudo_labels.color_features import ColorTextureExtractor
from labeling_pipeline.pseudo_labels.diagnostics import StageTrace
from labeling_pipeline.pseudo_labels.scaling import working_size


def test_working_size_shrinks_only_large_images() -> None:
    assert working_size(300, 400, 640) == (300, 400)
    assert working_size(768, 1024, 640) == (480, 640)
    assert working_size(768, 1024, None) == (768, 1024)


def test_masks_and_trace_come_back_at_full_size() -> None:
    scene = generate_scene(3, SceneConfig(height=192, width=256, min_objects=1, max_objects=1))
    trace = StageTrace()
    extractor = ColorTextureExtractor(long_side=128)
    config = PseudoLabelConfig(work_max_side=128)
    masks = pseudo_label_image(scene.image, extractor, config=config, trace=trace)
    assert masks
    assert all(m.decode().shape == (192, 256) for m in masks)
    whole = next(r.mask for r in scene.regions if not r.is_part)
    assert max(trace.best_iou("final", whole), trace.best_iou("divide", whole)) > 0.5
    final = trace.stages["final"]
    assert len(final) == len(masks)
    assert max(m.y0 + m.crop.shape[0] for m in final) > 128  # rescaled, not at 96 x 128
