"""`unsamv2 bench backend --serving`: today's serving path against prefetch + click batches.

Two backends serve the same random-weight model in one process, each through the server of
`unsamv2 serve` on 127.0.0.1: "today" (no prefetch; each click goes to the decode lane on
its own) and "new" (opened tasks prefetched, clicks decoded by the micro-batching queue).
Measured alternately, so that load drift of a shared machine hits both alike:

1. first click: an annotator opens a task (/predict without context, as Label Studio does),
   looks at it for ``--think-s`` seconds, then clicks; the click's latency is measured;
2. ``--annotators`` annotators clicking at once on embedded images (two rounds per path):
   throughput and p50/p95;
3. overload (new path only): ``--overload-clients`` clients click at once against a click
   queue bounded at ``--overload-bound``; every answer must be 200 with the right mask, or 503
   with ``Retry-After``.

Every 200 answer is compared with the predictor's own mask for that click alone.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ml_backend.cli.bench_clicks import (
    ROUNDING_LOGIT,
    Clicks,
    check_answers,
    first_result,
    percentiles,
    serve,
)

FIRST_TODAY, FIRST_NEW = 100, 200  # task ids of the first-click images of each path


def add_arguments(parser: Any) -> None:
    """Add the options of the serving comparison to `bench backend`."""
    parser.add_argument(
        "--serving",
        action="store_true",
        help="compare today's path with prefetch + click batches (first click, concurrency, "
        "overload) instead of the plain runs",
    )
    parser.add_argument("--think-s", type=float, default=5.0, help="open-to-first-click time")
    parser.add_argument("--first-tasks", type=int, default=3, help="tasks opened per path")
    parser.add_argument("--overload-clients", type=int, default=16)
    parser.add_argument("--overload-bound", type=int, default=3, help="clicks that may wait")
    parser.add_argument(
        "--batch-max-size",
        type=int,
        default=0,
        help="clicks per decoder call on the new path (0: by device, as UNSAMV2_BATCH_MAX_SIZE)",
    )


def _app(root: Path, args: argparse.Namespace, name: str, env: dict[str, str]) -> tuple[Any, Any]:
    from labeling_pipeline.store import Store
    from ml_backend.click_batcher import serving_door
    from ml_backend.label_studio.app import create_app
    from ml_backend.runtime import ModelRuntime
    from ml_backend.settings import Settings

    settings = Settings.from_env(
        {
            "UNSAMV2_DATA_DIR": str(root / name),
            "UNSAMV2_MODEL": args.config,
            "UNSAMV2_CHECKPOINT": str(root / "random.pt"),
            "UNSAMV2_LOCAL_FILES_ROOT": str(root),
            **env,
        }
    )
    store = Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(settings.pipeline, store=store, poll_s=0, door=serving_door(settings))
    runtime.scoped.ttl_s = settings.model_poll_s
    runtime.refresh()
    return create_app(settings, runtime=runtime, store=store, start_runtime=False), settings


def _prepare(root: Path, args: argparse.Namespace) -> tuple[int, int]:
    import torch
    from PIL import Image

    from core_model.build import build_model
    from core_model.checkpoint import save_official_checkpoint
    from ml_backend.cli.bench_images import bench_image

    width, height = (int(v) for v in args.size.lower().split("x"))
    tasks = [*range(args.annotators)]
    tasks += [base + i for base in (FIRST_TODAY, FIRST_NEW) for i in range(args.first_tasks)]
    for task_id in tasks:
        Image.fromarray(bench_image(width, height, seed=task_id)).save(root / f"img{task_id}.png")
    torch.manual_seed(0)
    save_official_checkpoint(build_model(args.config), root / "random.pt")
    return width, height


def _open_task(clicks: Clicks, session: Any, task_id: int) -> None:
    from ml_backend.cli.bench_clicks import click_body

    body = click_body(task_id, 50.0, 50.0, clicks.config, clicks.size, "open")
    del body["params"]
    session.post(f"{clicks.url}/predict", json=body, timeout=120).raise_for_status()


def _first_clicks(args: argparse.Namespace, paths: dict[str, Clicks]) -> dict[str, list[float]]:
    import requests

    times: dict[str, list[float]] = {name: [] for name in paths}
    bases = {"today": FIRST_TODAY, "new": FIRST_NEW}
    with requests.Session() as session:
        for i in range(args.first_tasks):
            for name, clicks in paths.items():
                _open_task(clicks, session, bases[name] + i)
                time.sleep(args.think_s)
                times[name].append(clicks.click(session, bases[name] + i, 0, "first"))
    return times


def _overload(args: argparse.Namespace, clicks: Clicks, runtime: Any) -> dict[str, Any]:
    """Many clients against a small click bound: 200 (checked later) or 503 + Retry-After."""
    import requests

    from ml_backend.cli.bench_clicks import click_body

    runtime.door.clicks.max_queued = args.overload_bound
    statuses: dict[str, int] = {}
    missing_retry_after = 0

    def client(number: int) -> None:
        nonlocal missing_retry_after
        task_id = number % args.annotators
        with requests.Session() as session:
            for index in range(args.clicks):
                x, y = clicks.plans[task_id][index]
                body = click_body(task_id, x, y, clicks.config, clicks.size, f"a{task_id}-{index}")
                reply = session.post(f"{clicks.url}/predict", json=body, timeout=120)
                statuses[str(reply.status_code)] = statuses.get(str(reply.status_code), 0) + 1
                if reply.status_code == 200:
                    answers = clicks.answers.setdefault("overload", {})
                    answers[(task_id, index)] = first_result(reply)
                elif reply.status_code == 503 and "Retry-After" not in reply.headers:
                    missing_retry_after += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(args.overload_clients) as pool:
        list(pool.map(client, range(args.overload_clients)))
    wall = time.perf_counter() - started
    other = sum(n for status, n in statuses.items() if status not in ("200", "503"))
    return {
        "statuses": statuses,
        "answered_per_s": statuses.get("200", 0) / wall,
        "errors_other_than_503": other + missing_retry_after,
    }


def _mismatches(
    app: Any, runtime: Any, clicks: Clicks, phase: str, size: Any, rounding: dict[str, int]
) -> int:
    """Answers of `phase` that differ from the predictor's mask (missing answers not counted).

    Answers that differ only by float rounding are counted in `rounding` (see `check_answers`).
    """
    answers = clicks.answers.get(phase, {})
    plans = {task: clicks.plans[task] for task, _ in answers}
    planned = sum(len(p) for p in plans.values())
    wrong = check_answers(app, runtime, plans, answers, size, rounding=rounding)
    return wrong - (planned - len(answers))


def run_serving_bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Run the three comparisons; return the JSON-ready report."""
    import requests

    from ml_backend.label_studio.label_config import shipped_config

    size = _prepare(root, args)
    apps = {
        "today": _app(
            root, args, "today", {"UNSAMV2_PREFETCH_WORKERS": "0", "UNSAMV2_BATCH_CLICKS": "no"}
        ),
        "new": _app(root, args, "new", {"UNSAMV2_BATCH_MAX_SIZE": str(args.batch_max_size)}),
    }
    rng = np.random.default_rng(0)
    tasks = [*range(args.annotators), *range(FIRST_TODAY, FIRST_TODAY + args.first_tasks)]
    tasks += [*range(FIRST_NEW, FIRST_NEW + args.first_tasks)]
    plans = {
        t: [(float(rng.uniform(5, 95)), float(rng.uniform(5, 95))) for _ in range(args.clicks)]
        for t in tasks
    }
    servers, paths = [], {}
    for name, (app, settings) in apps.items():
        server, port = serve(app, settings)
        servers.append(server)
        paths[name] = Clicks(f"http://127.0.0.1:{port}", plans, shipped_config(), size)
    first = _first_clicks(args, paths)
    for clicks in paths.values():
        with requests.Session() as session:
            for task_id in range(args.annotators):
                clicks.click(session, task_id, 0, "warm")
    concurrent: dict[str, list[float]] = {name: [] for name in paths}
    walls = dict.fromkeys(paths, 0.0)
    for _ in range(2):
        for name, clicks in paths.items():
            times, wall = clicks.concurrent(args.annotators, args.clicks, "calm")
            concurrent[name] += times
            walls[name] += wall
    runtimes = {name: app.extensions["unsamv2"].runtime for name, (app, _) in apps.items()}
    overload = _overload(args, paths["new"], runtimes["new"])
    for server in servers:
        server.close()
    report: dict[str, Any] = {"think_s": args.think_s, "first_click": {}, "concurrent": {}}
    for name, clicks in paths.items():
        app, runtime = apps[name][0], runtimes[name]
        report["first_click"][name] = percentiles(first[name])
        report["concurrent"][name] = {
            **percentiles(concurrent[name]),
            "clicks_per_s": len(concurrent[name]) / walls[name],
        }
        report[f"{name}_failed_requests"] = [
            f for phase in ("first", "calm") for f in clicks.failures.get(phase, [])
        ]
        rounding: dict[str, int] = {}
        report[f"{name}_mismatches"] = sum(
            _mismatches(app, runtime, clicks, phase, size, rounding) for phase in ("first", "calm")
        )
        report[f"{name}_rounding"] = rounding
    rounding = {}
    overload["mismatches"] = _mismatches(
        apps["new"][0], runtimes["new"], paths["new"], "overload", size, rounding
    )
    overload["rounding"] = rounding
    report["overload"] = overload
    return report


def serving_ok(report: dict[str, Any]) -> bool:
    """True when every answer was right and overload gave only 200 and 503 + Retry-After."""
    return (
        report["today_mismatches"] == report["new_mismatches"] == 0
        and not report["today_failed_requests"]
        and not report["new_failed_requests"]
        and report["overload"]["mismatches"] == 0
        and report["overload"]["errors_other_than_503"] == 0
    )


def print_serving(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Print the comparison with new/today ratios."""
    first, conc, over = report["first_click"], report["concurrent"], report["overload"]
    print(
        f"bench backend --serving: model {args.config} (random weights), images {args.size}, "
        f"HTTP on 127.0.0.1, today's path vs prefetch + click batches"
    )
    print(
        f"  first click {args.think_s:g} s after opening a task ({args.first_tasks} tasks): "
        f"today p50 {first['today']['p50_ms']:.0f} ms, new p50 {first['new']['p50_ms']:.0f} ms "
        f"(new/today {first['new']['p50_ms'] / first['today']['p50_ms']:.3f}x), new p95 "
        f"{first['new']['p95_ms']:.0f} ms"
    )
    ratio = conc["new"]["clicks_per_s"] / conc["today"]["clicks_per_s"]
    print(
        f"  {args.annotators} annotators: today {conc['today']['clicks_per_s']:.1f} clicks/s "
        f"(p50 {conc['today']['p50_ms']:.0f}, p95 {conc['today']['p95_ms']:.0f} ms), new "
        f"{conc['new']['clicks_per_s']:.1f} clicks/s (p50 {conc['new']['p50_ms']:.0f}, p95 "
        f"{conc['new']['p95_ms']:.0f} ms); throughput new/today {ratio:.2f}x"
    )
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(over["statuses"].items()))
    print(
        f"  overload ({args.overload_clients} clients, click queue bound "
        f"{args.overload_bound}): {statuses}; {over['answered_per_s']:.1f} answers/s; errors "
        f"other than 503 + Retry-After {over['errors_other_than_503']}, mismatched masks "
        f"{over['mismatches']}"
    )
    failures = report["today_failed_requests"] + report["new_failed_requests"]
    print(
        f"  failed requests {len(failures)}, mismatched answers today "
        f"{report['today_mismatches']}, new {report['new_mismatches']}"
    )
    for name, rounding in (
        ("today", report["today_rounding"]),
        ("new", report["new_rounding"]),
        ("overload", over["rounding"]),
    ):
        if rounding:
            print(
                f"  {name}: {rounding['answers']} answers differ from the one-click reference in "
                f"{rounding['pixels']} pixels within {ROUNDING_LOGIT:g} of the threshold "
                f"(rounding of a click decoded on one thread)"
            )
    for failure in failures[:5]:
        print(f"  failed: {failure}")
