"""package builds and log entries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 21:40:22.253519
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("log_type", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_entries")),
    )
    with op.batch_alter_table("log_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_log_entries_by_version",
            ["user_id", "model_version_id", "log_type", "id"],
            unique=False,
        )

    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "status_description", sa.String(length=1024), nullable=False, server_default=""
            )
        )
        batch_op.add_column(
            sa.Column("package_digest", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("env_key", sa.String(length=64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("env_key")
        batch_op.drop_column("package_digest")
        batch_op.drop_column("status_description")

    with op.batch_alter_table("log_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_log_entries_by_version")

    op.drop_table("log_entries")
