"""A job's row version: each write of a job on PostgreSQL says which version it read
(:mod:`asya_gateway.pgstore`), so two writers never both win.

On PostgreSQL a trigger bumps it on every update of the row, whoever makes it: also a replica
of an older gateway during a rolling upgrade, which knows nothing of versions. SQLite (one
gateway process) has the ORM bump it.

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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION asya_jobs_bump_version() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.version := OLD.version + 1; RETURN NEW; END $$"
        )
        op.execute(
            "CREATE TRIGGER asya_jobs_version BEFORE UPDATE ON asya_jobs "
            "FOR EACH ROW EXECUTE FUNCTION asya_jobs_bump_version()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER asya_jobs_version ON asya_jobs")
        op.execute("DROP FUNCTION asya_jobs_bump_version()")
    with op.batch_alter_table("asya_jobs") as table:
        table.drop_column("version")
