"""Every job belongs to a principal; an idempotency key per principal names at most one job.

Jobs from before this revision belong to no principal (``''``): only admins (and the local
``anonymous`` principal) see them.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("asya_jobs") as table:
        table.add_column(sa.Column("principal", sa.String(64), nullable=False, server_default=""))
        table.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
    op.create_index("ix_asya_jobs_principal_created", "asya_jobs", ["principal", "created_at"])
    # NULL keys never collide (on PostgreSQL and SQLite alike): jobs without a key are many.
    op.create_index(
        "ux_asya_jobs_principal_idempotency_key",
        "asya_jobs",
        ["principal", "idempotency_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ux_asya_jobs_principal_idempotency_key", "asya_jobs")
    op.drop_index("ix_asya_jobs_principal_created", "asya_jobs")
    with op.batch_alter_table("asya_jobs") as table:
        table.drop_column("idempotency_key")
        table.drop_column("principal")
