"""A job's row version: each write of a job on PostgreSQL says which version it read
(:mod:`asya_gateway.pgstore`) and bumps it, so two writers never both win.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("asya_jobs") as table:
        table.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("asya_jobs") as table:
        table.drop_column("version")
