"""`unsamv2 ls-config` (print a labeling config) and `unsamv2 ls-connect` (connect a project)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register `ls-config` and `ls-connect`."""
    config = subparsers.add_parser("ls-config", help="print a Label Studio labeling config")
    config.add_argument(
        "--labels", default="Object", help="comma-separated labels, e.g. Car,Person"
    )
    config.add_argument(
        "--levels",
        type=parse_levels,
        default="0.2,0.5,1.0",
        help="comma-separated granularity levels in [0.1, 1.0]",
    )
    config.set_defaults(run=run_config)

    connect = subparsers.add_parser(
        "ls-connect", help="connect this backend to a Label Studio project (with webhook secret)"
    )
    connect.add_argument("--ls-project", type=int, required=True, help="Label Studio project id")
    connect.add_argument(
        "--backend-url", required=True, help="URL Label Studio uses to reach this backend"
    )
    connect.add_argument("--title", default="UnSAMv2")
    connect.add_argument(
        "--extra-params",
        default="{}",
        help='JSON options, e.g. {"default_granularity": 0.4, "preannotate": true}',
    )
    connect.set_defaults(run=run_connect)


def parse_levels(text: str) -> list[float]:
    """Parse comma-separated granularity levels, e.g. ``0.2,0.5,1.0``."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"levels must be comma-separated numbers, got {text!r}"
        ) from None


def run_config(args: argparse.Namespace) -> int:
    """Print the config."""
    from ml_backend.label_studio.label_config import build_label_config

    print(build_label_config(args.labels.split(","), args.levels), end="")
    return 0


def run_connect(args: argparse.Namespace) -> int:
    """Register the backend on the project and put the webhook secret on its webhook."""
    from labeling_pipeline.label_studio.client import LabelStudioClient
    from ml_backend.label_studio.project_settings import parse_extra_params
    from ml_backend.settings import Settings, SettingsError

    settings = Settings.from_env()
    pipeline = settings.pipeline
    if not pipeline.label_studio_url or not pipeline.label_studio_api_key:
        raise SettingsError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY to connect a project")
    try:
        extra = json.loads(args.extra_params)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"--extra-params is not JSON: {exc}") from None
    parse_extra_params(extra)  # refuse bad options before Label Studio stores them
    client = LabelStudioClient(pipeline.label_studio_url, pipeline.label_studio_api_key)
    url = args.backend_url.rstrip("/")
    body: dict[str, Any] = {
        "url": url,
        "project": args.ls_project,
        "is_interactive": True,
        "title": args.title,
        "extra_params": extra,
    }
    if settings.basic_auth is not None:
        body.update(
            auth_method="BASIC_AUTH",
            basic_auth_user=settings.basic_auth[0],
            basic_auth_pass=settings.basic_auth[1],
        )
    backend = client.request_json("POST", "/api/ml", json=body)
    print(
        f"connected backend {backend.get('id')} ({backend.get('state')}) to project "
        f"{args.ls_project}"
    )
    if settings.webhook_secret is not None:
        hooks = client.get_json("/api/webhooks", project=args.ls_project)
        for hook in hooks if isinstance(hooks, list) else []:
            if str(hook.get("url", "")).rstrip("/") == f"{url}/webhook":
                client.request_json(
                    "PATCH",
                    f"/api/webhooks/{hook['id']}",
                    json={"headers": {"X-UnSAMv2-Secret": settings.webhook_secret}},
                )
                print(f"webhook {hook['id']} now sends the secret header")
    return 0
