"""`unsamv2 bench backend`: HTTP latency of interactive clicks, one and eight annotators.

The real backend app (routes, Label Studio JSON decoding, image cache, brush RLE encoding)
serves on 127.0.0.1 through the server of `unsamv2 serve` (waitress), with a model of the given
variant and random weights loaded from a checkpoint file like a real one. Tasks point at
generated images through Label Studio's local-files URLs. After one warm-up click per image
(the embedding), it measures: one annotator clicking on one image, then eight annotators
clicking at the same time, each on their own image. Every answer is checked: HTTP 200, the
result id of the annotator's own task, the image's size, and a mask equal to the one the
predictor gives for that click alone (no cross-talk between concurrent requests).

With ``--projects 2``, a second random model is published for Label Studio project 2
(``ls:2``), then three rounds alternate: the eight annotators in project 1 (one model), and
half of them in project 2 (two models serving at once); the report compares the two kinds of
rounds, measured alternately so that a change of machine load hits both alike.

With ``--hostile``, the eight annotators click once more while eight hostile clients (slow-drip
bodies, oversized bodies, absurd ``original_width``; see `bench_hostile`) hit the same server;
the report compares the valid clicks' p95 with the calm run's and counts 5xx answers.

With ``--serving``, instead: today's serving path against embedding prefetch and click batches
in the same run (first click after opening a task, concurrent annotators, overload past the
click queue's bound); see `bench_serving`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.cli.bench_clicks import Clicks, check_answers, click_body, percentiles, serve
from ml_backend.cli.bench_serving import add_arguments as add_serving_arguments
from ml_backend.cli.bench_serving import print_serving, run_serving_bench, serving_ok


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
    p.add_argument(
        "--projects",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: repeat the concurrent run, half the annotators in a project on its own version",
    )
    p.add_argument(
        "--hostile",
        action="store_true",
        help="repeat the concurrent run next to 8 slow, oversized and absurd clients",
    )
    add_serving_arguments(p)
    p.set_defaults(run=run_backend_bench)


def _setup(args: argparse.Namespace, root: Path) -> tuple[Any, Any, tuple[int, int], Any]:
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
    runtime.scoped.ttl_s = settings.model_poll_s  # as served: no store query per click
    runtime.refresh()
    app = create_app(settings, runtime=runtime, store=store, start_runtime=False)
    return app, runtime, (width, height), settings


def _hostile_run(
    args: argparse.Namespace, clicks: Clicks, port: int, settings: Any, calm: dict[str, float]
) -> dict[str, Any]:
    from ml_backend.cli.bench_hostile import HostileClients

    x, y = clicks.plans[0][0]
    hostile = HostileClients(
        port,
        lambda: click_body(0, x, y, clicks.config, clicks.size, "hostile"),
        settings.max_request_bytes,
    )
    hostile.start()
    time.sleep(1.0)  # the hostile clients are connected and sending
    times, wall = clicks.concurrent(args.annotators, args.clicks, "hostile")
    statuses = hostile.stop()
    figures = percentiles(times)
    hostile_5xx = sum(n for c in statuses.values() for s, n in c.items() if s.startswith("5"))
    return {
        **figures,
        "clicks_per_s": len(times) / wall,
        "p95_ratio": figures["p95_ms"] / calm["p95_ms"],
        "failed_requests": clicks.failures.get("hostile", []),
        "valid_5xx": clicks.server_errors.get("hostile", 0),
        "hostile_5xx": hostile_5xx,
        "hostile_statuses": statuses,
    }


def _second_project(args: argparse.Namespace, root: Path, app: Any, clicks: Clicks) -> Any:
    """Publish a second random model for Label Studio project 2 and warm its embeddings up."""
    import requests
    import torch

    from core_model.build import build_model
    from core_model.checkpoint import file_sha256, save_official_checkpoint
    from labeling_pipeline.store.models import ModelVersion
    from labeling_pipeline.store.versions import add_version

    folder = root / "data" / "models" / "bench-project-2"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    save_official_checkpoint(build_model(args.config), folder / "model.pt")
    with app.extensions["unsamv2"].store.session() as session:
        add_version(
            session,
            ModelVersion(
                name="bench-project-2",
                path=str(folder),
                model=args.config,
                checkpoint_sha256=file_sha256(folder / "model.pt"),
                scope="ls:2",
            ),
            publish=True,
        )
    with requests.Session() as session:
        for task_id in range(1, args.annotators, 2):  # load the version, embed its images
            clicks.click(session, task_id, 0, "projects", 2)

    def scope_of(task_id: int) -> str:
        return "ls:2" if task_id % 2 else "global"

    return scope_of


def _projects_run(
    args: argparse.Namespace, root: Path, app: Any, clicks: Clicks
) -> tuple[dict[str, Any], Any]:
    """Alternate one-project and two-project rounds (3 each), so load drift hits both alike."""
    scope_of = _second_project(args, root, app, clicks)
    one: list[float] = []
    two: list[float] = []
    wall_two = 0.0
    for _ in range(3):
        times, _wall = clicks.concurrent(args.annotators, args.clicks, "calm")
        one += times
        times, wall = clicks.concurrent(args.annotators, args.clicks, "projects", projects=2)
        two += times
        wall_two += wall
    single, figures = percentiles(one), percentiles(two)
    return {
        **figures,
        "one_project": single,
        "clicks_per_s": len(two) / wall_two,
        "p50_ratio": figures["p50_ms"] / single["p50_ms"],
        "p95_ratio": figures["p95_ms"] / single["p95_ms"],
        "failed_requests": clicks.failures.get("projects", []),
    }, scope_of


def _serving_bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = run_serving_bench(args, Path(tmp))
    print_serving(args, report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if serving_ok(report) else 1


def run_backend_bench(args: argparse.Namespace) -> int:
    """Run the scenarios and print the figures."""
    if args.serving:
        return _serving_bench(args)
    import requests

    from ml_backend.label_studio.label_config import shipped_config

    with tempfile.TemporaryDirectory() as tmp:
        app, runtime, size, settings = _setup(args, Path(tmp))
        server, port = serve(app, settings)
        rng = np.random.default_rng(0)
        plans = {
            t: [(float(rng.uniform(5, 95)), float(rng.uniform(5, 95))) for _ in range(args.clicks)]
            for t in range(args.annotators)
        }
        clicks = Clicks(f"http://127.0.0.1:{port}", plans, shipped_config(), size)
        with requests.Session() as session:
            for task_id in range(args.annotators):  # warm-up: one embedding per image
                clicks.click(session, task_id, 0, "calm")
            single = [clicks.click(session, 0, i, "calm") for i in range(args.clicks)]
        concurrent, wall = clicks.concurrent(args.annotators, args.clicks, "calm")
        report: dict[str, Any] = {
            "config": args.config,
            "size": args.size,
            "annotators": args.annotators,
            "single": percentiles(single),
            "concurrent": percentiles(concurrent),
            "concurrent_clicks_per_s": len(concurrent) / wall,
        }
        if args.hostile:
            report["hostile"] = _hostile_run(args, clicks, port, settings, report["concurrent"])
        scope_of = None
        if args.projects == 2:
            report["projects"], scope_of = _projects_run(args, Path(tmp), app, clicks)
        server.close()
        report["mismatches"] = check_answers(
            app, runtime, plans, clicks.answers.get("calm", {}), size
        )
        report["failed_requests"] = clicks.failures.get("calm", [])
        if args.hostile:
            report["hostile"]["mismatches"] = check_answers(
                app, runtime, plans, clicks.answers.get("hostile", {}), size
            )
        if scope_of is not None:
            report["projects"]["mismatches"] = check_answers(
                app, runtime, plans, clicks.answers.get("projects", {}), size, scope_of
            )
    _print(args, report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    hostile = report.get("hostile")
    projects = report.get("projects")
    projects_ok = projects is None or (
        projects["mismatches"] == 0 and not projects["failed_requests"]
    )
    hostile_ok = hostile is None or (
        hostile["mismatches"] == 0
        and not hostile["failed_requests"]
        and hostile["hostile_5xx"] == 0
    )
    calm_ok = report["mismatches"] == 0 and not report["failed_requests"]
    return 0 if calm_ok and hostile_ok and projects_ok else 1


def _print(args: argparse.Namespace, report: dict[str, Any]) -> None:
    print(
        f"bench backend: model {args.config} (random weights), images {args.size}, HTTP on "
        f"127.0.0.1"
    )
    print(
        f"  1 annotator : p50 {report['single']['p50_ms']:.1f} ms, "
        f"p95 {report['single']['p95_ms']:.1f} ms per click"
    )
    failures = report["failed_requests"]
    print(
        f"  {args.annotators} annotators: p50 {report['concurrent']['p50_ms']:.1f} ms, "
        f"p95 {report['concurrent']['p95_ms']:.1f} ms per click, "
        f"{report['concurrent_clicks_per_s']:.1f} clicks/s, failed requests {len(failures)}, "
        f"mismatched answers {report['mismatches']}"
    )
    for failure in failures[:5]:
        print(f"  failed: {failure}")
    projects = report.get("projects")
    if projects is not None:
        print(
            f"  {args.annotators} annotators, 3 alternating rounds: one project p50 "
            f"{projects['one_project']['p50_ms']:.1f} ms, p95 "
            f"{projects['one_project']['p95_ms']:.1f} ms; 2 projects on 2 model versions p50 "
            f"{projects['p50_ms']:.1f} ms ({projects['p50_ratio']:.2f}x), p95 "
            f"{projects['p95_ms']:.1f} ms ({projects['p95_ratio']:.2f}x), failed requests "
            f"{len(projects['failed_requests'])}, mismatched answers {projects['mismatches']}"
        )
    hostile = report.get("hostile")
    if hostile is None:
        return
    print(
        f"  {args.annotators} annotators + 8 hostile clients: p50 {hostile['p50_ms']:.1f} ms, "
        f"p95 {hostile['p95_ms']:.1f} ms per click ({hostile['p95_ratio']:.2f}x calm p95), "
        f"failed requests {len(hostile['failed_requests'])}, mismatched answers "
        f"{hostile['mismatches']}, 5xx: valid {hostile['valid_5xx']}, hostile "
        f"{hostile['hostile_5xx']}"
    )
    for kind, statuses in hostile["hostile_statuses"].items():
        counts = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
        print(f"    {kind}: {counts or 'no answer yet'}")
    for failure in hostile["failed_requests"][:5]:
        print(f"  failed: {failure}")
