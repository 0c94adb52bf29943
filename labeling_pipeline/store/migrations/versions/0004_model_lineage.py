"""Model lineages: scope, status, parent, gate metrics and report of every model version.

Existing versions and the old "default" pointer become the "global" lineage (the pointer of
"default" served every project, which is what "global" means now).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    """Apply this revision.

    Plain ADD COLUMN, no table copy: SQLite cannot drop a table that other rows reference.
    """
    op.add_column(
        "model_versions",
        sa.Column("scope", sa.String(length=100), nullable=False, server_default="global"),
    )
    op.add_column(
        "model_versions",
        sa.Column("status", sa.String(length=20), nullable=False, server_default="published"),
    )
    if op.get_bind().dialect.name == "sqlite":  # SQLite adds a reference only inline
        if "parent_id" not in _columns("model_versions"):  # a downgrade on SQLite keeps it
            op.execute(
                "ALTER TABLE model_versions ADD COLUMN parent_id INTEGER "
                "REFERENCES model_versions (id)"
            )
    else:
        op.add_column("model_versions", sa.Column("parent_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            "fk_model_versions_parent_id", "model_versions", "model_versions", ["parent_id"], ["id"]
        )
    op.add_column(
        "model_versions", sa.Column("gate", sa.JSON(), nullable=False, server_default="{}")
    )
    op.add_column("model_versions", sa.Column("report_path", sa.Text(), nullable=True))
    op.create_index(op.f("ix_model_versions_scope"), "model_versions", ["scope"], unique=False)
    op.create_index(op.f("ix_model_versions_status"), "model_versions", ["status"], unique=False)
    pointers = sa.table("model_pointers", sa.column("scope", sa.String))
    op.execute(pointers.update().where(pointers.c.scope == "default").values(scope="global"))


def downgrade() -> None:
    """Revert this revision (every lineage but "global" loses its pointer).

    On SQLite the columns are dropped in place (SQLite >= 3.35), never by copying the table:
    other tables reference model_versions, and dropping it for a copy breaks their references.
    SQLite cannot drop a column that holds a reference, so `parent_id` stays there (unused by
    revision 0003, and `upgrade` keeps it).
    """
    pointers = sa.table("model_pointers", sa.column("scope", sa.String))
    op.execute(pointers.delete().where(pointers.c.scope != "global"))
    op.execute(pointers.update().where(pointers.c.scope == "global").values(scope="default"))
    op.drop_index(op.f("ix_model_versions_status"), table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_scope"), table_name="model_versions")
    if op.get_bind().dialect.name == "sqlite":
        for column in ("report_path", "gate", "status", "scope"):
            op.execute(f"ALTER TABLE model_versions DROP COLUMN {column}")
        return
    op.drop_constraint("fk_model_versions_parent_id", "model_versions", type_="foreignkey")
    for column in ("report_path", "gate", "parent_id", "status", "scope"):
        op.drop_column("model_versions", column)
