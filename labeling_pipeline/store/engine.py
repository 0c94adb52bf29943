"""`Store`: engine, sessions and schema migrations.

SQLite (the default, in the data directory) runs in WAL mode with foreign keys on and a busy
timeout, so the backend, workers and beat of `unsamv2 up` can share it. PostgreSQL is used when
the URL says so (``postgresql://`` selects the psycopg 3 driver). The schema is brought to the
newest Alembic revision when a store is opened; concurrent openers serialise on a lock (a file
lock for SQLite, an advisory lock for PostgreSQL).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core_model.errors import UnSAMv2Error

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 7_312_024  # arbitrary advisory-lock key of this schema


class StoreError(UnSAMv2Error):
    """The database cannot be opened or migrated."""


def normalise_url(url: str) -> str:
    """Select the psycopg 3 driver for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Store:
    """Database access: a session factory over a migrated schema.

    Args:
        url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql://...``).
        migrate: Bring the schema to the newest revision first (default).
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        try:
            if self.is_sqlite:
                if parsed.database and parsed.database != ":memory:":
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                self.engine: Engine = create_engine(
                    self.url, connect_args={"check_same_thread": False, "timeout": 30}
                )
                event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = create_engine(self.url, pool_pre_ping=True)
            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
            if migrate:
                self.migrate()
        except StoreError:
            raise
        except Exception as exc:  # driver errors of many kinds: report the URL, not a traceback
            raise StoreError(f"cannot open database {parsed.render_as_string()}: {exc}") from exc

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a session inside a transaction: committed on success, rolled back on error."""
        with self._sessions.begin() as session:
            yield session

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision (a no-op when it is current)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self._migration_lock(), self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.is_sqlite:
            database = make_url(self.url).database
            if not database or database == ":memory:":
                yield
                return
            with open(f"{database}.migrate.lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        with self.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
                connection.commit()

    def dispose(self) -> None:
        """Close every pooled connection (call in forked children and at shutdown)."""
        self.engine.dispose()
