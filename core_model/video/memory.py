"""Per-object tracking state: prompts, outputs kept as memory, and what may be dropped.

SAM-2 keeps every frame's output for the whole clip. A frame's output is only ever read back
(as memory, object pointer or earlier mask) by frames within a fixed distance: the memory window
(``num_maskmem`` frames at the evaluation stride) and the object-pointer window
(``max_obj_ptrs_in_encoder`` frames). `ObjectTrack.forget_far_frames` drops outputs outside both
windows around the current frame and around every prompted frame, so memory stays flat on long
clips while every output that SAM-2 would read is still there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core_model.video.tracking import FrameOutput

COND, NON_COND = "cond_frame_outputs", "non_cond_frame_outputs"


@dataclass
class ObjectTrack:
    """One tracked object.

    Attributes:
        obj_id: The caller's object id.
        granularity: Granularity of the object's latest prompt (None: no granularity token).
        points: Frame -> ((1, N, 2) float32 model-frame coords, (1, N) int32 labels).
        memory: SAM-2's output dict: ``{COND: {t: out}, NON_COND: {t: out}}``.
        pending: Outputs of prompts not yet encoded into memory, as ``{COND: ..., NON_COND: ...}``.
        tracked: Frame -> whether it was last tracked in reverse.
    """

    obj_id: int
    granularity: float | None = None
    points: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    memory: dict[str, dict[int, FrameOutput]] = field(
        default_factory=lambda: {COND: {}, NON_COND: {}}
    )
    pending: dict[str, dict[int, FrameOutput]] = field(
        default_factory=lambda: {COND: {}, NON_COND: {}}
    )
    tracked: dict[int, bool] = field(default_factory=dict)

    def latest_output(self, frame: int) -> FrameOutput | None:
        """Return the most recent output of `frame`: pending first, then memory."""
        for store in (self.pending[COND], self.pending[NON_COND], *self.memory.values()):
            if frame in store:
                return store[frame]
        return None

    def forget_far_frames(self, current: int, window: int) -> int:
        """Drop non-prompted outputs at `window` frames or more from `current` and every prompt.

        Returns:
            The number of outputs dropped.
        """
        anchors = [current, *self.memory[COND]]
        far = [
            t for t in self.memory[NON_COND] if all(abs(t - anchor) >= window for anchor in anchors)
        ]
        for t in far:
            del self.memory[NON_COND][t]
        return len(far)

    def nbytes(self) -> int:
        """Return the bytes held by stored tensors (memories, masks, pointers)."""
        total = 0
        for store in (*self.memory.values(), *self.pending.values()):
            for out in store.values():
                for key in ("maskmem_features", "pred_masks", "obj_ptr"):
                    t = out.get(key)
                    if isinstance(t, torch.Tensor):
                        total += t.numel() * t.element_size()
        return total
