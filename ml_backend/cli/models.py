"""`unsamv2 models`: the model versions of every lineage and their transitions.

- `list [--project P]`: versions newest first with scope, status (current, published, rejected,
  retired), the held-out gate metrics and the parent;
- `show VERSION`: its training report (gate verdict, held-out metrics, charts' files);
- `promote VERSION`: make it its scope's current version (also a rejected one);
- `rollback --project P`: retire the scope's current version, serve the previous published one
  (none left: the scope falls back to global, then to the base checkpoint);
- `prune --keep N`: delete all but the current and the N newest versions of each scope;
- `cleanup`: remove staging folders of killed runs and folders no version row names;
- `export VERSION OUT`: write a version as an official UnSAMv2 checkpoint.

P is a scope (`global`, `ls:<Label Studio project id>`, `project:<id>`) or a project's id or
name. Each transition is one database transaction; the backend picks it up at its next poll.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register `models`."""
    models = subparsers.add_parser(
        "models",
        help="model versions per project: list, show, promote, rollback, prune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="versions, newest first (* = current of its scope)")
    listing.add_argument("--project", help="only this scope (global, ls:<id>, project:<id>, name)")
    listing.set_defaults(run=run_list)
    show = sub.add_parser("show", help="print a version's training report")
    show.add_argument("name", help="version name")
    show.set_defaults(run=run_show)
    promote = sub.add_parser("promote", help="make a version its scope's current one")
    promote.add_argument("name", help="version name")
    promote.set_defaults(run=run_promote)
    rollback = sub.add_parser("rollback", help="serve the scope's previous published version")
    rollback.add_argument("--project", required=True, help="scope or project")
    rollback.set_defaults(run=run_rollback)
    prune = sub.add_parser("prune", help="delete old versions (current ones always stay)")
    prune.add_argument("--keep", type=int, required=True, help="versions kept per scope")
    prune.set_defaults(run=run_prune)
    cleanup = sub.add_parser("cleanup", help="remove folders left by killed runs")
    cleanup.add_argument(
        "--older-than", type=float, default=3600.0, metavar="S", help="age in seconds (3600)"
    )
    cleanup.set_defaults(run=run_cleanup)
    export = sub.add_parser("export", help="write a version as an official UnSAMv2 checkpoint")
    export.add_argument("name", help="version name (or 'current': global's)")
    export.add_argument("out", type=Path)
    export.set_defaults(run=run_export)


def _settings_and_store() -> tuple[Any, Any]:
    from labeling_pipeline.store import Store
    from ml_backend.settings import Settings

    settings = Settings.from_env()
    return settings.pipeline, Store(settings.pipeline.resolved_database_url)


def resolve_scope(session: Any, text: str) -> str:
    """Return the scope `text` names: a scope as such, else the lineage of a project."""
    from labeling_pipeline.store.repository import find_project
    from labeling_pipeline.store.versions import check_scope, project_scope

    if text.strip() == "global" or text.strip().startswith(("ls:", "project:")):
        return check_scope(text)
    return project_scope(find_project(session, text))


def _metric(gate: dict[str, Any], side: str, name: str) -> str:
    scores = gate.get(side) or {}
    value = (scores.get("metrics") or {}).get(name)
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _row(version: Any, current: dict[int, str], parents: dict[int, str]) -> str:
    gate = version.gate or {}
    verdict = (gate.get("verdict") or {}).get("decision", "-")
    status = "current" if version.id in current else version.status
    mark = "*" if version.id in current else " "
    parent = parents.get(version.parent_id, "base") if version.parent_id else "base"
    return (
        f"{mark} {version.name:<24} {version.scope:<14} {status:<9} {verdict:<9} "
        f"{_metric(gate, 'candidate', 'annotator_iou'):>7} "
        f"{_metric(gate, 'current', 'annotator_iou'):>7} "
        f"{_metric(gate, 'candidate', 'NoC90'):>6} {parent:<24} {version.created_at:%Y-%m-%d %H:%M}"
    )


def run_list(args: argparse.Namespace) -> int:
    """Print the versions with scope, status, gate metrics and parent."""
    from labeling_pipeline.store.versions import current_by_scope, list_versions

    _, store = _settings_and_store()
    with store.session() as session:
        scope = resolve_scope(session, args.project) if args.project else None
        versions = list_versions(session, scope=scope)
        current = current_by_scope(session)
        names = {v.id: v.name for v in list_versions(session)}
        if not versions:
            where = f" for {scope}" if scope else ""
            print(
                f"no model versions published yet{where} (`unsamv2 train --project P` makes "
                "one; until then each project is served global's version or the base checkpoint)"
            )
            return 0
        print(
            f"  {'version':<24} {'scope':<14} {'status':<9} {'gate':<9} {'annIoU':>7} "
            f"{'vs cur':>7} {'NoC90':>6} {'parent':<24} created"
        )
        for version in versions:
            print(_row(version, current, names))
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print the version's report (or its metadata when it has none)."""
    import json

    from labeling_pipeline.store.versions import get_version

    _, store = _settings_and_store()
    with store.session() as session:
        version = get_version(session, args.name)
        folder, gate, metadata = Path(version.path), dict(version.gate), dict(version.metadata_)
    report = folder / "report.md"
    if report.is_file():
        print(report.read_text(), end="")
        print(f"\n(files: {folder})")
    else:
        print(json.dumps({"gate": gate, "metadata": metadata}, indent=2, default=str))
    return 0


def run_promote(args: argparse.Namespace) -> int:
    """Make a version its scope's current one."""
    from labeling_pipeline.store.versions import promote

    _, store = _settings_and_store()
    with store.session() as session:
        version = promote(session, args.name)
        print(f"{version.name} is now the current version of {version.scope}")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    """Retire the scope's current version and serve its previous published one."""
    from labeling_pipeline.store.versions import rollback

    _, store = _settings_and_store()
    with store.session() as session:
        scope = resolve_scope(session, args.project)
        result = rollback(session, scope)
        now = result.current.name if result.current else "global's version or the base model"
        print(f"{scope}: {result.retired.name} retired; now serving {now}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    """Delete old versions (rows first, in one transaction; then their folders)."""
    from labeling_pipeline.model_files.lineage import remove_folders
    from labeling_pipeline.store.versions import prune

    settings, store = _settings_and_store()
    with store.session() as session:
        removed = [(v.name, v.path) for v in prune(session, args.keep)]
    remove_folders(settings.models_dir, [path for _, path in removed])
    print(f"pruned {len(removed)} version(s)" + "".join(f"\n  {n}" for n, _ in removed))
    return 0


def run_cleanup(args: argparse.Namespace) -> int:
    """Remove staging folders of killed runs and unreferenced version folders."""
    from labeling_pipeline.model_files.lineage import cleanup
    from labeling_pipeline.model_files.registry import ModelRegistry

    settings, store = _settings_and_store()
    count = cleanup(ModelRegistry(store, settings.models_dir), older_than_s=args.older_than)
    print(f"removed {count} leftover folder(s) from {settings.models_dir}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Build a version and save it in the official layout."""
    from core_model.build import build_model
    from core_model.checkpoint import save_official_checkpoint
    from labeling_pipeline.model_files.registry import CHECKPOINT_FILE
    from labeling_pipeline.store.versions import GLOBAL_SCOPE, current_version, get_version

    settings, store = _settings_and_store()
    with store.session() as session:
        if args.name == "current":
            version = current_version(session, GLOBAL_SCOPE)
            if version is None:
                print("global has no current version; name one (`unsamv2 models list`)")
                return 1
        else:
            version = get_version(session, args.name)
        model_name, checkpoint = version.model, Path(version.path) / CHECKPOINT_FILE
    model = build_model(model_name, checkpoint, device=settings.device)
    save_official_checkpoint(model, args.out)
    print(f"{version.name}: official checkpoint written to {args.out}")
    return 0
