"""/predict for video tasks: track keyframe boxes through the clip with the serving model.

Where the keyframes come from:

* an interactive request (``params.context``): the ``videorectangle`` regions in
  ``context.result``. Label Studio 1.23's editor (Auto-Annotation on) sends the selected video
  box, with the other boxes of its label, when the annotator changes the box's label; drawing
  or moving a video box sends nothing. Its reply replaces the box at once (video regions have
  no suggestion mode; the result keeps the box's id);
* a request without context (task opened, "Retrieve predictions"): the ``videorectangle``
  regions of the task's newest draft that has any, else of its newest annotation that is not
  skipped. A task without keyframes gets no prediction.

Each region is one object: its enabled keyframes are box prompts on their frames with the
region's granularity, and the clip is tracked forwards from the first keyframe for at most
``UNSAMV2_VIDEO_MAX_FRAMES`` frames, within ``UNSAMV2_VIDEO_DEADLINE_S`` for the whole request
(a track cut short is marked partial in ``model_version``, so batch predictions ask again).
The video is downloaded through the guarded fetch (at most ``UNSAMV2_MAX_VIDEO_BYTES``) once
and kept on disk for the next requests on the clip (`video_downloads`: at most
``UNSAMV2_VIDEO_CACHE_MB``, an hour at most), or into a temporary file deleted after the request
when the cache is off or the video is larger than it; it is decoded lazily. Each model step (one
frame of all objects) holds the process's encode lane, so image clicks of other annotators
wait for one frame at most, not for a whole clip.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from core_model.video.video_file import VideoFile
from labeling_pipeline.label_studio.config import LabelConfigError, ProjectConfig, VideoTag
from labeling_pipeline.label_studio.fetch import fetch_task_image
from labeling_pipeline.store.repository import record_predictions
from labeling_pipeline.store.versions import serving_scope
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.context import BackendContext
from ml_backend.label_studio.convert import prediction
from ml_backend.label_studio.schemas import MAX_DRAFTS, MAX_TASKS_PER_PREDICT, LsId, validate
from ml_backend.label_studio.video_convert import (
    VideoObject,
    parse_video_results,
    track_sequence,
    video_box_result,
)
from ml_backend.label_studio.video_downloads import video_key
from ml_backend.label_studio.video_tracking import track_objects
from ml_backend.video_access import video_model_access

logger = logging.getLogger(__name__)

PARTIAL_NOTE = " (partial: video tracking cut short)"
"""Appended to ``model_version`` when a track stopped at the deadline or at an unreadable frame
before reaching its frame limit."""

FPS_MISMATCH = 0.01
"""Relative difference between the Video tag's frame rate and the file's that is logged: Label
Studio numbers frames by its own rate, so frame ``n`` is decoded frame ``n - 1`` only when
they agree."""

_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ogv")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ResultHolder(_Lenient):
    """A draft or annotation of a task: its results (and whether it was skipped)."""

    id: LsId | None = None
    result: list[dict[str, Any]] | None = None
    was_cancelled: StrictBool | None = None


class VideoTask(_Lenient):
    """A task of a /predict request, with what video tracking reads."""

    id: LsId | None = None
    data: dict[str, Any] | None = None
    drafts: Annotated[list[ResultHolder], Field(max_length=MAX_DRAFTS)] | None = None
    annotations: Annotated[list[ResultHolder], Field(max_length=MAX_DRAFTS * 10)] | None = None


class VideoTasks(_Lenient):
    """The tasks of a /predict body."""

    tasks: Annotated[list[VideoTask], Field(min_length=1, max_length=MAX_TASKS_PER_PREDICT)]


def is_video_config(config: ProjectConfig) -> bool:
    """Whether /predict should track video boxes: the config has a VideoRectangle on a Video."""
    return bool(config.video_boxes)


def predict_video(
    ctx: BackendContext,
    body: Mapping[str, Any],
    config: ProjectConfig,
    *,
    context: list[dict[str, Any]] | None,
    project_id: int | None,
    default_granularity: float,
) -> dict[str, Any]:
    """Answer a /predict request of a video project (see the module docstring).

    Args:
        ctx: The backend context.
        body: The request body (already checked against `PredictRequest`).
        config: The parsed labeling config.
        context: ``params.context.result`` of an interactive request, None without context.
        project_id: Label Studio's project id.
        default_granularity: The project's default granularity.
    """
    tasks = validate(VideoTasks, body).tasks
    deadline = time.monotonic() + ctx.settings.video_deadline_s
    if context is not None:
        objects = parse_video_results(context, config, default_granularity=default_granularity)
        if not objects:  # e.g. a deletion notice: nothing to track
            return {"results": []}
        ctx.metrics.predictions.labels("video").inc()
        return {"results": [_track_task(ctx, tasks[0], config, objects, project_id, deadline)]}
    found = [_stored_objects(task, config, default_granularity) for task in tasks]
    if not any(found):
        return {"results": []}
    ctx.metrics.predictions.labels("video").inc()
    results = []
    for task, objects in zip(tasks, found, strict=True):
        if not objects or time.monotonic() > deadline:  # nothing to track, or no time left
            _, version = ctx.runtime.serving(serving_scope(project_id))
            results.append(prediction([], score=0.0, model_version=version + PARTIAL_NOTE))
            continue
        results.append(_track_task(ctx, task, config, objects, project_id, deadline))
    return {"results": results}


def _stored_objects(
    task: VideoTask, config: ProjectConfig, default_granularity: float
) -> list[VideoObject]:
    """Keyframes of the newest draft with video regions, else of the newest kept annotation."""

    def newest_first(items: list[ResultHolder] | None) -> list[ResultHolder]:
        return sorted(items or [], key=lambda item: item.id or 0, reverse=True)

    holders = newest_first(task.drafts)
    holders += [a for a in newest_first(task.annotations) if not a.was_cancelled]
    for holder in holders:
        objects = parse_video_results(
            holder.result or [],
            config,
            default_granularity=default_granularity,
            where=f"task {task.id} result",
            skip_tracks=True,  # an accepted track is not a keyframe to track from
        )
        if objects:
            return objects
    return []


def _video_tag(config: ProjectConfig, objects: list[VideoObject]) -> VideoTag:
    names = {obj.to_name for obj in objects}
    if len(names) != 1:
        raise BadRequestError("track the regions of one video at a time")
    video = config.videos.get(names.pop())
    if video is None:
        raise LabelConfigError(f"the labeling config has no <Video name={objects[0].to_name!r}>")
    return video


def _config_fps(video: VideoTag, data: Mapping[str, Any]) -> float | None:
    """The Video tag's frame rate (a number or ``$key`` of task data); None when unusable."""
    raw: Any = video.framerate
    if isinstance(raw, str) and raw.startswith("$"):
        raw = data.get(raw[1:])
    try:
        fps = float(raw) if raw is not None else 24.0  # Label Studio's default
    except (TypeError, ValueError):
        return None
    if not np.isfinite(fps) or fps <= 0:
        return None
    return 1 / fps if fps < 1 else fps  # Label Studio reads a value below 1 as seconds per frame


@contextlib.contextmanager
def _downloaded(ctx: BackendContext, url: str) -> Iterator[Path]:
    """Yield a local file of a task's video: a kept copy, else downloaded (and maybe kept)."""
    policy = ctx.images.policy.with_max_bytes(ctx.settings.max_video_bytes)
    client = ctx.ls_client()
    suffix = Path(urlsplit(url).path).suffix.lower()
    with ctx.videos().open(
        video_key(url, client),
        lambda: fetch_task_image(url, client=client, policy=policy),
        suffix=suffix if suffix in _VIDEO_SUFFIXES else ".mp4",
    ) as path:
        yield path


def _video_url(task: VideoTask, video: VideoTag) -> str:
    url = (task.data or {}).get(video.data_key)
    if not isinstance(url, str) or not url:
        raise BadRequestError(f"task {task.id} has no video under data.{video.data_key}")
    return url


def _track_task(
    ctx: BackendContext,
    task: VideoTask,
    config: ProjectConfig,
    objects: list[VideoObject],
    project_id: int | None,
    deadline: float,
) -> dict[str, Any]:
    video = _video_tag(config, objects)
    predictor, version = ctx.runtime.serving(serving_scope(project_id))
    model, lane = video_model_access(predictor)
    with (
        _downloaded(ctx, _video_url(task, video)) as path,
        contextlib.closing(
            VideoFile(path, max_pixels=ctx.settings.max_image_pixels, count_frames=False)
        ) as clip,
    ):
        fps = _config_fps(video, task.data or {}) or clip.fps
        if abs(fps - clip.fps) > FPS_MISMATCH * clip.fps:
            logger.warning(
                "task %s: the Video tag's frame rate %.3f differs from the file's %.3f; Label "
                "Studio's frame numbers may not match the file's frames",
                task.id,
                fps,
                clip.fps,
            )
        run = track_objects(
            model,
            lane,
            clip,
            objects,
            max_frames=ctx.settings.video_max_frames,
            deadline=deadline,
        )
        frames_count = objects[0].frames_count or clip.num_frames
        duration = objects[0].duration or clip.num_frames / fps
    results = [
        video_box_result(
            obj,
            track_sequence(obj, run.boxes[index], fps=fps, cut_off=run.cut_off),
            frames_count=frames_count,
            duration=duration,
            score=run.scores[index],
        )
        for index, obj in enumerate(objects)
    ]
    _record(ctx, project_id, task, objects, version)
    logger.info(
        "task %s: %d object(s), %d keyframe prompt(s), tracked over %d frame(s) from frame %d "
        "at granularity %s%s",
        task.id,
        len(objects),
        sum(len(obj.keyframes) for obj in objects),
        run.frames,
        min(obj.first_frame for obj in objects),
        ", ".join(f"{obj.granularity:.2f} ({obj.granularity_source})" for obj in objects),
        " (cut short)" if run.partial else "",
    )
    score = float(np.mean(run.scores)) if run.scores else 0.0
    note = PARTIAL_NOTE if run.partial else ""
    return prediction(results, score=score, model_version=version + note)


def _record(
    ctx: BackendContext,
    project_id: int | None,
    task: VideoTask,
    objects: list[VideoObject],
    version: str,
) -> None:
    if task.id is None:
        return
    regions = [(o.region_id, o.labels[-1] if o.labels else "", o.granularity) for o in objects]
    with ctx.store.session() as session:
        record_predictions(
            session,
            ls_project_id=project_id,
            ls_task_id=task.id,
            regions=regions,
            model_version=version,
        )
