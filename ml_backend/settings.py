"""Process settings, read once from the environment (the only module that reads it).

Every variable has the ``UNSAMV2_`` prefix except Label Studio's conventional
``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``. Bad values raise `SettingsError` naming the
variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from core_model.allocator import keep_freed_memory
from core_model.errors import UnSAMv2Error
from core_model.imageio import MAX_IMAGE_PIXELS
from labeling_pipeline.label_studio.fetch_rules import ImageFetchError, parse_host_entry
from labeling_pipeline.settings import PipelineSettings
from ml_backend.cvat.presets import (
    DEFAULT_PRESETS,
    Preset,
    PresetError,
    parse_presets,
    read_presets_file,
)


class SettingsError(UnSAMv2Error, ValueError):
    """An environment variable has an unusable value."""


@dataclass(frozen=True)
class Settings:
    """Settings of the backend process and, through `pipeline`, of the workers.

    Attributes:
        pipeline: Store, broker, model, Label Studio and retraining settings.
        host: Interface the HTTP backend listens on.
        port: Its port.
        http_threads: Request threads of the backend process.
        basic_auth: (user, password) required on every route but the webhook, or None.
        webhook_secret: Value Label Studio must send in the ``X-UnSAMv2-Secret`` header (or
            ``?secret=``) with webhook events; None accepts unauthenticated events.
        allowed_image_hosts: Hosts (besides Label Studio's) whose image URLs may be fetched:
            ``host``, ``host:port``, ``*.domain`` or ``*``.
        label_studio_hosts: Hosts (besides LABEL_STUDIO_URL's) that /setup may name as Label
            Studio; a /setup hostname matching neither is ignored.
        allow_private_networks: Allow fetching images from private/loopback addresses.
        local_files_root: Label Studio's local-files document root, if mounted here.
        playground_dir: Folder whose image files the playground offers in its picker.
        default_granularity: Granularity when a click carries none.
        cache_mb: Embedding cache size.
        max_image_pixels: Largest image accepted.
        model_poll_s: How often the backend looks for a newly published model version.
        max_concurrent_encodes: Image encoder runs at once in the backend process.
        max_queued_requests: Model calls that may wait in line before the backend answers 503.
        batch_clicks: Decode the clicks of concurrent annotators in micro-batches (one worker).
        batch_window_ms: How long a click waits for others to join its batch.
        batch_max_size: Most clicks per decoder call (0: 8 on a GPU, 1 on a CPU).
        cpu_click_decoders: Clicks of a batch decoded side by side on a CPU, one intra-op
            thread each (0: one per intra-op thread, i.e. per core; 1: one at a time).
        prefetch_workers: Threads computing embeddings of opened tasks ahead of the first
            click (0: no prefetch).
        prefetch_next: Next tasks of the project (from the Label Studio API) whose embeddings
            are prefetched when a task is opened.
        cvat_presets: Granularity presets served to CVAT, one interactor and one detector each
            (``UNSAMV2_CVAT_PRESETS``, compact or JSON, or ``UNSAMV2_CVAT_PRESETS_FILE``).
        max_request_bytes: Largest request body (HTTP 413 above it).
        preannotate_deadline_s: Time one whole-image pre-annotation request (or CVAT detector
            call) may spend decoding; the masks found by then are returned, marked partial.
        max_loaded_models: Models kept loaded at once (the global one and per-project ones).
        max_loaded_model_mb: Memory of the per-project models kept loaded.
        auto_download: With no checkpoint configured or present, the backend downloads the
            official UnSAMv2 checkpoint into the weights folder on first start.
        checkpoint_url: Mirror the first-start download comes from instead of the Hugging Face
            Hub or Google Drive.
        cvat_state_secret: Key signing CVAT tracker states (None: a random key per process,
            so states do not survive a restart).
        cvat_tracker_sessions: CVAT tracker sessions kept at once (least recently used evicted).
        cvat_tracker_ttl_s: Idle time after which a CVAT tracker session (and its state) expires.
        cvat_specialist: The task specialist a Nuclio function serves as a CVAT detector, by its
            function name ``unsamv2-specialist-<project id>-<labels>`` (None: the presets).
        max_video_bytes: Largest video file a Label Studio video task may download.
        video_max_frames: Frames one Label Studio video tracking request propagates past the
            first keyframe (the track ends there, marked as cut off).
        video_deadline_s: Time one Label Studio video tracking request may spend propagating;
            the frames tracked by then are returned, marked partial.
        video_cache_mb: Disk space of the downloaded task videos kept for the next requests
            on the same clip (0: each request downloads its video again).
    """

    pipeline: PipelineSettings
    host: str = "127.0.0.1"
    port: int = 9090
    http_threads: int = 8
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    allowed_image_hosts: frozenset[str] = frozenset()
    label_studio_hosts: frozenset[str] = frozenset()
    allow_private_networks: bool = False
    local_files_root: Path | None = None
    playground_dir: Path | None = None
    default_granularity: float = 0.5
    cache_mb: int = 1024
    max_image_pixels: int = MAX_IMAGE_PIXELS
    model_poll_s: float = 10.0
    max_concurrent_encodes: int = 1
    max_queued_requests: int = 32
    batch_clicks: bool = True
    batch_window_ms: float = 2.0
    batch_max_size: int = 0
    cpu_click_decoders: int = 0
    prefetch_workers: int = 1
    prefetch_next: int = 0
    cvat_presets: tuple[Preset, ...] = DEFAULT_PRESETS
    max_request_bytes: int = 8 * 1024 * 1024
    preannotate_deadline_s: float = 20.0
    max_loaded_models: int = 2
    max_loaded_model_mb: int = 8192
    auto_download: bool = False
    checkpoint_url: str | None = None
    cvat_state_secret: str | None = field(default=None, repr=False)
    cvat_tracker_sessions: int = 16
    cvat_tracker_ttl_s: float = 600.0
    cvat_specialist: str | None = None
    max_video_bytes: int = 200 * 1024 * 1024
    video_max_frames: int = 300
    video_deadline_s: float = 60.0
    video_cache_mb: int = 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `env` (default: the process environment)."""
        reader = _Reader(os.environ if env is None else env)
        data_dir = Path(reader.text("UNSAMV2_DATA_DIR") or "data").expanduser()
        checkpoint = reader.text("UNSAMV2_CHECKPOINT")
        pipeline = PipelineSettings(
            data_dir=data_dir,
            database_url=reader.text("UNSAMV2_DATABASE_URL"),
            broker_url=reader.text("UNSAMV2_BROKER_URL"),
            result_backend=reader.text("UNSAMV2_RESULT_BACKEND"),
            model=reader.text("UNSAMV2_MODEL") or "small",
            checkpoint=Path(checkpoint).expanduser() if checkpoint else None,
            device=reader.text("UNSAMV2_DEVICE") or "cpu",
            label_studio_url=reader.text("LABEL_STUDIO_URL"),
            label_studio_api_key=reader.text("LABEL_STUDIO_API_KEY"),
            # default: the best DINO model in the weights folder, else color with a warning
            features=reader.text("UNSAMV2_FEATURES") or f"auto:{data_dir / 'weights'}",
            retrain_min_new_masks=reader.integer("UNSAMV2_RETRAIN_MIN_NEW_MASKS", 50, low=1),
            retrain_period_s=reader.number("UNSAMV2_RETRAIN_PERIOD_S", 86400.0, low=1.0),
            retrain_check_interval_s=reader.number(
                "UNSAMV2_RETRAIN_CHECK_INTERVAL_S", 300.0, low=0.1
            ),
            visibility_timeout_s=reader.number("UNSAMV2_VISIBILITY_TIMEOUT_S", 3600.0, low=1.0),
            job_stale_s=reader.number("UNSAMV2_JOB_STALE_S", 1800.0, low=1.0),
            torch_threads=reader.integer("UNSAMV2_TORCH_THREADS", 0, low=0) or None,
            fetch_timeout_s=reader.number("UNSAMV2_FETCH_TIMEOUT_S", 30.0, low=0.1),
            gate_metric=reader.text("UNSAMV2_GATE_METRIC") or "annotator_iou",
            gate_tolerance=reader.number("UNSAMV2_GATE_TOLERANCE", 0.02, low=0.0),
            gate_min_masks=reader.integer("UNSAMV2_GATE_MIN_MASKS", 10, low=1),
            holdout_fraction=reader.number("UNSAMV2_HOLDOUT_FRACTION", 0.2, low=0.0, high=0.9),
        )
        user, password = (
            reader.text("UNSAMV2_BASIC_AUTH_USER"),
            reader.text("UNSAMV2_BASIC_AUTH_PASS"),
        )
        if bool(user) != bool(password):
            raise SettingsError(
                "set both UNSAMV2_BASIC_AUTH_USER and UNSAMV2_BASIC_AUTH_PASS, or neither"
            )
        local_root = reader.text("UNSAMV2_LOCAL_FILES_ROOT")
        playground = reader.text("UNSAMV2_PLAYGROUND_DIR")
        return cls(
            pipeline=pipeline,
            host=reader.text("UNSAMV2_HOST") or "127.0.0.1",
            port=reader.integer("UNSAMV2_PORT", 9090, low=1, high=65535),
            http_threads=reader.integer("UNSAMV2_HTTP_THREADS", 8, low=1),
            basic_auth=(user, password) if user and password else None,
            webhook_secret=reader.text("UNSAMV2_WEBHOOK_SECRET"),
            allowed_image_hosts=reader.hosts("UNSAMV2_ALLOWED_IMAGE_HOSTS"),
            label_studio_hosts=reader.hosts("UNSAMV2_LABEL_STUDIO_HOSTS", allow_any=False),
            allow_private_networks=reader.flag("UNSAMV2_ALLOW_PRIVATE_NETWORKS"),
            local_files_root=Path(local_root) if local_root else None,
            playground_dir=Path(playground).expanduser() if playground else None,
            default_granularity=reader.number(
                "UNSAMV2_DEFAULT_GRANULARITY", 0.5, low=0.1, high=1.0
            ),
            cache_mb=reader.integer("UNSAMV2_CACHE_MB", 1024, low=0),
            max_image_pixels=reader.integer("UNSAMV2_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, low=1),
            model_poll_s=reader.number("UNSAMV2_MODEL_POLL_S", 10.0, low=0.1),
            max_concurrent_encodes=reader.integer("UNSAMV2_MAX_CONCURRENT_ENCODES", 1, low=1),
            max_queued_requests=reader.integer("UNSAMV2_MAX_QUEUED_REQUESTS", 32, low=0),
            batch_clicks=(
                reader.text("UNSAMV2_BATCH_CLICKS") is None or reader.flag("UNSAMV2_BATCH_CLICKS")
            ),
            batch_window_ms=reader.number("UNSAMV2_BATCH_WINDOW_MS", 2.0, low=0.0, high=1000.0),
            batch_max_size=reader.integer("UNSAMV2_BATCH_MAX_SIZE", 0, low=0, high=256),
            cpu_click_decoders=reader.integer("UNSAMV2_CPU_CLICK_DECODERS", 0, low=0, high=256),
            prefetch_workers=reader.integer("UNSAMV2_PREFETCH_WORKERS", 1, low=0, high=16),
            prefetch_next=reader.integer("UNSAMV2_PREFETCH_NEXT", 0, low=0, high=100),
            cvat_presets=reader.presets("UNSAMV2_CVAT_PRESETS"),
            max_request_bytes=reader.integer(
                "UNSAMV2_MAX_REQUEST_BYTES", 8 * 1024 * 1024, low=1024
            ),
            preannotate_deadline_s=reader.number(
                "UNSAMV2_PREANNOTATE_DEADLINE_S", 20.0, low=0.0, high=3600.0
            ),
            max_loaded_models=reader.integer(
                "UNSAMV2_MAX_LOADED_MODELS", 2 if pipeline.device == "cpu" else 4, low=1
            ),
            max_loaded_model_mb=reader.integer("UNSAMV2_MAX_LOADED_MODEL_MB", 8192, low=1),
            auto_download=reader.flag("UNSAMV2_AUTO_DOWNLOAD", default=True),
            checkpoint_url=reader.text("UNSAMV2_CHECKPOINT_URL"),
            cvat_state_secret=reader.text("UNSAMV2_CVAT_STATE_SECRET"),
            cvat_tracker_sessions=reader.integer(
                "UNSAMV2_CVAT_TRACKER_SESSIONS", 16, low=1, high=1024
            ),
            cvat_tracker_ttl_s=reader.number(
                "UNSAMV2_CVAT_TRACKER_TTL_S", 600.0, low=1.0, high=8 * 3600.0
            ),
            cvat_specialist=reader.text("UNSAMV2_CVAT_SPECIALIST"),
            max_video_bytes=reader.integer("UNSAMV2_MAX_VIDEO_BYTES", 200 * 1024 * 1024, low=1024),
            video_max_frames=reader.integer("UNSAMV2_VIDEO_MAX_FRAMES", 300, low=1, high=100_000),
            video_deadline_s=reader.number("UNSAMV2_VIDEO_DEADLINE_S", 60.0, low=0.1, high=3600.0),
            video_cache_mb=reader.integer("UNSAMV2_VIDEO_CACHE_MB", 1024, low=0),
        )

    def with_pipeline(self, **changes: object) -> Settings:
        """Return a copy with some pipeline settings changed."""
        return replace(self, pipeline=replace(self.pipeline, **changes))  # type: ignore[arg-type]


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def number(
        self, name: str, default: float, *, low: float | None = None, high: float | None = None
    ) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if (
            value != value
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            raise SettingsError(f"{name} must lie in [{low}, {high}], got {raw!r}")
        return value

    def integer(
        self, name: str, default: int, *, low: int | None = None, high: int | None = None
    ) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        if not raw.lstrip("-").isdigit():
            raise SettingsError(f"{name} must be an integer, got {raw!r}")
        value = int(raw)
        if (low is not None and value < low) or (high is not None and value > high):
            raise SettingsError(f"{name} must lie in [{low}, {high}], got {raw!r}")
        return value

    def presets(self, name: str) -> tuple[Preset, ...]:
        raw, path = self.text(name), self.text(f"{name}_FILE")
        if raw is not None and path is not None:
            raise SettingsError(f"set {name} or {name}_FILE, not both")
        try:
            if path is not None:
                return read_presets_file(Path(path).expanduser())
            return DEFAULT_PRESETS if raw is None else parse_presets(raw)
        except PresetError as exc:
            raise SettingsError(f"{name if path is None else name + '_FILE'}: {exc}") from None

    def hosts(self, name: str, *, allow_any: bool = True) -> frozenset[str]:
        entries = frozenset(h.strip() for h in (self.text(name) or "").split(",") if h.strip())
        for entry in entries:
            try:
                parsed = parse_host_entry(entry)
            except ImageFetchError as exc:
                raise SettingsError(f"{name}: {exc}") from None
            if parsed.host == "*" and not allow_any:
                raise SettingsError(f"{name} must name hosts; '*' is not accepted")
        return entries

    def flag(self, name: str, *, default: bool = False) -> bool:
        raw = (self.text(name) or str(default)).lower()
        if raw not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise SettingsError(f"{name} must be true or false, got {raw!r}")
        return raw in ("1", "true", "yes", "on")


def tune_memory_allocator(env: Mapping[str, str] | None = None) -> bool:
    """Let malloc keep freed tensor memory (`core_model.allocator`) unless turned off.

    ``UNSAMV2_KEEP_FREED_MEMORY`` (default true) set to false leaves malloc as it is. Forked
    workers inherit the setting.

    Returns:
        Whether the setting is in effect (False off glibc or when turned off).

    Raises:
        SettingsError: the variable is not a boolean.
    """
    reader = _Reader(os.environ if env is None else env)
    if not reader.flag("UNSAMV2_KEEP_FREED_MEMORY", default=True):
        return False
    return keep_freed_memory()


def quiet_video_decoder() -> None:
    """Keep FFmpeg's own messages (OpenCV's video reader) off stderr, unless the user set a level.

    OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL`` when it first opens a video in the process, so call
    this before that; a broken file is then reported once, by the caller's error message.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
