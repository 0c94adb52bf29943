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
        op.execute(
            "ALTER TABLE model_versions ADD COLUMN parent_id INTEGER REFERENCES model_versions (id)"
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
    """Revert this revision (every lineage but "global" loses its pointer)."""
    pointers = sa.table("model_pointers", sa.column("scope", sa.String))
    op.execute(pointers.delete().where(pointers.c.scope != "global"))
    op.execute(pointers.update().where(pointers.c.scope == "global").values(scope="default"))
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_model_versions_parent_id", "model_versions", type_="foreignkey")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_status"))
        batch_op.drop_index(batch_op.f("ix_model_versions_scope"))
        batch_op.drop_column("report_path")
        batch_op.drop_column("gate")
        batch_op.drop_column("parent_id")
        batch_op.drop_column("status")
        batch_op.drop_column("scope")
