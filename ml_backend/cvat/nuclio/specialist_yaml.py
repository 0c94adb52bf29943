"""Nuclio ``function.yaml`` files for a task specialist (``unsamv2 specialist nuclio``).

Nuclio fixes a detector's labels at deploy time (the ``spec`` annotation), so the file is
written from the store: the current specialist of a project and labels gives the function's
name and labels (the same entry dashboard mode lists), the environment names it in
``UNSAMV2_CVAT_SPECIALIST`` (the handler follows the lineage, see
`ml_backend.cvat.nuclio.specialist`), and handler and build settings are those of
``ml_backend/cvat/nuclio/detector/function.yaml``.

Version folders and base weights are named in the store by absolute paths, so the data folder
(and any base weights outside it) is mounted in the function at the same path it has here.
Strings are written as JSON strings, which YAML reads as the same strings.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core_model.specialist import get_variant
from labeling_pipeline.store import Store
from ml_backend.cvat.service import UnknownFunctionError
from ml_backend.cvat.specialist_functions import SpecialistFunction, specialist_functions

logger = logging.getLogger(__name__)

#: Pre-annotation time of the CPU variant (``hiera-small512_dinov2-small224``, random weights)
#: per 1024x768 frame on 2 CPU cores shared with other work (README, task specialists): an
#: upper bound there. Variants at most that size cost at most as much.
CPU_VARIANT_FRAME_S = 1.23
CPU_VARIANT_SIZES = (512, 224)  # (Hiera input side, DINOv2 input side) of that variant
#: Margin over the measured time: slower CPUs, large frames (decoding and resizing up to
#: ``UNSAMV2_MAX_IMAGE_PIXELS``), outline polygons of many components.
TIMEOUT_MARGIN = 20.0
MIN_TIMEOUT_S = 30
#: CVAT gives up on a call after ``CVAT_NUCLIO_DEFAULT_TIMEOUT`` (120 s by default); the
#: function's own timeout stays below it so that CVAT sees the function's answer.
CVAT_TIMEOUT_S = 120
UNTIMED_TIMEOUT_S = 110  # a variant never timed here: as long as CVAT allows
GPU_TIMEOUT_S = 60
FILE_NAMES = {False: "function.yaml", True: "function-gpu.yaml"}


@dataclass(frozen=True)
class SpecialistDeployment:
    """What a specialist's ``function.yaml`` needs.

    Attributes:
        function: The current version of the lineage, as dashboard mode lists it.
        variant: Its specialist variant name.
        data_dir: The data folder (absolute), mounted at the same path in the function.
        host_data_dir: Where that folder is on the Docker host that runs the function.
        extra_mounts: Folders outside `data_dir` the specialist reads (base weights, a models
            folder elsewhere), mounted read-only at the same path.
        database_url: ``UNSAMV2_DATABASE_URL`` for the function (None: SQLite in `data_dir`).
    """

    function: SpecialistFunction
    variant: str
    data_dir: Path
    host_data_dir: Path
    extra_mounts: tuple[Path, ...] = ()
    database_url: str | None = None


def find_specialist(store: Store, project: str | int, labels: Sequence[str]) -> SpecialistFunction:
    """Return the current specialist of a project and labels (in any order).

    Raises:
        NotFoundError: no such project.
        ValueError: no labels, or a label no current specialist of the project has.
        UnknownFunctionError: the project has no current specialist of exactly these labels.
    """
    from labeling_pipeline.store.repository import find_project

    wanted = tuple(label.strip() for label in labels if label.strip())
    if not wanted:
        raise ValueError("name the specialist's labels, e.g. --labels Car or --labels Car,Person")
    with store.session() as session:
        project_id = find_project(session, project).id
    current = [f for f in specialist_functions(store).values() if f.project_id == project_id]
    for function in current:
        if sorted(function.labels) == sorted(wanted):
            return function
    if not current:
        raise UnknownFunctionError(
            f"project {project_id} has no current specialist; train one with "
            "`unsamv2 specialist train` (see `unsamv2 specialist list`)"
        )
    known = sorted({label for function in current for label in function.labels})
    unknown = [label for label in wanted if label not in known]
    if unknown:
        raise ValueError(
            f"unknown label {unknown[0]!r}: the current specialists of project {project_id} "
            f"have the labels {', '.join(known)}"
        )
    listing = "; ".join(f"{f.name} ({', '.join(f.labels)})" for f in current)
    raise UnknownFunctionError(
        f"project {project_id} has no current specialist of the labels {'+'.join(wanted)}; "
        f"current: {listing}"
    )


def plan_deployment(
    store: Store,
    function: SpecialistFunction,
    data_dir: Path,
    *,
    host_data_dir: Path | None = None,
    database_url: str | None = None,
) -> SpecialistDeployment:
    """Collect what the function reads: the version's variant, folders to mount."""
    from labeling_pipeline.store.versions import get_version

    with store.session() as session:
        metadata = dict(get_version(session, function.version).metadata_ or {})
    data_dir = data_dir.expanduser().resolve()
    # the models folder (later versions land there too) and the base weights' files or folders
    wanted = [function.checkpoint.parent.parent]
    for base in dict(metadata.get("bases") or {}).values():
        if isinstance(base, dict) and base.get("path"):
            path = Path(str(base["path"]))
            wanted.append(path if path.is_dir() else path.parent)
    extra: list[Path] = []
    for path in wanted:
        if not path.is_relative_to(data_dir) and path not in extra:
            extra.append(path)
    return SpecialistDeployment(
        function,
        str(metadata.get("variant") or "default"),
        data_dir,
        (host_data_dir or data_dir).expanduser(),
        tuple(extra),
        database_url,
    )


def measured_frame_s(variant: str) -> float | None:
    """Return the measured CPU time per 1024x768 frame of a variant, None if never timed."""
    spec = get_variant(variant)
    if spec.sam_size <= CPU_VARIANT_SIZES[0] and spec.dino_size <= CPU_VARIANT_SIZES[1]:
        return CPU_VARIANT_FRAME_S
    return None


def event_timeout_s(variant: str, *, gpu: bool) -> int:
    """Return the function's ``eventTimeout`` in seconds (below CVAT's 120 s)."""
    frame_s = measured_frame_s(variant)
    if frame_s is not None:
        return max(MIN_TIMEOUT_S, math.ceil(TIMEOUT_MARGIN * frame_s))
    return GPU_TIMEOUT_S if gpu else UNTIMED_TIMEOUT_S


def _q(value: object) -> str:
    return json.dumps(str(value))


def _timeout_comment(deployment: SpecialistDeployment, *, gpu: bool) -> list[str]:
    frame_s = measured_frame_s(deployment.variant)
    if frame_s is not None:
        return [
            f"  # Timeout: variant {deployment.variant} runs a 1024x768 frame in at most "
            f"{frame_s:g} s on 2",
            "  # CPU cores (measured with the CPU variant, README); the version is loaded at",
            f"  # start. {TIMEOUT_MARGIN:g}x that leaves room for slower CPUs and large frames, "
            f"below CVAT's {CVAT_TIMEOUT_S} s.",
        ]
    where = "on a GPU" if gpu else "on a CPU (a GPU variant: prefer function-gpu.yaml)"
    return [
        f"  # Timeout: variant {deployment.variant} was not timed {where};",
        f"  # {event_timeout_s(deployment.variant, gpu=gpu)} s stays below CVAT's "
        f"CVAT_NUCLIO_DEFAULT_TIMEOUT ({CVAT_TIMEOUT_S} s).",
    ]


def _env(deployment: SpecialistDeployment, *, gpu: bool) -> list[str]:
    env = {
        "UNSAMV2_CVAT_SPECIALIST": deployment.function.name,
        "UNSAMV2_DEVICE": "cuda" if gpu else "cpu",
        "UNSAMV2_DATA_DIR": str(deployment.data_dir),
    }
    if deployment.database_url:
        env["UNSAMV2_DATABASE_URL"] = deployment.database_url
    lines = ["  env:"]
    for name, value in env.items():
        lines += [f"    - name: {name}", f"      value: {_q(value)}"]
    return lines


def _volumes(deployment: SpecialistDeployment) -> list[str]:
    lines = [
        "  volumes:",
        "    # the store's version folders are absolute paths: mount them where they are named",
    ]
    mounts = [(deployment.host_data_dir, deployment.data_dir, False)]
    mounts += [(path, path, True) for path in deployment.extra_mounts]
    for index, (host, inside, read_only) in enumerate(mounts):
        name = "unsamv2-data" if index == 0 else f"unsamv2-weights-{index}"
        lines += [
            "    - volume:",
            f"        name: {name}",
            "        hostPath:",
            f"          path: {_q(host)}",
            "      volumeMount:",
            f"        name: {name}",
            f"        mountPath: {_q(inside)}",
        ]
        if read_only:
            lines.append("        readOnly: true")
    return lines


def function_yaml(deployment: SpecialistDeployment, *, gpu: bool = False) -> str:
    """Return the text of the specialist's ``function.yaml`` (or ``function-gpu.yaml``)."""
    function = deployment.function
    entry = function.entry()
    tag = "cuda" if gpu else "cpu"
    labels = ", ".join(function.labels)
    build = "" if gpu else " --build-arg TORCH_VARIANT=cpu"
    lines = [
        f"# UnSAMv2 task specialist {function.version} as a CVAT detector "
        f"({'NVIDIA GPU' if gpu else 'CPU'}). Labels (type mask): {labels}.",
        f"# Written by `unsamv2 specialist nuclio --project {function.project_id} "
        f"--labels {','.join(function.labels)}`.",
        "# The function follows the lineage: a newer version of the same project and labels is",
        "# served without a redeploy; once the lineage has no current version, calls answer 404.",
        "# Build the base image first (repository root):",
        f"#   docker build -f docker/Dockerfile{build} -t unsamv2-backend:{tag} .",
        f"# Deploy (CVAT checkout):  serverless/deploy_{'gpu' if gpu else 'cpu'}.sh <this folder>",
    ]
    if deployment.database_url:
        lines.append("# This file holds UNSAMV2_DATABASE_URL (and its password): keep it private.")
    lines += [
        "metadata:",
        f"  name: {_q(function.name)}",
        "  namespace: cvat",
        "  annotations:",
        *[f"    {key}: {_q(value)}" for key, value in entry["metadata"]["annotations"].items()],
        "",
        "spec:",
        f"  description: {_q(entry['spec']['description'])}",
        '  runtime: "python:3.11"',
        "  handler: ml_backend.cvat.nuclio.main:handler",
        *_timeout_comment(deployment, gpu=gpu),
        f"  eventTimeout: {event_timeout_s(deployment.variant, gpu=gpu)}s",
        *_env(deployment, gpu=gpu),
        "  build:",
        f"    image: {_q(f'cvat.{function.name}:latest' + ('-gpu' if gpu else ''))}",
        f"    baseImage: unsamv2-backend:{tag}",
        "    directives:",
        "      preCopy:",
        "        # the base image starts the backend; Nuclio starts its own processor instead",
        "        - kind: ENTRYPOINT",
        '          value: "[]"',
        "        - kind: HEALTHCHECK",
        "          value: NONE",
        *_volumes(deployment),
    ]
    if gpu:
        lines += ["  resources:", "    limits:", "      nvidia.com/gpu: 1"]
    lines += [
        "  triggers:",
        "    myHttpTrigger:",
        "      kind: http",
        "      # one worker: each worker loads its own specialist copy",
        "      maxWorkers: 1",
        "      workerAvailabilityTimeoutMilliseconds: 10000",
        "      attributes:",
        "        maxRequestBodySize: 33554432 # 32 MB",
        "  platform:",
        "    attributes:",
        "      restartPolicy:",
        "        name: always",
        "        maximumRetryCount: 3",
        "      mountMode: volume",
    ]
    return "\n".join(lines) + "\n"


def write_function_files(
    out: Path, deployment: SpecialistDeployment, *, gpu: bool = False
) -> list[Path]:
    """Write ``function.yaml`` (and ``function-gpu.yaml`` with `gpu`) into `out`; return them."""
    texts = {FILE_NAMES[False]: function_yaml(deployment)}
    if gpu:
        texts[FILE_NAMES[True]] = function_yaml(deployment, gpu=True)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written
