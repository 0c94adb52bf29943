"""The model behind a serving predictor, for video tracking, and the lane its steps hold."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from core_model.modeling.unsamv2 import UnSAMv2Model
from ml_backend.model_door import GatedPredictor
from ml_backend.runtime import ModelUnavailableError

Lane = Callable[[], AbstractContextManager[object]]
"""Makes a context held around one tracking step (the model door's encode lane)."""


def video_model_access(predictor: object) -> tuple[UnSAMv2Model, Lane]:
    """Return the model a serving predictor runs and the lane its video steps must hold.

    A predictor behind the model door gives its door's encode lane, so a tracked frame waits its
    turn like an image embedding and other annotators' clicks wait at most one frame; a bare
    predictor gives a context that holds nothing.

    Raises:
        ModelUnavailableError: the predictor has no `UnSAMv2Model` (it cannot track video).
    """
    inner = predictor
    lane: Lane = nullcontext
    if isinstance(predictor, GatedPredictor):
        door = predictor.door
        inner = predictor.inner

        def lane() -> AbstractContextManager[object]:
            return door.entered(door.encode_lane)

    model = getattr(inner, "model", None)
    if not isinstance(model, UnSAMv2Model):
        raise ModelUnavailableError("the serving model cannot track video")
    return model, lane
