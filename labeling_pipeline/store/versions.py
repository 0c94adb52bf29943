"""Model lineages: scoped version queries and transitions, each in the caller's transaction.

A lineage is the sequence of model versions of one scope: ``ls:<id>`` (a Label Studio
project), ``project:<id>`` (a store project without Label Studio) or ``global``. A version's
`status` is "published" (allowed to serve), "rejected" (failed the held-out gate; kept with its
report so it can still be promoted by hand) or "retired" (rolled back or withdrawn). The version
a scope serves is its pointer row (`ModelPointer`); a scope without one falls back to
``global``, then (in the serving process) to the configured base checkpoint. "current" is
therefore not a stored status but "the pointer names it".

Every function here changes rows only inside the session it is given, so one `Store.session()`
block is one atomic transition (the pointer and the statuses move together or not at all).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core_model.errors import UnSAMv2Error
from labeling_pipeline.store.models import ModelPointer, ModelVersion, Project, utcnow

GLOBAL_SCOPE = "global"
STATUSES = ("published", "rejected", "retired")
_SCOPE = re.compile(
    r"^(global|ls:[1-9][0-9]{0,18}|project:[1-9][0-9]{0,18}"
    r"|specialist:[1-9][0-9]{0,18}:[^\s:][^\n]{0,69})$"  # a task specialist's lineage
)


class LineageError(UnSAMv2Error, ValueError):
    """A scope is malformed, or a transition is not allowed (the message says why)."""


def check_scope(text: str) -> str:
    """Return `text` if it names a scope ("global", "ls:<id>", "project:<id>").

    Raises:
        LineageError: anything else.
    """
    scope = text.strip()
    if not _SCOPE.match(scope):
        raise LineageError(
            f"bad scope {text!r}: expected 'global', 'ls:<Label Studio project id>' or "
            "'project:<project id>' (or 'specialist:<project id>:<labels>')"
        )
    return scope


def ls_scope(ls_project_id: int) -> str:
    """Return the scope of a Label Studio project."""
    return check_scope(f"ls:{int(ls_project_id)}")


def serving_scope(ls_project_id: int | None) -> str:
    """Return the scope a Label Studio request is served from (no project id: global)."""
    return ls_scope(ls_project_id) if ls_project_id else GLOBAL_SCOPE


def project_scope(project: Project) -> str:
    """Return the lineage a store project trains: its Label Studio project's, else its own."""
    if project.ls_project_id is not None:
        return ls_scope(project.ls_project_id)
    return check_scope(f"project:{project.id}")


def serving_scopes(scope: str) -> tuple[str, ...]:
    """Return the scopes looked at, in order, for what `scope` serves (itself, then global)."""
    scope = check_scope(scope)
    return (scope,) if scope == GLOBAL_SCOPE else (scope, GLOBAL_SCOPE)


def current_version(session: Session, scope: str) -> ModelVersion | None:
    """Return the version the pointer of `scope` names (no fallback), or None."""
    pointer = session.get(ModelPointer, check_scope(scope))
    return session.get(ModelVersion, pointer.model_version_id) if pointer else None


def serving_version(session: Session, scope: str) -> ModelVersion | None:
    """Return the version `scope` is served: its own current one, else global's, else None."""
    for candidate in serving_scopes(scope):
        version = current_version(session, candidate)
        if version is not None:
            return version
    return None


def current_by_scope(session: Session) -> dict[int, str]:
    """Return {version id: scope} of every version a pointer names."""
    return {p.model_version_id: p.scope for p in session.scalars(select(ModelPointer))}


def list_versions(
    session: Session, *, scope: str | None = None, status: str | None = None
) -> Sequence[ModelVersion]:
    """Return versions, newest first, optionally of one scope and/or status."""
    query = select(ModelVersion).order_by(ModelVersion.id.desc())
    if scope is not None:
        query = query.where(ModelVersion.scope == check_scope(scope))
    if status is not None:
        if status not in STATUSES:
            raise LineageError(f"status must be one of {STATUSES}, got {status!r}")
        query = query.where(ModelVersion.status == status)
    return session.scalars(query).all()


def get_version(session: Session, name: str) -> ModelVersion:
    """Return the version called `name`.

    Raises:
        LineageError: no such version.
    """
    version = session.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if version is None:
        raise LineageError(f"no model version {name!r} (see `unsamv2 models list`)")
    return version


def _point(session: Session, scope: str, version: ModelVersion) -> None:
    pointer = session.get(ModelPointer, scope)
    if pointer is None:
        session.add(ModelPointer(scope=scope, model_version_id=version.id))
    else:
        pointer.model_version_id = version.id
        pointer.updated_at = utcnow()


def add_version(session: Session, version: ModelVersion, *, publish: bool) -> ModelVersion:
    """Insert a complete version of `version.scope`; publish it (move the pointer) or reject it.

    Its parent is the version its scope served before (unless set already).
    """
    scope = check_scope(version.scope or GLOBAL_SCOPE)
    version.scope = scope
    if version.parent_id is None:
        parent = serving_version(session, scope)
        version.parent_id = parent.id if parent is not None else None
    version.status = "published" if publish else "rejected"
    session.add(version)
    session.flush()
    if publish:
        _point(session, scope, version)
    return version


def promote(session: Session, name: str) -> ModelVersion:
    """Make `name` its scope's current version (a rejected or retired one becomes published)."""
    version = get_version(session, name)
    version.status = "published"
    _point(session, version.scope, version)
    return version


@dataclass(frozen=True)
class Rollback:
    """Outcome of `rollback`.

    Attributes:
        retired: The version that was current.
        current: The scope's version now, or None when the scope has no earlier published
            version (it then falls back to global / the base checkpoint).
    """

    retired: ModelVersion
    current: ModelVersion | None


def rollback(session: Session, scope: str) -> Rollback:
    """Retire the scope's current version and point the scope at its previous published one.

    Raises:
        LineageError: the scope has no current version.
    """
    scope = check_scope(scope)
    current = current_version(session, scope)
    if current is None:
        raise LineageError(f"scope {scope} has no current model version; nothing to roll back")
    current.status = "retired"
    previous = session.scalar(
        select(ModelVersion)
        .where(
            ModelVersion.scope == scope,
            ModelVersion.status == "published",
            ModelVersion.id < current.id,
        )
        .order_by(ModelVersion.id.desc())
        .limit(1)
    )
    if previous is None:
        session.execute(delete(ModelPointer).where(ModelPointer.scope == scope))
    else:
        _point(session, scope, previous)
    return Rollback(current, previous)


def retire(session: Session, name: str) -> ModelVersion:
    """Withdraw a version that no scope serves.

    Raises:
        LineageError: it is current (roll its scope back instead).
    """
    version = get_version(session, name)
    if version.id in current_by_scope(session):
        raise LineageError(
            f"{name} is the current version of {version.scope}: "
            f"use `unsamv2 models rollback --project {version.scope}`"
        )
    version.status = "retired"
    return version


def prune(session: Session, keep: int) -> list[ModelVersion]:
    """Delete the rows of old versions: per scope, all but the current one and the `keep` newest.

    Returns the deleted versions (their folders are the caller's to remove after the commit).
    """
    if keep < 0:
        raise LineageError(f"--keep must be >= 0, got {keep}")
    current = current_by_scope(session)
    kept: dict[str, int] = {}
    removed: list[ModelVersion] = []
    for version in list_versions(session):
        if version.id in current:
            continue
        if kept.get(version.scope, 0) < keep:
            kept[version.scope] = kept.get(version.scope, 0) + 1
            continue
        removed.append(version)
    ids = [v.id for v in removed]
    if ids:
        session.execute(
            update(ModelVersion).where(ModelVersion.parent_id.in_(ids)).values(parent_id=None)
        )
    for version in removed:
        session.delete(version)
    session.flush()
    return removed


def version_paths(session: Session) -> set[str]:
    """Return the folder of every version row."""
    return set(session.scalars(select(ModelVersion.path)))


def lineage_base_sha256(session: Session, scope: str) -> str | None:
    """Return the base checkpoint's sha256 recorded by the oldest version of `scope`, if any."""
    for version in reversed(list_versions(session, scope=scope)):
        sha = (version.metadata_ or {}).get("base_checkpoint_sha256")
        if sha:
            return str(sha)
    return None
