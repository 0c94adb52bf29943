"""Clicks over HTTP for the backend benchmarks: request bodies, the server, checked answers.

Used by `bench_backend` and `bench_serving`. A click is a Label Studio /predict request with
one positive keypoint on task ``img{task_id}.png`` (a local-files URL); every answer can be
compared with the mask the predictor gives for that click alone.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

# a pixel whose reference logit lies this close to the mask threshold may flip when the same
# click is decoded on another number of intra-op threads (the click queue decodes one click
# per core on a CPU): sums in another order differ by ~3e-7 in the low-resolution logits
ROUNDING_LOGIT = 1e-4


def click_body(
    task_id: int,
    x_pct: float,
    y_pct: float,
    config: str,
    size: tuple[int, int],
    anchor: str,
    project: int = 1,
) -> dict[str, Any]:
    """A /predict body: one positive keypoint at (x, y) percent on task `task_id`'s image."""
    width, height = size
    keypoint = {
        "id": anchor,
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "is_positive": True,
        "value": {"x": x_pct, "y": y_pct, "width": 0.5, "keypointlabels": ["Car @0.5"]},
    }
    task = {"id": task_id, "data": {"image": f"/data/local-files/?d=img{task_id}.png"}}
    return {
        "tasks": [task],
        "project": f"{project}.1",
        "label_config": config,
        "params": {"context": {"result": [keypoint]}},
    }


def serve(app: Any, settings: Any) -> tuple[Any, int]:
    """Serve `app` with waitress on 127.0.0.1 in a daemon thread; return (server, port)."""
    from ml_backend.http_server import create_http_server

    server = create_http_server(app, settings, "127.0.0.1", 0)
    threading.Thread(target=server.run, daemon=True).start()
    return server, int(server.effective_port)


def first_result(reply: Any) -> dict[str, Any]:
    """Return the first result of a /predict answer (a `requests` response).

    Parsed with orjson: the benchmark's clients run in the server's process, on its cores, and
    the standard library's parser spends milliseconds of them on each brush answer (2.5 ms for
    a 40,000-value RLE, 0.8 ms with orjson), work that an annotator's browser does on its own
    machine.
    """
    import orjson

    result: dict[str, Any] = orjson.loads(reply.content)["results"][0]["result"][0]
    return result


def percentiles(times: list[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds of latencies in seconds, and their count."""
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": float(p50) * 1e3, "p95_ms": float(p95) * 1e3, "clicks": len(times)}


def check_answers(
    app: Any,
    runtime: Any,
    plans: dict[int, list[tuple[float, float]]],
    answers: dict[tuple[int, int], dict[str, Any]],
    size: tuple[int, int],
    scope_of: Any = None,
    rounding: dict[str, int] | None = None,
) -> int:
    """Count answers that are missing or differ from the predictor's own mask for that click.

    An answer whose mask differs only in pixels whose reference logit lies within
    `ROUNDING_LOGIT` of the threshold is right; with `rounding`, such answers and pixels are
    counted in its "answers" and "pixels" entries.
    """
    from core_model.masks import brush_rle_to_mask
    from core_model.types import Prompts
    from ml_backend.label_studio.convert import result_id

    width, height = size
    errors = sum(len(clicks) for clicks in plans.values()) - len(answers)
    for (task_id, index), result in answers.items():
        predictor, _ = runtime.serving(scope_of(task_id) if scope_of else "global")
        x, y = plans[task_id][index]
        mask = brush_rle_to_mask(result["value"]["rle"], height=height, width=width)
        embedding = predictor.embed_keyed(
            *app.extensions["unsamv2"].images.resolve(
                f"/data/local-files/?d=img{task_id}.png", client=None
            )
        )
        reference = predictor.predict(
            embedding,
            Prompts.from_arrays([[x / 100 * width, y / 100 * height]], [1]),
            granularity=0.5,
        )
        flipped = _flipped_pixels(mask, reference, predictor.mask_threshold)
        errors += int(
            result["id"] != result_id(task_id, f"a{task_id}-{index}")
            or (result["original_width"], result["original_height"]) != size
            or flipped < 0
        )
        if rounding is not None and flipped > 0:
            rounding["answers"] = rounding.get("answers", 0) + 1
            rounding["pixels"] = rounding.get("pixels", 0) + flipped
    return errors


def _flipped_pixels(mask: npt.NDArray[np.bool_], reference: Any, threshold: float) -> int:
    """Pixels where `mask` differs from the reference prediction, all near the threshold.

    Returns -1 if any differing pixel's reference logit (bilinearly upsampled, as for the mask)
    lies farther than `ROUNDING_LOGIT` from the threshold.
    """
    import torch
    from torch.nn import functional

    differ = mask != reference.masks[0]
    if not differ.any():
        return 0
    logits = functional.interpolate(
        torch.from_numpy(reference.low_res_logits[:1])[None],
        size=mask.shape,
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    near = np.abs(logits[differ] - threshold) <= ROUNDING_LOGIT
    return int(differ.sum()) if bool(near.all()) else -1


class Clicks:
    """Sends planned clicks and keeps, per phase, the answers, latencies and failures."""

    def __init__(
        self, url: str, plans: dict[int, list[tuple[float, float]]], config: str, size: Any
    ) -> None:
        self.url, self.plans, self.config, self.size = url, plans, config, size
        self.answers: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
        self.failures: dict[str, list[str]] = {}
        self.server_errors: dict[str, int] = {}

    def click(self, session: Any, task_id: int, index: int, phase: str, project: int = 1) -> float:
        """Send click `index` of task `task_id`; keep the answer; return the latency (s)."""
        x, y = self.plans[task_id][index]
        anchor = f"a{task_id}-{index}"
        body = click_body(task_id, x, y, self.config, self.size, anchor, project)
        start = time.perf_counter()
        reply = session.post(f"{self.url}/predict", json=body, timeout=120)
        elapsed = time.perf_counter() - start
        if reply.status_code != 200:
            self.failures.setdefault(phase, []).append(
                f"task {task_id}: HTTP {reply.status_code} {reply.text[:200]}"
            )
            if reply.status_code >= 500:
                self.server_errors[phase] = self.server_errors.get(phase, 0) + 1
        else:
            answers = self.answers.setdefault(phase, {})
            answers[(task_id, index)] = first_result(reply)
        return elapsed

    def concurrent(
        self, annotators: int, clicks: int, phase: str, projects: int = 1
    ) -> tuple[list[float], float]:
        """Every annotator clicks `clicks` times at once; return the latencies and wall time.

        With `projects` 2, odd annotators click in Label Studio project 2.
        """
        import requests

        def annotator(task_id: int) -> list[float]:
            project = 1 + task_id % projects
            with requests.Session() as own:
                return [self.click(own, task_id, i, phase, project) for i in range(clicks)]

        start = time.perf_counter()
        with ThreadPoolExecutor(annotators) as pool:
            times = [t for part in pool.map(annotator, range(annotators)) for t in part]
        return times, time.perf_counter() - start
