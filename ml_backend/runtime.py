"""The serving process's model: loaded in the background, swapped when a version is published.

`ModelRuntime` never blocks a request on loading: until a model is ready, `predictor()` raises
`ModelUnavailableError` with the reason (loading, no checkpoint configured, file missing, load
failed). Which weights to serve, in order: the current published model version in the store;
the configured checkpoint; the best known checkpoint found in the weights folder; with none of
these and a `fetch_default` (first start, ``UNSAMV2_AUTO_DOWNLOAD``), the default checkpoint,
downloaded once in the background thread (state ``downloading`` with its progress). A poller
notices a newly published version, builds it next to the serving one and swaps the reference;
requests that already hold the old predictor finish with it. A file that fails to load is not
loaded again until it changes (size or modification time); meanwhile the previous model serves.

Requests get the predictor behind the process's `ModelDoor` (`predictor()`, `serving()`), so
every encoder run and decoder call of the process waits in one first-come first-served line.

The above is the global model (scope "global"). A request of a Label Studio project passes its
scope (``serving("ls:3")``): a project with a version of its own is served that version, loaded
on first use and kept in a bounded LRU (`ScopedModels`); a project without one, the global
model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core_model.errors import UnSAMv2Error
from core_model.imageio import MAX_IMAGE_PIXELS
from core_model.serving import MaskPredictor
from labeling_pipeline.model_files.registry import CHECKPOINT_FILE
from labeling_pipeline.model_files.weights import find_checkpoint
from labeling_pipeline.settings import PipelineSettings
from labeling_pipeline.store import Store
from labeling_pipeline.store.versions import GLOBAL_SCOPE, current_version
from ml_backend.model_door import GatedPredictor, ModelDoor
from ml_backend.model_pool import module_bytes
from ml_backend.scoped_models import ScopedModels

logger = logging.getLogger(__name__)


class ModelUnavailableError(UnSAMv2Error):
    """No model can serve right now; the message says why, `retry_after_s` when to ask again."""

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


#: Retry-After (seconds) of requests while the model is on its way
_RETRY_AFTER_S = {"loading": 5, "downloading": 30}


@dataclass(frozen=True)
class WeightsChoice:
    """Which weights to serve.

    Attributes:
        model: Variant or YAML.
        checkpoint: File to load.
        source: "published", "configured" or "weights folder".
        version_name: Published version name, if any.
    """

    model: str
    checkpoint: Path
    source: str
    version_name: str | None = None


def choose_weights(settings: PipelineSettings, store: Store | None) -> WeightsChoice:
    """Pick the weights to serve, or raise `ModelUnavailableError` saying what is missing."""
    if store is not None:
        with store.session() as session:
            version = current_version(session, GLOBAL_SCOPE)
            if version is not None:
                return WeightsChoice(
                    version.model, Path(version.path) / CHECKPOINT_FILE, "published", version.name
                )
    if settings.checkpoint is not None:
        if not settings.checkpoint.is_file():
            raise ModelUnavailableError(f"UNSAMV2_CHECKPOINT={settings.checkpoint} does not exist")
        return WeightsChoice(settings.model, settings.checkpoint, "configured")
    found = find_checkpoint(settings.weights_dir, settings.model)
    if found is not None:
        return WeightsChoice(settings.model, found, "weights folder")
    raise ModelUnavailableError(
        f"no checkpoint for model {settings.model!r}: set UNSAMV2_CHECKPOINT, run "
        "`unsamv2 weights download unsamv2plus` (the official UnSAMv2+ checkpoint, model small) "
        f"or `unsamv2 weights download sam2.1_hiera_{settings.model}` (into {settings.weights_dir})"
    )


def _file_signature(path: Path) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, or None if it cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


class ModelRuntime:
    """Holds the predictor of this process, behind the process's `ModelDoor`.

    Args:
        settings: Pipeline settings (model, checkpoint, device, weights folder).
        store: Store to find published versions in (None: configured weights only).
        make_predictor: Builds a predictor for a `WeightsChoice` (default: `build_model` +
            `GranularityPredictor` with the given cache size).
        poll_s: Interval of the published-version poller (0 disables it).
        cache_bytes: Embedding cache size of the default predictor.
        max_image_pixels: Largest image the default predictor accepts.
        door: The process's door to the model (default: one encoder run at a time, 32 waiting
            calls at most).
        max_models: Models kept loaded, the global one included (per-project ones: one less).
        max_model_bytes: Bytes of per-project models kept loaded.
        fetch_default: Downloads the default checkpoint (given a (bytes, total) progress
            callback) and returns its path; tried once when no weights are found.
    """

    def __init__(
        self,
        settings: PipelineSettings,
        *,
        store: Store | None = None,
        make_predictor: Callable[[WeightsChoice], MaskPredictor] | None = None,
        poll_s: float = 10.0,
        cache_bytes: int = 1 << 30,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        door: ModelDoor | None = None,
        max_models: int = 2,
        max_model_bytes: int = 8 << 30,
        fetch_default: Callable[[Callable[[int, int | None], None]], Path] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.poll_s = poll_s
        self.door = door or ModelDoor()
        self._make = make_predictor or self._default_maker(cache_bytes, max_image_pixels)
        self._lock = threading.Lock()
        self._predictor: GatedPredictor | None = None
        self._choice: WeightsChoice | None = None
        self._failed: tuple[WeightsChoice, tuple[int, int] | None] | None = None
        self._state, self._reason = "loading", "the model is loading"
        self._fetch_default = fetch_default
        self._download: dict[str, float | None] | None = None
        self._download_failure: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scoped = ScopedModels(
            store,
            load=self._load_scoped,
            choice_of=lambda model, path, name: WeightsChoice(model, path, "published", name),
            max_models=max(1, max_models - 1),
            max_bytes=max_model_bytes,
            ttl_s=poll_s,
        )

    def _load_scoped(self, choice: WeightsChoice) -> tuple[MaskPredictor, int]:
        logger.info("loading model version %s from %s", choice.version_name, choice.checkpoint)
        predictor = self._make(choice)
        return self.door.gate(predictor), module_bytes(predictor)

    def _default_maker(
        self, cache_bytes: int, max_pixels: int
    ) -> Callable[[WeightsChoice], MaskPredictor]:
        def make(choice: WeightsChoice) -> MaskPredictor:
            from core_model.build import build_model
            from core_model.cache import LRUEmbeddingCache
            from core_model.predictor import GranularityPredictor

            model = build_model(choice.model, choice.checkpoint, device=self.settings.device)
            return GranularityPredictor(
                model, cache=LRUEmbeddingCache(cache_bytes), max_image_pixels=max_pixels
            )

        return make

    def start(self) -> None:
        """Load in the background and keep polling for new versions (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-runtime", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            if self.poll_s <= 0 or self._stop.wait(self.poll_s):
                return

    def refresh(self) -> None:
        """Load the chosen weights if they differ from the serving ones (never raises).

        A failed load keeps the serving model (if any) and is not retried until the file
        changes or other weights are chosen.
        """
        try:
            choice = choose_weights(self.settings, self.store)
        except ModelUnavailableError as exc:
            if self._predictor is None and not self._download_default():
                self._set_state("unavailable", self._download_failure or str(exc))
            return
        except UnSAMv2Error as exc:  # the store is unreachable: keep serving what we have
            logger.warning("cannot look for model versions: %s", exc)
            return
        if choice == self._choice:
            return
        signature = _file_signature(choice.checkpoint)
        if self._failed == (choice, signature):
            return  # the same broken file: wait until it changes
        logger.info("loading model %s from %s (%s)", choice.model, choice.checkpoint, choice.source)
        try:
            predictor = self._make(choice)
        except Exception as exc:  # any load failure is reported, not raised, in a server
            logger.error("cannot load %s: %s", choice.checkpoint, exc)
            self._failed = (choice, signature)
            if self._predictor is None:
                self._set_state("failed", f"cannot load {choice.checkpoint}: {exc}")
            return
        with self._lock:
            self._predictor, self._choice = self.door.gate(predictor), choice
            self._failed = None
            self._state, self._reason = "ready", ""
        logger.info("serving model version %s", self.model_version)

    def _download_default(self) -> bool:
        """Download the default checkpoint (once) and load it; False if not allowed."""
        fetch, self._fetch_default = self._fetch_default, None
        if fetch is None or self.settings.checkpoint is not None:
            return False
        self._on_progress(0, None)
        try:
            path = fetch(self._on_progress)
        except UnSAMv2Error as exc:  # offline, refused file: one line, in the log and /health
            logger.error("%s", exc)
            self._download_failure = str(exc)
            self._set_state("unavailable", str(exc))
            return True
        finally:
            self._download = None
        self.settings = replace(self.settings, checkpoint=path)
        self._set_state("loading", "the model is loading")
        self.refresh()
        return True

    def _on_progress(self, done: int, total: int | None) -> None:
        percent = round(100 * done / total, 1) if total else None
        with self._lock:
            self._download = {"bytes": done, "total": total, "percent": percent}
            self._state = "downloading"
            self._reason = f"downloading the UnSAMv2 checkpoint (first start): {done >> 20} MB" + (
                f" of {total >> 20} MB ({percent}%)" if total else ""
            )

    def _set_state(self, state: str, reason: str) -> None:
        with self._lock:
            self._state, self._reason = state, reason

    def predictor(self, scope: str = GLOBAL_SCOPE) -> MaskPredictor:
        """Return the serving predictor (behind the door), or raise `ModelUnavailableError`."""
        return self.serving(scope)[0]

    def serving(self, scope: str = GLOBAL_SCOPE) -> tuple[MaskPredictor, str]:
        """Return (predictor, its version) of `scope` consistently.

        A scope other than global whose version is not loaded yet is loaded now (once, however
        many requests wait for it).

        Raises:
            ModelUnavailableError: no model can serve the scope.
        """
        if scope != GLOBAL_SCOPE:
            return self.scoped.serving(scope, self._serving_global)
        return self._serving_global()

    def version_for(self, scope: str) -> str:
        """Return the version `scope` is served, without loading anything (for /setup)."""
        return self.scoped.version(scope, self.model_version)

    def preload(self, scope: str) -> None:
        """Start loading `scope`'s own version in the background, if it has one."""
        if scope != GLOBAL_SCOPE:
            self.scoped.preload(scope)

    def _serving_global(self) -> tuple[MaskPredictor, str]:
        with self._lock:
            if self._predictor is None:
                raise ModelUnavailableError(
                    f"model unavailable ({self._state}): {self._reason}",
                    retry_after_s=_RETRY_AFTER_S.get(self._state),
                )
            return self._predictor, self._version_locked()

    def _version_locked(self) -> str:
        if self._predictor is None or self._choice is None:
            return "unavailable"
        return self._choice.version_name or self._predictor.model_version

    @property
    def model_version(self) -> str:
        """The serving model's version string ("unavailable" before one is loaded)."""
        with self._lock:
            return self._version_locked()

    def status(self) -> dict[str, Any]:
        """JSON-ready state for /health."""
        with self._lock:
            predictor, choice = self._predictor, self._choice
            ready = predictor is not None and choice is not None
            return {
                "state": self._state,
                "reason": self._reason or None,
                "model_version": self._version_locked() if ready else None,
                "model": choice.model if ready and choice else None,
                "source": choice.source if ready and choice else None,
                "granularity_mode": predictor.info.granularity_mode if predictor else None,
                "download": self._download,
                "queue": self.door.status(),
                "scoped": self.scoped.status(),
            }
