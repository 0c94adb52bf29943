"""`VideoPredictor`: prompt objects on any frame at a granularity and propagate them through a clip.

Behaves as UnSAMv2's official video predictor (SAM-2's `SAM2VideoPredictor` with `gra` passed
to `add_new_points_or_box` and `propagate_in_video`, at commit 9114164 of yujunwei04/UnSAMv2),
with three differences of design: each object keeps its own granularity (the official call
takes one value for all objects); frames are decoded on demand and only a few frames' features
are cached; outputs outside the memory windows are dropped (`core_model.video.memory`), so a
correction click on a frame far from every prompt and from the current frame starts without
that frame's earlier mask. Objects are tracked independently, as in SAM-2 (no overlap rule).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from core_model.errors import InvalidMaskError, InvalidPromptError
from core_model.masks.geometry import masks_to_boxes_xyxy
from core_model.preprocess import to_model_frame, upsample_masks
from core_model.types import Prompts, validate_granularity
from core_model.video.frames import FrameSource, check_frame_index, to_video_model_input
from core_model.video.memory import COND, NON_COND, ObjectTrack
from core_model.video.tracking import (
    NO_OBJECT_LOGIT,
    FrameFeatures,
    FrameOutput,
    encode_memory,
    fill_small_holes,
    frame_features,
    track_step,
)

if TYPE_CHECKING:
    from core_model.modeling.unsamv2 import UnSAMv2Model

logger = logging.getLogger(__name__)

PREV_LOGIT_CLAMP = 32.0  # earlier logits fed back with new clicks are clamped, as in SAM-2


@dataclass(frozen=True)
class FrameResult:
    """Masks of every object on one frame.

    Attributes:
        frame: Frame index.
        obj_ids: Object ids, in the order of the rows below.
        low_res_logits: (O, S/4, S/4) float32 mask logits in the model's square frame.
        object_scores: (O,) float32 object-score logits (> 0: the object is visible).
        size: (height, width) of the video.
    """

    frame: int
    obj_ids: tuple[int, ...]
    low_res_logits: npt.NDArray[np.float32]
    object_scores: npt.NDArray[np.float32]
    size: tuple[int, int]

    def masks(self, threshold: float = 0.0) -> npt.NDArray[np.bool_]:
        """Return (O, H, W) bool masks at video size: logits upsampled bilinearly > threshold."""
        return upsample_masks(torch.from_numpy(self.low_res_logits), self.size, threshold=threshold)

    def boxes(self, threshold: float = 0.0) -> npt.NDArray[np.float64]:
        """Return (O, 4) float64 boxes x0, y0, x1, y1 (end exclusive) of `masks`; NaN if empty."""
        masks = self.masks(threshold)
        boxes = masks_to_boxes_xyxy(masks).astype(np.float64)
        boxes[~masks.reshape(len(masks), -1).any(axis=1)] = np.nan
        return boxes


class VideoPredictor:
    """Track objects through clips with an `UnSAMv2Model` (the one that serves images).

    Args:
        model: The model, in eval mode.
        fill_hole_area: Fill background holes of at most this many low-resolution pixels in the
            output masks (SAM-2's video default 8; 0 turns it off).
        storage_device: Where memories and masks are kept ("cpu" offloads them from a GPU);
            None: the model's device.
        feature_cache_frames: Frames whose image features are kept (repeated clicks on a frame
            and several objects reuse them).
        binarize_prompt_masks: Encode masks of prompted frames into memory thresholded, not
            as probabilities (SAM-2's video builder sets this).
        add_all_frames_to_correct_as_cond: Clicks on an already tracked frame make it a
            conditioning frame (SAM-2's option; off by default there).
    """

    def __init__(
        self,
        model: UnSAMv2Model,
        *,
        fill_hole_area: int = 8,
        storage_device: str | torch.device | None = None,
        feature_cache_frames: int = 2,
        binarize_prompt_masks: bool = True,
        add_all_frames_to_correct_as_cond: bool = False,
    ) -> None:
        if feature_cache_frames < 1:
            raise ValueError(f"feature_cache_frames must be at least 1, got {feature_cache_frames}")
        self.model = model
        self.device = next(model.parameters()).device
        self.storage_device = torch.device(storage_device) if storage_device else self.device
        self.fill_hole_area = int(fill_hole_area)
        self.feature_cache_frames = feature_cache_frames
        self.binarize_prompt_masks = binarize_prompt_masks
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond

    @property
    def memory_window(self) -> int:
        """Frames beyond this distance from a frame are never read as its memory or pointers."""
        m = self.model
        memory_reach = (int(m.num_maskmem) - 2) * int(m.memory_temporal_stride_for_eval) + 1
        pointer_reach = int(m.max_obj_ptrs_in_encoder) - 1 if m.use_obj_ptrs_in_encoder else 0
        return max(memory_reach, pointer_reach, 1) + 1

    def open(self, source: FrameSource) -> VideoSession:
        """Start a session on a clip (the source stays owned by the caller)."""
        return VideoSession(self, source)


class VideoSession:
    """Objects, prompts and memories on one clip. Not thread-safe: one caller at a time.

    Args:
        predictor: Model and settings.
        source: The clip's frames.
    """

    def __init__(self, predictor: VideoPredictor, source: FrameSource) -> None:
        self._p = predictor
        self._model = predictor.model
        self.source = source
        self._tracks: dict[int, ObjectTrack] = {}
        self._features: OrderedDict[int, FrameFeatures] = OrderedDict()
        self._window = predictor.memory_window

    @property
    def num_frames(self) -> int:
        """Frames in the clip (grows when frames are pushed to the source)."""
        return self.source.num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return self.source.size

    @property
    def obj_ids(self) -> tuple[int, ...]:
        """Ids of the objects, in the order they were added."""
        return tuple(self._tracks)

    def memory_bytes(self) -> int:
        """Return the bytes held by memories, masks and cached features."""
        tracks = sum(t.nbytes() for t in self._tracks.values())
        return tracks + sum(f.nbytes() for f in self._features.values())

    @torch.inference_mode()
    def add_prompts(
        self,
        frame: int,
        obj_id: int,
        prompts: Prompts,
        granularity: float | None,
        *,
        clear_old: bool = True,
    ) -> FrameResult:
        """Add clicks and/or a box for one object on one frame and segment it there.

        Args:
            frame: Frame index.
            obj_id: The object's id (new ids add an object).
            prompts: Clicks (x, y video pixels, labels 1/0) and/or a box (x0, y0, x1, y1).
            granularity: g in [0.1, 1]; the object keeps it for propagation. None: no
                granularity token.
            clear_old: Replace the object's earlier clicks on this frame (a box needs it).

        Returns:
            The masks of every object on this frame.

        Raises:
            FrameIndexError, InvalidPromptError, GranularityError.
        """
        frame = check_frame_index(frame, self.num_frames)
        g = None if granularity is None else validate_granularity(granularity)
        height, width = self.size
        prompts.check_inside(height, width)
        if prompts.box is not None and not clear_old:
            raise InvalidPromptError("a box replaces earlier clicks: use clear_old=True with a box")
        coords, labels = _prompt_tensors(prompts, (height, width), self._model, self._p.device)
        track = self._track(obj_id)
        if not clear_old and frame in track.points:
            old_coords, old_labels = track.points[frame]
            coords = torch.cat([old_coords, coords], dim=1)
            labels = torch.cat([old_labels, labels], dim=1)
        track.points[frame] = (coords, labels)
        track.granularity = g
        prev = track.latest_output(frame)
        prev_logits = None
        if prev is not None:
            prev_logits = prev["pred_masks"].to(self._p.device)
            prev_logits = prev_logits.clamp(-PREV_LOGIT_CLAMP, PREV_LOGIT_CLAMP)
        self._prompt_frame(track, frame, points=(coords, labels), mask=None, prev=prev_logits)
        return self._result(frame)

    @torch.inference_mode()
    def add_mask(
        self, frame: int, obj_id: int, mask: npt.ArrayLike, *, granularity: float | None = None
    ) -> FrameResult:
        """Give one object's mask on one frame (used as that frame's output and memory).

        Args:
            frame: Frame index.
            obj_id: The object's id (new ids add an object).
            mask: (H, W) bool mask at video resolution.
            granularity: Granularity used when propagating this object (the mask itself is
                taken as given); None keeps the object's earlier value.

        Raises:
            FrameIndexError, InvalidMaskError, GranularityError.
        """
        frame = check_frame_index(frame, self.num_frames)
        g = None if granularity is None else validate_granularity(granularity)
        array = np.asarray(mask)
        if array.shape != self.size:
            raise InvalidMaskError(
                f"mask must have the frame's shape {self.size}, got {array.shape}"
            )
        size = int(self._model.image_size)
        t = torch.from_numpy(array.astype(np.float32))[None, None].to(self._p.device)
        if array.shape != (size, size):
            t = F.interpolate(
                t, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
            t = (t >= 0.5).float()
        track = self._track(obj_id)
        if g is not None:
            track.granularity = g
        track.points.pop(frame, None)
        self._prompt_frame(track, frame, points=None, mask=t, prev=None)
        return self._result(frame)

    def _prompt_frame(
        self,
        track: ObjectTrack,
        frame: int,
        *,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        prev: torch.Tensor | None,
    ) -> None:
        is_init = frame not in track.tracked
        reverse = False if is_init else track.tracked[frame]
        is_cond = is_init or self._p.add_all_frames_to_correct_as_cond
        out = self._step(track, frame, is_init, points, mask, reverse, prev)
        for store in track.pending.values():
            store.pop(frame, None)
        track.pending[COND if is_cond else NON_COND][frame] = out

    def _step(
        self,
        track: ObjectTrack,
        frame: int,
        is_init: bool,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        reverse: bool,
        prev: torch.Tensor | None = None,
        *,
        encode: bool = False,
    ) -> FrameOutput:
        features = self._frame_features(frame)
        out, heads = track_step(
            self._model,
            features,
            frame_idx=frame,
            is_init_cond_frame=is_init,
            points=points,
            mask_input=mask,
            memory=track.memory,
            num_frames=self.num_frames,
            reverse=reverse,
            granularity=track.granularity,
            prev_mask_logits=prev,
        )
        if encode:
            binarize = self._p.binarize_prompt_masks and points is not None
            self._encode(out, features, heads.high_res, binarize=binarize)
        out["pred_masks"] = fill_small_holes(out["pred_masks"], self._p.fill_hole_area).to(
            self._p.storage_device
        )
        return out

    def _encode(
        self,
        out: FrameOutput,
        features: FrameFeatures,
        high_res_masks: torch.Tensor,
        *,
        binarize: bool,
    ) -> None:
        if self._model.num_maskmem <= 0:
            return
        memory, pos = encode_memory(
            self._model, features, high_res_masks, out["object_score_logits"], binarize=binarize
        )
        # stored in bfloat16, as SAM-2's video predictor does
        out["maskmem_features"] = memory.to(torch.bfloat16).to(self._p.storage_device)
        out["maskmem_pos_enc"] = pos

    @torch.inference_mode()
    def propagate(
        self, *, start: int | None = None, reverse: bool = False, max_frames: int | None = None
    ) -> Iterator[FrameResult]:
        """Track every object from `start` forwards (or backwards), yielding each frame's masks.

        Args:
            start: First frame (yielded too); default the earliest prompted frame.
            reverse: Go back in time, down to frame 0.
            max_frames: Frames to go beyond `start` (default: to the clip's end).

        Raises:
            InvalidPromptError: no object has prompts.
            FrameIndexError: `start` is outside the clip.
        """
        self._encode_pending()
        if start is None:
            start = min(t for track in self._tracks.values() for t in track.memory[COND])
        start = check_frame_index(start, self.num_frames)
        span = self.num_frames if max_frames is None else max(int(max_frames), 0)
        if reverse:
            order = range(start, max(start - span, 0) - 1, -1) if start > 0 else range(0)
        else:
            order = range(start, min(start + span, self.num_frames - 1) + 1)
        for frame in order:
            for track in self._tracks.values():
                if frame not in track.memory[COND]:
                    out = self._step(track, frame, False, None, None, reverse, encode=True)
                    track.memory[NON_COND][frame] = out
                track.tracked[frame] = reverse
                track.forget_far_frames(frame, self._window)
            yield self._result(frame)

    def _encode_pending(self) -> None:
        if not self._tracks:
            raise InvalidPromptError("no object has prompts: add clicks, a box or a mask first")
        size = int(self._model.image_size)
        for track in self._tracks.values():
            for kind in (NON_COND, COND):
                for frame, out in track.pending[kind].items():
                    if out["maskmem_features"] is None:
                        high = F.interpolate(
                            out["pred_masks"].to(self._p.device),
                            size=(size, size),
                            mode="bilinear",
                            align_corners=False,
                        )
                        features = self._frame_features(frame)
                        # prompted frames count as masks from clicks (SAM-2 does the same)
                        self._encode(out, features, high, binarize=self._p.binarize_prompt_masks)
                    track.memory[kind][frame] = out
                track.pending[kind].clear()
            if not track.memory[COND]:
                raise InvalidPromptError(
                    f"object {track.obj_id} has no prompted frame: add clicks, a box or a mask"
                )
            for frame in track.memory[COND]:
                track.memory[NON_COND].pop(frame, None)

    def remove_object(self, obj_id: int) -> None:
        """Forget an object, its prompts and its memory.

        Raises:
            InvalidPromptError: no object has this id.
        """
        if obj_id not in self._tracks:
            raise InvalidPromptError(f"no object with id {obj_id} in this clip")
        del self._tracks[obj_id]

    def reset(self) -> None:
        """Forget every object (cached frame features stay)."""
        self._tracks.clear()

    def close(self) -> None:
        """Drop objects and cached features (the source stays open: its owner closes it)."""
        self._tracks.clear()
        self._features.clear()

    def _track(self, obj_id: int) -> ObjectTrack:
        if isinstance(obj_id, bool) or not isinstance(obj_id, int | np.integer):
            raise InvalidPromptError(f"object id must be an integer, got {obj_id!r}")
        key = int(obj_id)
        if key not in self._tracks:
            self._tracks[key] = ObjectTrack(key)
        return self._tracks[key]

    def _frame_features(self, frame: int) -> FrameFeatures:
        cached = self._features.get(frame)
        if cached is not None:
            self._features.move_to_end(frame)
            return cached
        image = to_video_model_input(
            self.source.frame(frame), int(self._model.image_size), self._p.device
        )
        features = frame_features(self._model, image)
        self._features[frame] = features
        while len(self._features) > self._p.feature_cache_frames:
            self._features.popitem(last=False)
        return features

    def _result(self, frame: int) -> FrameResult:
        side = int(self._model.image_size) // 4
        ids = tuple(self._tracks)
        logits = np.full((len(ids), side, side), NO_OBJECT_LOGIT, dtype=np.float32)
        scores = np.full((len(ids),), NO_OBJECT_LOGIT, dtype=np.float32)
        for i, track in enumerate(self._tracks.values()):
            out = track.latest_output(frame)
            if out is not None:
                logits[i] = out["pred_masks"][0, 0].float().cpu().numpy()
                scores[i] = float(out["object_score_logits"].reshape(-1)[0])
        return FrameResult(frame, ids, logits, scores, self.size)


def _prompt_tensors(
    prompts: Prompts, size: tuple[int, int], model: UnSAMv2Model, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (1, N, 2) model-frame coords and (1, N) int32 labels: box corners first."""
    coords, labels = prompts.coords_array(), prompts.labels_array()
    if prompts.box is not None:
        coords = np.concatenate([prompts.box.as_array().reshape(2, 2), coords])
        labels = np.concatenate([np.array([2, 3], dtype=np.int32), labels])
    frame = to_model_frame(coords.astype(np.float32), size, int(model.image_size))
    return frame[None].to(device), torch.as_tensor(labels, dtype=torch.int32, device=device)[None]
