"""The store on SQLite (always) and PostgreSQL (CI): schema, idempotent writes, pointer."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from labeling_pipeline.store import MaskRecord, NotFoundError, Store, StoreError
from labeling_pipeline.store.jobs import (
    create_job,
    get_job,
    record_pseudo_label_image,
    recount_run_progress,
    start_job,
)
from labeling_pipeline.store.models import Base, ModelVersion
from labeling_pipeline.store.repository import (
    add_image,
    count_human_masks,
    delete_human_masks,
    find_project,
    get_or_create_project,
    replace_human_masks,
)
from labeling_pipeline.store.versions import add_version, current_version


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        yield Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:10]}"  # a fresh database per test
    admin = create_engine(
        base.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {schema}"))
    url = base.rsplit("/", 1)[0] + f"/{schema}"
    yield Store(url)
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {schema} WITH (FORCE)"))


def masks(n: int, label: str = "Car") -> list[MaskRecord]:
    rle = {"size": [4, 5], "counts": "04000"}
    return [MaskRecord(f"r{i}", label, rle, 5, 4, 3) for i in range(n)]


def test_migrations_create_exactly_the_model_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    store.migrate()  # a second upgrade is a no-op


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'wal.sqlite3'}")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_projects_and_images_are_idempotent(store: Store) -> None:
    with store.session() as s:
        project = get_or_create_project(s, "cars", ls_project_id=7, label_config="<View/>")
        again = get_or_create_project(s, "other name", ls_project_id=7)
        assert again.id == project.id
        a = add_image(s, project.id, sha256="ab" * 32, local_path="/x.png", width=5, height=4)
        b = add_image(
            s, project.id, sha256="ab" * 32, local_path="/y.png", width=5, height=4, ls_task_id=3
        )
        assert a.id == b.id and b.local_path == "/y.png" and b.ls_task_id == 3
    with store.session() as s:
        assert find_project(s, "ls:7").name == "cars"
        assert find_project(s, str(project.id)).id == project.id
        with pytest.raises(NotFoundError, match="no project"):
            find_project(s, "bikes")


def test_human_masks_are_replaced_per_annotation(store: Store) -> None:
    with store.session() as s:
        pid = get_or_create_project(s, "p").id
        assert replace_human_masks(s, pid, ls_task_id=1, annotation_id=10, masks=masks(3)) == 3
    with store.session() as s:  # ANNOTATION_UPDATED: replace, never duplicate
        replace_human_masks(s, pid, ls_task_id=1, annotation_id=10, masks=masks(2, "Bus"))
        replace_human_masks(s, pid, ls_task_id=2, annotation_id=11, masks=masks(1))
    with store.session() as s:
        assert count_human_masks(s, pid) == 3
        assert delete_human_masks(s, pid, [10]) == 2
        assert count_human_masks(s, pid) == 1
        future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
        assert count_human_masks(s, pid, since=future) == 0


def test_job_progress_is_recounted_and_finishes_once(store: Store) -> None:
    with store.session() as s:
        pid = get_or_create_project(s, "p").id
        ids = [
            add_image(s, pid, sha256=f"{i:064x}", local_path=f"/{i}", width=1, height=1).id
            for i in range(3)
        ]
        job = create_job(s, "pseudo_label", project_id=pid, total=3)
        from labeling_pipeline.store.models import PseudoLabelRun

        run = PseudoLabelRun(project_id=pid, job_id=job.id, features="color", output_dir="/o")
        s.add(run)
        s.flush()
        job_id, run_id = job.id, run.id
    for image_id in [ids[0], ids[0], ids[1]]:  # a redelivered image is recorded twice
        with store.session() as s:
            start_job(s, job_id)
            record_pseudo_label_image(s, run_id, image_id, status="done", json_path="/j")
            recount_run_progress(s, job_id, run_id)
    with store.session() as s:
        job = get_job(s, job_id)
        assert (job.status, job.progress_done, job.attempts) == ("running", 2, 3)
        record_pseudo_label_image(s, run_id, ids[2], status="failed", json_path=None, error="x")
        job = recount_run_progress(s, job_id, run_id)
        assert job.status == "done" and job.result == {"images_done": 2, "images_failed": 1}
        assert job.finished_at is not None and job.finished_at.tzinfo is not None


def test_model_pointer_moves_with_the_new_version(store: Store) -> None:
    with store.session() as s:
        assert current_version(s, "global") is None
        first = add_version(
            s,
            ModelVersion(name="v1", path="/m/v1", model="small", checkpoint_sha256="a" * 64),
            publish=True,
        )
    with store.session() as s:
        assert current_version(s, "global").name == "v1"
        add_version(
            s,
            ModelVersion(name="v2", path="/m/v2", model="small", checkpoint_sha256="b" * 64),
            publish=True,
        )
    with store.session() as s:
        assert current_version(s, "global").name == "v2"
        assert first.id is not None


def test_unreachable_database_gives_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot open database"):
        Store("postgresql://nobody@127.0.0.1:1/none")


def _alembic(store: Store, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from labeling_pipeline.store.engine import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def test_the_lineage_migration_reverts_and_reapplies_with_data(store: Store) -> None:
    with store.session() as s:
        add_version(
            s,
            ModelVersion(name="g1", path="/m/g1", model="small", checkpoint_sha256="a" * 64),
            publish=True,
        )
        add_version(
            s,
            ModelVersion(
                name="p1", path="/m/p1", model="small", checkpoint_sha256="b" * 64, scope="ls:7"
            ),
            publish=True,
        )
    _alembic(store, "downgrade", "0003")
    with store.engine.connect() as conn:
        pointers = conn.execute(text("SELECT scope FROM model_pointers")).scalars().all()
        columns = conn.execute(text("SELECT * FROM model_versions")).keys()
        names = conn.execute(text("SELECT name FROM model_versions ORDER BY name")).scalars().all()
    assert pointers == ["default"]  # global's pointer is the old default; ls:7 loses its own
    assert "scope" not in columns and "gate" not in columns
    if not store.is_sqlite:  # SQLite cannot drop a column holding a reference; it stays unused
        assert "parent_id" not in columns
    assert names == ["g1", "p1"]  # no version row is lost
    _alembic(store, "upgrade", "head")
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    with store.session() as s:
        assert current_version(s, "global").name == "g1"


def test_every_migration_reverts_to_an_empty_database_and_back(store: Store) -> None:
    _alembic(store, "downgrade", "base")
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    added = {entry[1].name for entry in diff if entry[0] == "add_table"}
    assert added == set(Base.metadata.tables)  # every table went (alembic_version aside)
    assert {entry[0] for entry in diff} <= {"add_table", "add_index"}
    _alembic(store, "upgrade", "head")
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
