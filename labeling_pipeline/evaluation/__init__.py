"""Evaluation harness: simulated clicks, NoC80/NoC90/1-IoU, SAM-2 baselines, AR@1000, reports.

Interactive (`evaluate_interactive`): a deterministic GraCo-style click simulator drives up to 20
clicks per instance; methods "granularity" (per-instance granularity search), "granularity-
oracle" (per-click), "sam2-best-of-3" and "sam2-single". Whole image (`evaluate_ar1000`):
class-agnostic AR@1000 through pycocotools on masks pooled over granularities. Loaders read
COCO-format files and image + mask folders; `write_report` writes markdown, JSON and charts.
Samples are plain values: (image (H, W, 3) uint8 RGB, gt (H, W) bool, ignore (H, W) bool or
None).
"""

from labeling_pipeline.evaluation.ar import (
    ARConfig,
    ARResult,
    compute_ar1000,
    evaluate_ar1000,
    predict_whole_image,
    run_ar_evaluation,
)
from labeling_pipeline.evaluation.clicker import Click, Clicker, clicks_to_prompts
from labeling_pipeline.evaluation.datasets import (
    CocoInstanceDataset,
    MaskFolderDataset,
    open_dataset,
    read_folder_mask,
)
from labeling_pipeline.evaluation.interactive import (
    GRANULARITY_GRID,
    METHODS,
    InstanceResult,
    InteractiveConfig,
    InteractiveResult,
    evaluate_instance,
    evaluate_interactive,
    evaluate_methods,
)
from labeling_pipeline.evaluation.metrics import (
    InteractiveSummary,
    mask_iou,
    noc,
    padded_curve,
    summarize,
)
from labeling_pipeline.evaluation.report import ReportPaths, write_report
from labeling_pipeline.evaluation.samples import (
    DatasetError,
    EvalSample,
    EvaluationError,
    ImageSample,
)

__all__ = [
    "GRANULARITY_GRID",
    "METHODS",
    "ARConfig",
    "ARResult",
    "Click",
    "Clicker",
    "CocoInstanceDataset",
    "DatasetError",
    "EvalSample",
    "EvaluationError",
    "ImageSample",
    "InstanceResult",
    "InteractiveConfig",
    "InteractiveResult",
    "InteractiveSummary",
    "MaskFolderDataset",
    "ReportPaths",
    "clicks_to_prompts",
    "compute_ar1000",
    "evaluate_ar1000",
    "evaluate_instance",
    "evaluate_interactive",
    "evaluate_methods",
    "mask_iou",
    "noc",
    "open_dataset",
    "padded_curve",
    "predict_whole_image",
    "read_folder_mask",
    "run_ar_evaluation",
    "summarize",
    "write_report",
]
