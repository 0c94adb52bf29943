"""Long-running services: `serve` (HTTP backend), `worker`, `beat`, and `up` (all three).

`serve` runs the backend on waitress (see `ml_backend.http_server`).

`up` supervises the three as child processes in their own process groups: Ctrl-C (or SIGTERM)
stops them with SIGTERM, waits, and kills what is left; if one dies, the others are stopped too.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 20.0


def _port(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is an integer from 1 to 65535, got {raw!r}")
    return int(raw)


def add_parser(subparsers: Any) -> None:
    """Register serve, worker, beat and up."""
    serve = subparsers.add_parser("serve", help="run the HTTP backend (Label Studio protocol)")
    serve.add_argument("--host", help="listen address (default UNSAMV2_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default UNSAMV2_PORT or 9090)")
    serve.set_defaults(run=run_serve)

    worker = subparsers.add_parser("worker", help="run a Celery worker")
    worker.add_argument(
        "--queues",
        default="pseudo_labels,training",
        help="comma-separated queues (pseudo_labels, training)",
    )
    worker.add_argument("--concurrency", type=int, default=1, help="worker processes")
    worker.add_argument("--pool", default="prefork", choices=("prefork", "solo", "threads"))
    worker.set_defaults(run=run_worker)

    beat = subparsers.add_parser("beat", help="run the periodic scheduler (retraining checks)")
    beat.set_defaults(run=run_beat)

    ping = subparsers.add_parser("ping", help="exit 0 if a worker answers (health checks)")
    ping.add_argument("--timeout", type=float, default=5.0)
    ping.set_defaults(run=run_ping)

    up = subparsers.add_parser("up", help="run backend, worker and beat together (Ctrl-C stops)")
    up.add_argument("--host", help="backend listen address (default UNSAMV2_HOST or 127.0.0.1)")
    up.add_argument("--port", type=_port, help="backend port (default UNSAMV2_PORT or 9090)")
    up.add_argument("--concurrency", type=int, default=1, help="worker processes")
    up.set_defaults(run=run_up)


def backend_address(args: argparse.Namespace, settings: Any) -> tuple[str, int]:
    """(host, port) of the backend: the command line's, else the settings'."""
    return args.host or settings.host, args.port or settings.port


def run_serve(args: argparse.Namespace) -> int:
    """Serve the backend with waitress (one process, request threads; see `http_server`)."""
    from ml_backend.http_server import create_http_server
    from ml_backend.label_studio.app import create_app
    from ml_backend.settings import Settings

    settings = Settings.from_env()
    host, port = backend_address(args, settings)
    server = create_http_server(create_app(settings), settings, host, port)
    # SIGTERM (from `unsamv2 up`, Docker) leaves the loop like Ctrl-C: waitress closes the sockets
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(0))
    logger.info(
        "backend on http://%s:%s (%d request threads)",
        host,
        server.effective_port,
        settings.http_threads,
    )
    server.run()
    return 0


def _celery_app() -> Any:
    from labeling_pipeline.worker.app import create_celery_app
    from ml_backend.settings import Settings

    return create_celery_app(Settings.from_env().pipeline)


def run_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker on the given queues."""
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    _celery_app().worker_main(
        [
            "worker",
            "--loglevel",
            "INFO",
            "--queues",
            ",".join(queues),
            "--concurrency",
            str(args.concurrency),
            "--pool",
            args.pool,
            "--hostname",
            f"{'+'.join(queues)}@%h",
            "--without-mingle",
            "--without-gossip",
        ]
    )
    return 0


def run_beat(args: argparse.Namespace) -> int:
    """Run Celery beat."""
    _celery_app().start(["beat", "--loglevel", "INFO"])
    return 0


def run_ping(args: argparse.Namespace) -> int:
    """Broadcast a ping; 0 if at least one worker replied."""
    replies = _celery_app().control.ping(timeout=args.timeout)
    for reply in replies:
        print(*reply)
    return 0 if replies else 1


def run_up(args: argparse.Namespace) -> int:
    """Start backend, worker and beat; stop them all on Ctrl-C or when one exits."""
    from labeling_pipeline.store import Store
    from ml_backend.settings import Settings

    settings = Settings.from_env()
    settings.pipeline.data_dir.mkdir(parents=True, exist_ok=True)
    Store(settings.pipeline.resolved_database_url).dispose()  # migrate once, before the children
    base = [sys.executable, "-m", "ml_backend.cli", *(["--verbose"] if args.verbose else [])]
    host, port = backend_address(args, settings)
    commands = {
        "backend": [*base, "serve", "--host", host, "--port", str(port)],
        "worker": [*base, "worker", "--concurrency", str(args.concurrency)],
        "beat": [*base, "beat"],
    }
    children = {
        name: subprocess.Popen(cmd, start_new_session=True) for name, cmd in commands.items()
    }
    print(
        f"unsamv2 up: backend on http://{host}:{port}, data in "
        f"{settings.pipeline.data_dir.resolve()} (Ctrl-C stops)",
        flush=True,
    )
    stopping: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda s, _f: stopping.append(s))
    exited = None
    while not stopping and exited is None:
        exited = next((n for n, p in children.items() if p.poll() is not None), None)
        time.sleep(0.2)
    if exited is not None:
        print(f"unsamv2 up: {exited} exited ({children[exited].returncode}); stopping", flush=True)
    _stop_all(children)
    return 0 if stopping and exited is None else 1


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in children.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for name, process in children.items():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"unsamv2 up: {name} did not stop in time; killing it", flush=True)
            process.kill()
            process.wait()
