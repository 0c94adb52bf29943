"""Prediction records: the granularity of every suggested mask.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:16:19.007991
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "prediction_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ls_project_id", sa.Integer(), nullable=True),
        sa.Column("ls_task_id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.String(length=100), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("granularity", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ls_task_id", "result_id"),
    )
    with op.batch_alter_table("prediction_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prediction_records_ls_task_id"), ["ls_task_id"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("prediction_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prediction_records_ls_task_id"))

    op.drop_table("prediction_records")
