"""`unsamv2 playground IMAGE...`: the backend on this machine with the granularity playground.

The backend (the same app as `unsamv2 serve`, settings from the environment) listens on
127.0.0.1 unless ``--host`` says otherwise; the given images are offered in the playground's
picker besides the files of ``UNSAMV2_PLAYGROUND_DIR``. The playground's URL is printed once the
server listens. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Register `playground`."""
    parser = subparsers.add_parser(
        "playground",
        help="serve the backend with the granularity playground and print its URL",
        description="Start the backend (settings from the environment) with IMAGE... offered "
        "in the playground's picker, and print the playground's URL.",
    )
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default UNSAMV2_PORT or 9090; 0: any)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve the backend and the playground until interrupted."""
    from ml_backend.http_server import create_http_server
    from ml_backend.label_studio.app import create_app
    from ml_backend.playground.routes import offer_files
    from ml_backend.settings import Settings

    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        raise ValueError(f"not a file: {', '.join(missing)}")
    settings = Settings.from_env()
    port = settings.port if args.port is None else args.port
    app = create_app(settings)
    offer_files(app, [path.resolve() for path in args.images])
    server = create_http_server(app, settings, args.host, port)
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(0))
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"playground on http://{host}:{server.effective_port}/playground", flush=True)
    if settings.basic_auth is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("the playground listens on %s without basic auth", args.host)
    server.run()
    return 0
