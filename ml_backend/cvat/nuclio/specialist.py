"""A Nuclio function that serves one task specialist as a CVAT detector.

When ``UNSAMV2_CVAT_SPECIALIST`` names a specialist function (``unsamv2-specialist-<project
id>-<labels>``, as dashboard mode lists it and ``unsamv2 specialist nuclio`` writes it into
``function.yaml``), `ml_backend.cvat.nuclio.main.init_context` opens the store
(``UNSAMV2_DATABASE_URL``, else the SQLite file of ``UNSAMV2_DATA_DIR``) instead of loading
the SAM 2 model, and every call runs `invoke_specialist`, the code path of dashboard mode.

The function follows its lineage (project and labels), not one version: each call looks up
the lineage's current version, so a retrained specialist that passed its gate is served by the
deployed function without a redeploy, under the same labels (the ``spec`` CVAT read at deploy
time stays right, since a lineage's labels never change). A lineage without a current version
(retired, rolled back past its first version, or never published) answers 404 naming the
current specialists.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml_backend.cvat.service import CvatOptions, UnknownFunctionError
from ml_backend.cvat.specialist_functions import (
    SpecialistFunction,
    invoke_specialist,
    is_specialist_name,
    specialist_function,
)
from ml_backend.errors import BadRequestError

if TYPE_CHECKING:
    from labeling_pipeline.store import Store
    from ml_backend.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpecialistDetector:
    """The detector of one specialist lineage, as a Nuclio function serves it.

    Attributes:
        name: Function name, ``unsamv2-specialist-<project id>-<labels>``.
        store: The store whose current version of the lineage is served.
        options: Frame size limit and polygon tolerance (as in dashboard mode).
        device: Torch device the specialist runs on (``cpu``, ``cuda``, ...).
    """

    name: str
    store: Store
    options: CvatOptions
    device: str = "cpu"

    @classmethod
    def open(cls, settings: Settings) -> SpecialistDetector:
        """Open the store named by `settings` and load the specialist (if current now).

        Raises:
            SettingsError: ``UNSAMV2_CVAT_SPECIALIST`` is not a specialist function name.
            StoreError: the store cannot be opened.
        """
        from labeling_pipeline.store import Store
        from ml_backend.settings import SettingsError

        name = (settings.cvat_specialist or "").strip()
        if not is_specialist_name(name):
            raise SettingsError(
                f"UNSAMV2_CVAT_SPECIALIST must name a specialist function "
                f"(unsamv2-specialist-<project id>-<labels>, see `unsamv2 specialist nuclio`), "
                f"got {name!r}"
            )
        detector = cls(
            name,
            Store(settings.pipeline.resolved_database_url),
            CvatOptions(max_image_pixels=settings.max_image_pixels),
            settings.pipeline.device,
        )
        detector.preload()
        return detector

    def preload(self) -> None:
        """Load the current version now, so that the first call is not slower than the rest.

        A lineage without a current version, or a version that cannot be loaded, is logged;
        calls then answer the error.
        """
        from core_model.errors import UnSAMv2Error

        try:
            function = self.current()
            self._load(function)
        except UnSAMv2Error as exc:
            logger.error("CVAT specialist %s not loaded: %s", self.name, exc)
            return
        logger.info(
            "CVAT specialist %s serves %s (labels %s) on %s",
            self.name,
            function.version,
            ", ".join(function.labels),
            self.device,
        )

    def current(self) -> SpecialistFunction:
        """Return the lineage's current version as a detector.

        Raises:
            UnknownFunctionError: the lineage has no current version (HTTP 404).
        """
        try:
            return specialist_function(self.store, self.name)
        except UnknownFunctionError as exc:
            raise UnknownFunctionError(
                f"the specialist {self.name} this function serves has no current version "
                f"(retired or never published); {str(exc).rpartition('; ')[2]}"
            ) from None

    def _load(self, function: SpecialistFunction) -> None:
        from ml_backend.label_studio.specialist_predictions import loaded_specialist

        loaded_specialist(function.version, function.checkpoint, self.device)

    def invoke(self, body: object) -> list[dict[str, Any]]:
        """Answer one detector call with the current version's mask shapes, largest first.

        Raises:
            BadRequestError, InvalidImageError: bad request (4xx).
            UnknownFunctionError: the lineage has no current version (404).
            UnSAMv2Error: the version cannot be loaded (e.g. its base weights changed).
        """
        if not isinstance(body, Mapping):
            raise BadRequestError("the request body must be a JSON object")
        function = self.current()
        if self.device != "cpu":
            self._load(function)  # a newly published version starts on the CPU
        return invoke_specialist(function, body, self.options)
