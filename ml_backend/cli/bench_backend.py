"""`unsamv2 bench backend`: HTTP latency of interactive clicks, one and eight annotators.

The real backend app (routes, Label Studio JSON decoding, image cache, brush RLE encoding)
serves on 127.0.0.1 through a threaded WSGI server, with a model of the given variant and random
weights loaded from a checkpoint file like a real one. Tasks point at generated images through
Label Studio's local-files URLs. After one warm-up click per image (the embedding), it measures:
one annotator clicking on one image, then eight annotators clicking at the same time, each on
their own image. Every answer is checked: HTTP 200, the result id of the annotator's own task,
the image's size, and a mask equal to the one the predictor gives for that click alone (no
cross-talk between concurrent requests).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def add_parser(benches: Any) -> None:
    """Register `bench backend`."""
    p = benches.add_parser(
        "backend", help="HTTP per-click latency, 1 and 8 annotators", description=__doc__
    )
    p.add_argument("--config", default="small", help="model variant (random weights)")
    p.add_argument("--size", default="1024x768", help="image WIDTHxHEIGHT")
    p.add_argument("--annotators", type=int, default=8)
    p.add_argument("--clicks", type=int, default=20, help="timed clicks per annotator")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(run=run_backend_bench)


def _click_body(
    task_id: int, x_pct: float, y_pct: float, config: str, size: tuple[int, int], anchor: str
) -> dict[str, Any]:
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
        "project": "1.1",
        "label_config": config,
        "params": {"context": {"result": [keypoint]}},
    }


def _serve(app: Any) -> tuple[Any, str]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def _setup(args: argparse.Namespace, root: Path) -> tuple[Any, Any, tuple[int, int]]:
    import torch
    from PIL import Image

    from core_model.build import build_model
    from core_model.checkpoint import save_official_checkpoint
    from labeling_pipeline.store import Store
    from ml_backend.cli.bench_images import bench_image
    from ml_backend.label_studio.app import create_app
    from ml_backend.runtime import ModelRuntime
    from ml_backend.settings import Settings

    width, height = (int(v) for v in args.size.lower().split("x"))
    for task_id in range(args.annotators):
        Image.fromarray(bench_image(width, height, seed=task_id)).save(root / f"img{task_id}.png")
    torch.manual_seed(0)
    save_official_checkpoint(build_model(args.config), root / "random.pt")
    settings = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(root / "data"),
            "UNSAMV2_MODEL": args.config,
            "UNSAMV2_CHECKPOINT": str(root / "random.pt"),
            "UNSAMV2_LOCAL_FILES_ROOT": str(root),
        }
    )
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0)
    runtime.refresh()
    app = create_app(settings, runtime=runtime, store=store, start_runtime=False)
    return app, runtime, (width, height)


def _percentiles(times: list[float]) -> dict[str, float]:
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": float(p50) * 1e3, "p95_ms": float(p95) * 1e3, "clicks": len(times)}


def _check_answers(
    app: Any,
    runtime: Any,
    plans: dict[int, list[tuple[float, float]]],
    answers: dict[tuple[int, int], dict[str, Any]],
    size: tuple[int, int],
) -> int:
    """Count answers that are missing or differ from the predictor's own mask for that click."""
    from core_model.masks import brush_rle_to_mask
    from core_model.types import Prompts
    from ml_backend.label_studio.convert import result_id

    predictor, _ = runtime.serving()
    width, height = size
    errors = sum(len(clicks) for clicks in plans.values()) - len(answers)
    for (task_id, index), result in answers.items():
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
        ).masks[0]
        errors += int(
            result["id"] != result_id(task_id, f"a{task_id}-{index}")
            or (result["original_width"], result["original_height"]) != size
            or not np.array_equal(mask, reference)
        )
    return errors


def run_backend_bench(args: argparse.Namespace) -> int:
    """Run both scenarios and print the figures."""
    import requests

    from ml_backend.label_studio.label_config import shipped_config

    config = shipped_config()
    with tempfile.TemporaryDirectory() as tmp:
        app, runtime, size = _setup(args, Path(tmp))
        server, url = _serve(app)
        rng = np.random.default_rng(0)
        plans = {
            t: [(float(rng.uniform(5, 95)), float(rng.uniform(5, 95))) for _ in range(args.clicks)]
            for t in range(args.annotators)
        }
        answers: dict[tuple[int, int], dict[str, Any]] = {}
        failures: list[str] = []

        def click(session: Any, task_id: int, index: int) -> float:
            x, y = plans[task_id][index]
            start = time.perf_counter()
            reply = session.post(
                f"{url}/predict",
                json=_click_body(task_id, x, y, config, size, f"a{task_id}-{index}"),
                timeout=120,
            )
            elapsed = time.perf_counter() - start
            if reply.status_code != 200:
                failures.append(f"task {task_id}: HTTP {reply.status_code} {reply.text[:200]}")
            else:
                answers[(task_id, index)] = reply.json()["results"][0]["result"][0]
            return elapsed

        with requests.Session() as session:
            for task_id in range(args.annotators):  # warm-up: one embedding per image
                click(session, task_id, 0)
            single = [click(session, 0, i) for i in range(args.clicks)]

        def annotator(task_id: int) -> list[float]:
            with requests.Session() as own:
                return [click(own, task_id, i) for i in range(args.clicks)]

        start = time.perf_counter()
        with ThreadPoolExecutor(args.annotators) as pool:
            concurrent = [t for times in pool.map(annotator, range(args.annotators)) for t in times]
        wall = time.perf_counter() - start
        server.shutdown()

        errors = _check_answers(app, runtime, plans, answers, size)
    report = {
        "config": args.config,
        "size": args.size,
        "annotators": args.annotators,
        "single": _percentiles(single),
        "concurrent": _percentiles(concurrent),
        "concurrent_clicks_per_s": len(concurrent) / wall,
        "mismatches": errors,
        "failed_requests": failures,
    }
    print(
        f"bench backend: model {args.config} (random weights), images {args.size}, HTTP on "
        f"127.0.0.1"
    )
    print(
        f"  1 annotator : p50 {report['single']['p50_ms']:.1f} ms, "
        f"p95 {report['single']['p95_ms']:.1f} ms per click"
    )
    print(
        f"  {args.annotators} annotators: p50 {report['concurrent']['p50_ms']:.1f} ms, "
        f"p95 {report['concurrent']['p95_ms']:.1f} ms per click, "
        f"{report['concurrent_clicks_per_s']:.1f} clicks/s, failed requests {len(failures)}, "
        f"mismatched answers {errors}"
    )
    for failure in failures[:5]:
        print(f"  failed: {failure}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if errors == 0 and not failures else 1
