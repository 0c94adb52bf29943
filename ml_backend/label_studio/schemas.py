"""Shapes of the requests Label Studio sends, checked before any work is done.

Every body the backend reads goes through one of these pydantic models, so a wrong type, an
out-of-range id or an over-long list is a 400 with a one-line message (see `validate`), never
an exception deep in a converter. Models ignore the many fields Label Studio adds that the
backend does not use; the fields it does use are strict: ids are integers in [0, 2^63 - 1]
(the store's BIGINT), numbers are finite, strings are strings, lists have maximum lengths.

The limits below bound what one request can cost; each says why it is large enough.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, ValidationError

from core_model.types import validate_granularity
from labeling_pipeline.label_studio.config import MAX_LABEL_CONFIG_CHARS
from ml_backend.errors import BadRequestError, validation_message
from ml_backend.whole_image_defaults import (
    MAX_POINTS_PER_SIDE,
    POINTS_PER_SIDE,
    PRED_IOU_THRESH,
    STABILITY_SCORE_THRESH,
)

MAX_ID = 2**63 - 1
"""Largest id the store keeps (signed 64-bit, as SQLite and PostgreSQL BIGINT)."""

MAX_TASKS_PER_PREDICT = 1000
"""Tasks in one /predict. Interactive calls carry one task; Label Studio's "Retrieve predictions"
sends the selected tasks together. The work is bounded by the pre-annotation deadline, not by
this count (a task not started before the deadline gets an empty result marked partial, so Label
Studio asks again later); the count only bounds the request's parsing and answer size."""

MAX_CONTEXT_RESULTS = 1000
"""Results in ``params.context.result``: one label's smart regions plus their per-region
controls; an annotator clicks a few dozen times at most on one object."""

MAX_CLICKS = 100
"""Smart clicks turned into one prompt (Label Studio and CVAT). Each click is a prompt token of
the mask decoder; SAM is trained with up to a few dozen, more do not help."""

MAX_DRAFTS = 100
"""Drafts of a task in a /predict (only the requesting annotator's are sent)."""

MAX_LABELS = 50
"""Labels on one region (Label Studio sends one; multi-select controls a few)."""

MAX_TEXT_CHARS = 1024
"""Names, titles, region ids, granularity texts."""

MAX_WEBHOOK_RESULTS = 10_000
"""Results of one annotation in a webhook event (each brush region is one result)."""

"""Grid of whole-image pre-annotation: 32 x 32 = 1024 decoder calls per granularity, SAM's own
default; a CPU decodes them in seconds (48 x 48 took minutes with thresholds at 0)."""

MAX_REGIONS = 200
"""Masks per pre-annotated image: each is a full-size mask in memory and an RLE in the answer;
Label Studio's editor gets slow with more regions than this."""

MAX_SIDE_PX = 2**31 - 1
"""Image side in ``original_width`` / ``original_height``; the product is checked against the
backend's pixel limit (``UNSAMV2_MAX_IMAGE_PIXELS``) once the settings are known."""

_DIGITS = re.compile(r"[0-9]+")

LsId = Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Text = Annotated[str, Field(strict=True, max_length=MAX_TEXT_CHARS)]
RegionId = Text | LsId
LabelList = Annotated[list[Text], Field(max_length=MAX_LABELS)]
Side = Annotated[int, Field(strict=True, ge=1, le=MAX_SIDE_PX)]
LabelConfigText = Annotated[str, Field(strict=True, max_length=MAX_LABEL_CONFIG_CHARS)]
Granularity = Annotated[float, Field(strict=True), AfterValidator(validate_granularity)]
Fraction = Annotated[float, Field(strict=True, ge=0.0, le=1.0)]

ModelT = TypeVar("ModelT", bound=BaseModel)


def validate(model: type[ModelT], data: Any, *, where: str = "") -> ModelT:
    """Check `data` against `model`; raise `BadRequestError` with a one-line message.

    Args:
        model: The pydantic model.
        data: The decoded JSON.
        where: Prefix of the message, e.g. "params.context.result.2".
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message = validation_message(exc)
        raise BadRequestError(f"{where}.{message}" if where else message) from None


class _Lenient(BaseModel):
    """Ignore fields the backend does not read (Label Studio sends many)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# ------------------------------------------------------------------ context regions


class ClickValue(_Lenient):
    """``value`` of a smart keypoint or rectangle (percent of the image)."""

    x: Finite | None = None
    y: Finite | None = None
    width: Finite | None = None
    height: Finite | None = None
    rotation: Finite | None = None
    labels: LabelList | None = None
    keypointlabels: LabelList | None = None
    rectanglelabels: LabelList | None = None

    def label_list(self, kind: str) -> list[str]:
        """Labels under the region type's key, else under ``labels``."""
        own = self.keypointlabels if kind == "keypointlabels" else self.rectanglelabels
        return list(own or self.labels or [])


class ClickRegion(_Lenient):
    """A smart keypoint or rectangle of ``params.context.result``."""

    id: RegionId = ""
    type: Literal["keypointlabels", "rectanglelabels"]
    from_name: Text = ""
    to_name: Text = ""
    original_width: Side | None = None
    original_height: Side | None = None
    is_positive: StrictBool | None = None
    value: ClickValue | None = None


class NumberValue(_Lenient):
    """``value`` of a per-region Number."""

    number: Finite | None = None


class TextValue(_Lenient):
    """``value`` of a per-region TextArea."""

    text: Annotated[list[Text], Field(max_length=MAX_LABELS)] | Text | None = None


class NumberRegion(_Lenient):
    """A per-region Number result."""

    id: RegionId = ""
    type: Literal["number"]
    from_name: Text = ""
    value: NumberValue | None = None


class TextRegion(_Lenient):
    """A per-region TextArea result."""

    id: RegionId = ""
    type: Literal["textarea"]
    from_name: Text = ""
    value: TextValue | None = None


# ------------------------------------------------------------------ /predict, /setup


class Draft(_Lenient):
    """A draft of the requesting annotator (only its author is read)."""

    user: Any = None
    completed_by: Any = None


class Task(_Lenient):
    """A task of a /predict request."""

    id: LsId | None = None
    data: dict[str, Any] | None = None
    drafts: Annotated[list[Draft], Field(max_length=MAX_DRAFTS)] | None = None


class Context(_Lenient):
    """``params.context``: the smart regions of one interactive request."""

    result: Annotated[list[dict[str, Any]], Field(max_length=MAX_CONTEXT_RESULTS)] | None = None


class Params(_Lenient):
    """``params`` of a /predict request."""

    context: Context | None = None


ProjectRef = Annotated[str, Field(strict=True, max_length=64)] | LsId | None


class PredictRequest(_Lenient):
    """A /predict body."""

    tasks: Annotated[list[Task], Field(min_length=1, max_length=MAX_TASKS_PER_PREDICT)]
    project: ProjectRef = None
    label_config: Annotated[LabelConfigText, Field(min_length=1)]
    params: Params | None = None


class SetupRequest(_Lenient):
    """A /setup body (``extra_params`` is checked by `ExtraParams`)."""

    project: ProjectRef = None
    label_config: LabelConfigText | None = Field(default=None, alias="schema")
    hostname: Annotated[str, Field(strict=True, max_length=2048)] | None = None
    access_token: Annotated[str, Field(strict=True, max_length=4096)] | None = None
    extra_params: Any = None


class ExtraParams(BaseModel):
    """Label Studio's "extra params" of the model: the project options (see ProjectSettings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_granularity: Granularity = 0.5
    preannotate: StrictBool = False
    preannotate_granularity: Granularity = 1.0
    preannotate_label: Text | None = None
    max_regions: Annotated[int, Field(strict=True, ge=1, le=MAX_REGIONS)] = 30
    points_per_side: Annotated[int, Field(strict=True, ge=1, le=MAX_POINTS_PER_SIDE)] = (
        POINTS_PER_SIDE
    )
    pred_iou_thresh: Fraction = PRED_IOU_THRESH
    stability_score_thresh: Fraction = STABILITY_SCORE_THRESH
    specialist_score: Literal["confidence", "uncertainty"] = "confidence"


def ls_project_id(project: str | int | None) -> int | None:
    """Label Studio's project id from ``"<id>.<created timestamp>"`` (or a bare id).

    Returns None when the value carries no id; raises `BadRequestError` for an id the store
    cannot keep.
    """
    if isinstance(project, int):
        return project
    head = (project or "").split(".")[0]
    if not _DIGITS.fullmatch(head):
        return None
    value = int(head)
    if value > MAX_ID:
        raise BadRequestError(f"project id {head[:30]} is larger than {MAX_ID}")
    return value


# ------------------------------------------------------------------ /webhook


class WebhookProject(_Lenient):
    """The ``project`` of a webhook event."""

    id: LsId
    title: Text | None = None
    label_config: LabelConfigText | None = None


class WebhookAnnotation(_Lenient):
    """The ``annotation`` of an ANNOTATION_CREATED / ANNOTATION_UPDATED event."""

    id: LsId
    task: LsId | None = None
    result: Annotated[list[dict[str, Any]], Field(max_length=MAX_WEBHOOK_RESULTS)] | None = None
    was_cancelled: StrictBool | None = None
    completed_by: Any = None


class BrushValue(_Lenient):
    """``value`` of a brush region in an annotation."""

    format: Text = "rle"
    rle: list[Annotated[int, Field(strict=True, ge=0, le=255)]] | None = None
    brushlabels: LabelList | None = None


class BrushRegion(_Lenient):
    """A brush region of an annotation (the results the webhook stores as masks)."""

    id: RegionId | None = None
    original_width: Side | None = None
    original_height: Side | None = None
    value: BrushValue | None = None


class WebhookTask(_Lenient):
    """The ``task`` of an annotation event."""

    id: LsId | None = None


class AnnotationRef(_Lenient):
    """One entry of ANNOTATIONS_DELETED's ``annotations``."""

    id: LsId | None = None


class WebhookEvent(_Lenient):
    """The envelope of every webhook event."""

    action: Annotated[str, Field(strict=True, min_length=1, max_length=128)]
    project: dict[str, Any] | None = None
    annotation: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    annotations: Annotated[list[dict[str, Any]], Field(max_length=MAX_WEBHOOK_RESULTS)] | None = (
        None
    )
