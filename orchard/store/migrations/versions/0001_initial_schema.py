"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 21:20:14.798055
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables, each in its own step, in the order their foreign keys need."""
    _create_users()
    _create_apps()
    _create_compute_clusters()
    _create_deployments()
    _create_pats()
    _create_models()
    _create_nodepools()
    _create_deployment_nodepools()
    _create_model_versions()


def _create_users() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )


def _create_apps() -> None:
    op.create_table(
        "apps",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_apps_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "id", name=op.f("pk_apps")),
    )


def _create_compute_clusters() -> None:
    op.create_table(
        "compute_clusters",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("cloud_provider", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=128), nullable=False),
        sa.Column("cluster_type", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_compute_clusters_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "id", name=op.f("pk_compute_clusters")),
    )


def _create_deployments() -> None:
    op.create_table(
        "deployments",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model_user_id", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.String(length=32), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_deployments_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "id", name=op.f("pk_deployments")),
    )


def _create_pats() -> None:
    op.create_table(
        "pats",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=512), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_pats_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pats")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_pats_token_hash")),
    )
    with op.batch_alter_table("pats", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pats_user_id"), ["user_id"], unique=False)


def _create_models() -> None:
    op.create_table(
        "models",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model_type_id", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id", "app_id"],
            ["apps.user_id", "apps.id"],
            name=op.f("fk_models_user_id_apps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "app_id", "id", name=op.f("pk_models")),
    )


def _create_nodepools() -> None:
    op.create_table(
        "nodepools",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("compute_cluster_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("min_instances", sa.Integer(), nullable=False),
        sa.Column("max_instances", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id", "compute_cluster_id"],
            ["compute_clusters.user_id", "compute_clusters.id"],
            name=op.f("fk_nodepools_user_id_compute_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "compute_cluster_id", "id", name=op.f("pk_nodepools")),
    )


def _create_deployment_nodepools() -> None:
    op.create_table(
        "deployment_nodepools",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("compute_cluster_id", sa.String(length=64), nullable=False),
        sa.Column("nodepool_id", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("model_user_id", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id", "compute_cluster_id", "nodepool_id"],
            ["nodepools.user_id", "nodepools.compute_cluster_id", "nodepools.id"],
            name=op.f("fk_deployment_nodepools_user_id_nodepools"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id", "deployment_id"],
            ["deployments.user_id", "deployments.id"],
            name=op.f("fk_deployment_nodepools_user_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "user_id",
            "deployment_id",
            "compute_cluster_id",
            "nodepool_id",
            name=op.f("pk_deployment_nodepools"),
        ),
        sa.UniqueConstraint(
            "user_id",
            "compute_cluster_id",
            "nodepool_id",
            "model_user_id",
            "app_id",
            "model_id",
            name="uq_one_deployment_per_model_per_nodepool",
        ),
    )
    with op.batch_alter_table("deployment_nodepools", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deployment_nodepools_by_nodepool", ["user_id", "nodepool_id"], unique=False
        )


def _create_model_versions() -> None:
    op.create_table(
        "model_versions",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id", "app_id", "model_id"],
            ["models.user_id", "models.app_id", "models.id"],
            name=op.f("fk_model_versions_user_id_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "user_id", "app_id", "model_id", "id", name=op.f("pk_model_versions")
        ),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_model_versions_by_seq", ["user_id", "app_id", "model_id", "seq"], unique=False
        )


def downgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_model_versions_by_seq")

    op.drop_table("model_versions")
    with op.batch_alter_table("deployment_nodepools", schema=None) as batch_op:
        batch_op.drop_index("ix_deployment_nodepools_by_nodepool")

    op.drop_table("deployment_nodepools")
    op.drop_table("nodepools")
    op.drop_table("models")
    with op.batch_alter_table("pats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pats_user_id"))

    op.drop_table("pats")
    op.drop_table("deployments")
    op.drop_table("compute_clusters")
    op.drop_table("apps")
    op.drop_table("users")
    # ### end Alembic commands ###
