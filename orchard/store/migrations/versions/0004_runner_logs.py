"""runner and event logs name their nodepool and runner

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("log_entries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("compute_cluster_id", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("nodepool_id", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("runner_id", sa.String(length=32), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("log_entries", schema=None) as batch_op:
        batch_op.drop_column("runner_id")
        batch_op.drop_column("nodepool_id")
        batch_op.drop_column("compute_cluster_id")
