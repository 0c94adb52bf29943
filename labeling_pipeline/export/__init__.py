"""Export Label Studio annotations as datasets; import pseudo-labels back as predictions.

Exports are COCO RLE with granularity and part/whole parents, PNG masks and a hierarchy JSON
per image.

Modules: `reader` (tasks from a JSON export file or the API, streamed), `records` (task ->
regions, skipped records), `hierarchy` (parents by containment), `coco` (streaming COCO
writer), `png`, `exporter` (the export), `granularity` (store lookups), `sources` and
`predictions` (the prediction import).
"""

from labeling_pipeline.export.errors import ExportError
from labeling_pipeline.export.exporter import (
    FORMATS,
    ExportConfig,
    ExportSummary,
    export_annotations,
)
from labeling_pipeline.export.hierarchy import assign_parents, build_forest, containment_matrix
from labeling_pipeline.export.reader import ProjectTasks, iter_export_file

__all__ = [
    "FORMATS",
    "ExportConfig",
    "ExportError",
    "ExportSummary",
    "ProjectTasks",
    "assign_parents",
    "build_forest",
    "containment_matrix",
    "export_annotations",
    "iter_export_file",
]
