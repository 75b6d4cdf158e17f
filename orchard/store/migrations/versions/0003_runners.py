"""runners

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 22:21:06.714910
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runners",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("compute_cluster_id", sa.String(length=64), nullable=False),
        sa.Column("nodepool_id", sa.String(length=64), nullable=False),
        sa.Column("model_user_id", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.String(length=32), nullable=False),
        sa.Column("num_replicas", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id", "compute_cluster_id", "nodepool_id"],
            ["nodepools.user_id", "nodepools.compute_cluster_id", "nodepools.id"],
            name=op.f("fk_runners_user_id_nodepools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runners")),
    )
    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.create_index(
            "ix_runners_by_nodepool", ["user_id", "compute_cluster_id", "nodepool_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.drop_index("ix_runners_by_nodepool")

    op.drop_table("runners")
