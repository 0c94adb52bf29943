"""Model lineages in the store: scoped pointers with fallback, transitions, prune, migration."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from labeling_pipeline.model_files.lineage import cleanup, commit_version, remove_folders
from labeling_pipeline.model_files.registry import ModelRegistry
from labeling_pipeline.store import Store
from labeling_pipeline.store.engine import MIGRATIONS_DIR
from labeling_pipeline.store.models import ModelPointer, ModelVersion, Project
from labeling_pipeline.store.versions import (
    LineageError,
    add_version,
    check_scope,
    current_version,
    lineage_base_sha256,
    list_versions,
    project_scope,
    promote,
    prune,
    retire,
    rollback,
    serving_version,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")


def version(name: str, scope: str, **metadata) -> ModelVersion:
    return ModelVersion(
        name=name,
        path=f"/m/{name}",
        model="test-tiny",
        checkpoint_sha256="0" * 64,
        scope=scope,
        metadata_=metadata,
    )


def test_scopes_are_checked_and_projects_map_to_their_label_studio_scope() -> None:
    assert check_scope(" ls:3 ") == "ls:3" and check_scope("global") == "global"
    for bad in ("ls:", "ls:0", "project:x", "default", "ls:3;drop", ""):
        with pytest.raises(LineageError):
            check_scope(bad)
    assert project_scope(Project(id=5, name="a", ls_project_id=9)) == "ls:9"
    assert project_scope(Project(id=5, name="a")) == "project:5"


def test_each_scope_serves_its_own_version_then_global_then_nothing(store: Store) -> None:
    with store.session() as s:
        assert serving_version(s, "ls:1") is None
        add_version(s, version("g1", "global"), publish=True)
        a1 = add_version(s, version("a1", "ls:1"), publish=True)
    with store.session() as s:
        assert serving_version(s, "ls:1").name == "a1"
        assert serving_version(s, "ls:2").name == "g1"  # B untouched by A's publication
        assert a1.parent_id == s.scalar(text("select id from model_versions where name='g1'"))
        rejected = add_version(s, version("a2", "ls:1"), publish=False)
        assert rejected.status == "rejected"
    with store.session() as s:
        assert serving_version(s, "ls:1").name == "a1"
        assert [v.name for v in list_versions(s, scope="ls:1")] == ["a2", "a1"]
        assert [v.name for v in list_versions(s, status="rejected")] == ["a2"]


def test_promote_rollback_retire(store: Store) -> None:
    with store.session() as s:
        for name in ("a1", "a2"):
            add_version(s, version(name, "ls:1"), publish=True)
        add_version(s, version("a3", "ls:1"), publish=False)
    with store.session() as s:
        promote(s, "a3")
    with store.session() as s:
        assert current_version(s, "ls:1").name == "a3"
        back = rollback(s, "ls:1")
        assert (back.retired.name, back.current.name) == ("a3", "a2")
    with store.session() as s:
        assert [v.status for v in list_versions(s, scope="ls:1")] == [
            "retired",
            "published",
            "published",
        ]
        with pytest.raises(LineageError, match="rollback"):
            retire(s, "a2")
        rollback(s, "ls:1")
        last = rollback(s, "ls:1")  # no earlier version: the scope falls back
        assert last.current is None and current_version(s, "ls:1") is None
        with pytest.raises(LineageError, match="nothing to roll back"):
            rollback(s, "ls:1")
        with pytest.raises(LineageError, match="no model version"):
            promote(s, "nope")


def test_a_failed_transition_changes_nothing(store: Store) -> None:
    with store.session() as s:
        add_version(s, version("a1", "ls:1"), publish=True)
        add_version(s, version("a2", "ls:1"), publish=True)

    def crash_inside_the_transaction() -> None:
        with store.session() as s:
            rollback(s, "ls:1")
            raise RuntimeError("crash before the commit")

    with pytest.raises(RuntimeError):
        crash_inside_the_transaction()
    with store.session() as s:
        assert current_version(s, "ls:1").name == "a2"
        assert s.get(ModelVersion, current_version(s, "ls:1").id).status == "published"


def test_prune_keeps_current_and_the_newest_per_scope(store: Store) -> None:
    with store.session() as s:
        for i in range(4):
            add_version(s, version(f"a{i}", "ls:1"), publish=i == 0)
        add_version(s, version("b0", "ls:2"), publish=False)
    with store.session() as s:
        removed = prune(s, keep=1)
        assert sorted(v.name for v in removed) == ["a1", "a2"]
    with store.session() as s:
        assert sorted(v.name for v in list_versions(s)) == ["a0", "a3", "b0"]
        assert current_version(s, "ls:1").name == "a0"


def test_the_lineage_base_is_the_oldest_recorded_sha(store: Store) -> None:
    with store.session() as s:
        assert lineage_base_sha256(s, "ls:1") is None
        add_version(s, version("a1", "ls:1", base_checkpoint_sha256="aa"), publish=True)
        add_version(s, version("a2", "ls:1", base_checkpoint_sha256="bb"), publish=True)
        assert lineage_base_sha256(s, "ls:1") == "aa"


def test_commit_and_cleanup_of_version_folders(store: Store, tmp_path: Path) -> None:
    registry = ModelRegistry(store, tmp_path / "models")
    with registry.staging() as staging:
        (staging / "model.pt").write_bytes(b"weights")
        report = tmp_path / "report.md"
        report.write_text("# report")
        kept = commit_version(
            registry,
            staging,
            model="test-tiny",
            scope="ls:1",
            publish=False,
            metadata={},
            gate={"verdict": {"decision": "reject"}},
            report_files=[report],
            report_dir=tmp_path,
        )
    folder = Path(kept.path)
    assert (folder / "report.md").is_file() and (folder / "metadata.json").is_file()
    orphan = registry.models_dir / "v-orphan"
    orphan.mkdir()
    (orphan / "metadata.json").write_text("{}")
    leftover = registry.models_dir / ".staging-dead"
    leftover.mkdir()
    assert cleanup(registry, older_than_s=0) == 2
    assert folder.is_dir() and not orphan.exists() and not leftover.exists()
    assert remove_folders(registry.models_dir, [str(folder), "/etc"]) == 1
    assert not folder.exists()


def test_migration_turns_the_default_pointer_into_global(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    old = Store(url, migrate=False)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.execute(
            text(
                "insert into model_versions (id, name, path, model, checkpoint_sha256, metadata,"
                " created_at) values (1, 'v1', '/m/v1', 'small', 'x', '{}', '2026-01-01')"
            )
        )
        connection.execute(
            text(
                "insert into model_pointers (scope, model_version_id, updated_at)"
                " values ('default', 1, '2026-01-01')"
            )
        )
    store = Store(url)
    with store.session() as s:
        assert [p.scope for p in s.query(ModelPointer)] == ["global"]
        v1 = serving_version(s, "ls:7")
        assert v1 is not None and (v1.scope, v1.status, v1.gate) == ("global", "published", {})
