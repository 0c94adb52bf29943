"""UnSAMv2's granularity-aware divide-and-conquer: part/whole pseudo-labels from unlabeled images.

Public API:

- `build_feature_extractor(spec, device=...)`: ``color[:PATCH]``, ``dinov3:PATH``, ``dinov2:PATH``.
- `pseudo_label_image(image, extractor, config=..., proposals=...)`: one RGB array in memory.
- `pseudo_label_image_file(path, out_dir, extractor=..., config=...)`: one file to one JSON,
  idempotent and atomic (for workers).
- `generate_pseudo_labels(paths, extractor, out_dir=..., config=...)`: many files (for the CLI).
- `PseudoLabelConfig` (thresholds), `Proposal` (external masks), `read_proposals(path)`.

Modules: `features` (protocol), `extractors` (factory, ``auto`` choice), `color_features`,
`dino_features`, `ncut` (divide), `split` (touching objects, joined leaves), `relations`,
`conquer`, `mask_ops` (NMS), `refine` (GrabCut, snapping to parts), `granularity`, `fallback`
(instance of last resort), `candidates`, `divide_conquer` (one image in memory),
`instance_stages` (refine, conquer and snap one instance), `scaling` (working resolution),
`diagnostics` (per-stage trace), `output` (JSON), `pipeline` (files), `proposals`,
`visualize`, `config`.
"""

from labeling_pipeline.pseudo_labels.config import PseudoLabelConfig, PseudoLabelConfigError
from labeling_pipeline.pseudo_labels.divide_conquer import Proposal, PseudoMask, pseudo_label_image
from labeling_pipeline.pseudo_labels.errors import (
    FeatureExtractorError,
    ProposalError,
    PseudoLabelOutputError,
)
from labeling_pipeline.pseudo_labels.extractors import build_feature_extractor
from labeling_pipeline.pseudo_labels.features import FeatureExtractor, PatchFeatures
from labeling_pipeline.pseudo_labels.pipeline import (
    PseudoLabelResult,
    generate_pseudo_labels,
    list_images,
    pseudo_label_image_file,
)
from labeling_pipeline.pseudo_labels.proposals import read_proposals

__all__ = [
    "FeatureExtractor",
    "FeatureExtractorError",
    "PatchFeatures",
    "Proposal",
    "ProposalError",
    "PseudoLabelConfig",
    "PseudoLabelConfigError",
    "PseudoLabelOutputError",
    "PseudoLabelResult",
    "PseudoMask",
    "build_feature_extractor",
    "generate_pseudo_labels",
    "list_images",
    "pseudo_label_image",
    "pseudo_label_image_file",
    "read_proposals",
]
