"""Jobs and their event history.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "asya_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tool", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("root_id", sa.String(64), nullable=False),
        sa.Column("branches", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_asya_jobs_tool", "asya_jobs", ["tool"])
    op.create_index("ix_asya_jobs_status", "asya_jobs", ["status"])
    op.create_index("ix_asya_jobs_deadline", "asya_jobs", ["deadline"])
    op.create_table(
        "asya_job_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            sa.String(36),
            sa.ForeignKey("asya_jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_asya_job_events_job_id_id", "asya_job_events", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_asya_job_events_job_id_id", "asya_job_events")
    op.drop_table("asya_job_events")
    op.drop_index("ix_asya_jobs_deadline", "asya_jobs")
    op.drop_index("ix_asya_jobs_status", "asya_jobs")
    op.drop_index("ix_asya_jobs_tool", "asya_jobs")
    op.drop_table("asya_jobs")
