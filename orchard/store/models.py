"""Store rows. Every resource row keeps the columns Orchard queries or enforces rules on, and
``spec``: the validated config as sent (the protobuf's fields, as JSON) for everything else.

Ids are scoped by owner: a primary key starts with ``user_id``, so every list query is an
index range scan in id order whatever the number of rows (pagination stays flat).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ID = String(64)
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON}


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class UserRow(Timestamps, Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)


class PatRow(Timestamps, Base):
    """A personal access token; only its SHA-256 is stored."""

    __tablename__ = "pats"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(512), default="")
    last4: Mapped[str] = mapped_column(String(4), default="")


class RevokedPatRow(Base):
    """A PAT its owner deleted: its SHA-256 stays here, so that nothing makes it valid again
    (the bootstrap PAT of the server's environment included). Not tied to the user row: a
    revocation outlives its user."""

    __tablename__ = "revoked_pats"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ID)
    revoked_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AppRow(Timestamps, Base):
    __tablename__ = "apps"
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ModelRow(Timestamps, Base):
    __tablename__ = "models"
    __table_args__ = (
        ForeignKeyConstraint(
            ["user_id", "app_id"], ["apps.user_id", "apps.id"], ondelete="CASCADE"
        ),
    )
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    model_type_id: Mapped[str] = mapped_column(String(64), default="")
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ModelVersionRow(Timestamps, Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["user_id", "app_id", "model_id"],
            ["models.user_id", "models.app_id", "models.id"],
            ondelete="CASCADE",
        ),
        Index("ix_model_versions_by_seq", "user_id", "app_id", "model_id", "seq"),
    )
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    model_id: Mapped[str] = mapped_column(ID, primary_key=True)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    status_code: Mapped[int] = mapped_column(Integer)
    status_description: Mapped[str] = mapped_column(String(1024), default="")
    # The uploaded package (sha256 of its tar.gz) and the environment built for it; both
    # empty for versions created without a package.
    package_digest: Mapped[str] = mapped_column(String(64), default="")
    env_key: Mapped[str] = mapped_column(String(64), default="")
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ComputeClusterRow(Timestamps, Base):
    __tablename__ = "compute_clusters"
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    cloud_provider: Mapped[str] = mapped_column(String(64))
    region: Mapped[str] = mapped_column(String(128))
    cluster_type: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    nodepools: Mapped[list[NodepoolRow]] = relationship(
        back_populates="compute_cluster", cascade="all, delete-orphan", passive_deletes=True
    )


class NodepoolRow(Timestamps, Base):
    __tablename__ = "nodepools"
    __table_args__ = (
        ForeignKeyConstraint(
            ["user_id", "compute_cluster_id"],
            ["compute_clusters.user_id", "compute_clusters.id"],
            ondelete="CASCADE",
        ),
    )
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    compute_cluster_id: Mapped[str] = mapped_column(ID, primary_key=True)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    min_instances: Mapped[int] = mapped_column(Integer)
    max_instances: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    compute_cluster: Mapped[ComputeClusterRow] = relationship(back_populates="nodepools")


class DeploymentRow(Timestamps, Base):
    __tablename__ = "deployments"
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    model_user_id: Mapped[str] = mapped_column(ID)
    app_id: Mapped[str] = mapped_column(ID)
    model_id: Mapped[str] = mapped_column(ID)
    model_version_id: Mapped[str] = mapped_column(String(32))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    placements: Mapped[list[DeploymentNodepoolRow]] = relationship(
        back_populates="deployment",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="DeploymentNodepoolRow.position",
        lazy="selectin",  # every read of a deployment needs them; one query per page
    )


class DeploymentNodepoolRow(Base):
    """A deployment's use of one nodepool. The unique constraint is the seed's rule:
    one deployment per model per nodepool."""

    __tablename__ = "deployment_nodepools"
    __table_args__ = (
        ForeignKeyConstraint(
            ["user_id", "deployment_id"],
            ["deployments.user_id", "deployments.id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["user_id", "compute_cluster_id", "nodepool_id"],
            ["nodepools.user_id", "nodepools.compute_cluster_id", "nodepools.id"],
            ondelete="CASCADE",
        ),
        UniqueConstraint(
            "user_id",
            "compute_cluster_id",
            "nodepool_id",
            "model_user_id",
            "app_id",
            "model_id",
            name="uq_one_deployment_per_model_per_nodepool",
        ),
        Index("ix_deployment_nodepools_by_nodepool", "user_id", "nodepool_id"),
    )
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ID, primary_key=True)
    compute_cluster_id: Mapped[str] = mapped_column(ID, primary_key=True)
    nodepool_id: Mapped[str] = mapped_column(ID, primary_key=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    position: Mapped[int] = mapped_column(Integer, default=0)
    model_user_id: Mapped[str] = mapped_column(ID)
    app_id: Mapped[str] = mapped_column(ID)
    model_id: Mapped[str] = mapped_column(ID)
    deployment: Mapped[DeploymentRow] = relationship(back_populates="placements")


class LogEntryRow(Base):
    """One line of a log kept by the server: a model version's build log ("builder"), its
    replicas' output ("runner") and the orchestrator's events about them ("runner.events"),
    the last two also naming the nodepool and runner. Append-only; read in ``id`` order."""

    __tablename__ = "log_entries"
    __table_args__ = (
        Index("ix_log_entries_by_version", "user_id", "model_version_id", "log_type", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ID)
    log_type: Mapped[str] = mapped_column(String(32))
    model_id: Mapped[str] = mapped_column(ID, default="")
    model_version_id: Mapped[str] = mapped_column(String(32), default="")
    compute_cluster_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    nodepool_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    runner_id: Mapped[str] = mapped_column(String(32), default="", server_default="")
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class RunnerRow(Timestamps, Base):
    """A runner: one model version served from one nodepool by ``num_replicas`` replica
    processes, each of which connects to the server. Ids are server-made UUIDs."""

    __tablename__ = "runners"
    __table_args__ = (
        ForeignKeyConstraint(
            ["user_id", "compute_cluster_id", "nodepool_id"],
            ["nodepools.user_id", "nodepools.compute_cluster_id", "nodepools.id"],
            ondelete="CASCADE",
        ),
        Index("ix_runners_by_nodepool", "user_id", "compute_cluster_id", "nodepool_id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ID)
    compute_cluster_id: Mapped[str] = mapped_column(ID)
    nodepool_id: Mapped[str] = mapped_column(ID)
    model_user_id: Mapped[str] = mapped_column(ID)
    app_id: Mapped[str] = mapped_column(ID)
    model_id: Mapped[str] = mapped_column(ID)
    model_version_id: Mapped[str] = mapped_column(String(32))
    num_replicas: Mapped[int] = mapped_column(Integer, default=1)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
