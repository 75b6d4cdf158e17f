"""How a provider is to run one replica: its command line (built by
:mod:`orchard.runners.command`), its sandbox (:class:`~orchard.providers.sandbox.Jail`: an
allowlisted environment, read-only views of its environment, package and Orchard's runtime, a
private folder), its resources and GPUs, and, for machines that share no disk with the server,
the bundle they build it from."""

from __future__ import annotations

from pathlib import Path

from orchard.orchestration.snapshot import DeploymentPlan, PoolPlan
from orchard.orchestration.world import OrchestratorSettings
from orchard.providers.base import Instance, ReplicaBundle, ReplicaLaunch
from orchard.providers.sandbox import Jail, replica_environment
from orchard.runners.command import ServeArgs, serve_command
from orchard.services.builds import base_interpreter, env_commands, runtime_copy


def replica_launch(
    settings: OrchestratorSettings,
    plan: DeploymentPlan,
    pool: PoolPlan,
    instance: Instance,
    replica_id: str,
    token: str,
) -> ReplicaLaunch:
    """How the provider is to run replica ``replica_id`` of ``plan`` in ``pool``; its token
    reaches it on standard input (``--pat-stdin``)."""
    assert plan.package is not None and plan.python is not None
    args = runner_args(settings, plan, pool, replica_id)
    jail = Jail(
        private=settings.home / "sandboxes" / replica_id,
        read_only=(*_read_only(plan, settings.home / "runtime"), *settings.mounts),
        socket=settings.link_socket,
        egress=settings.egress and pool.egress,
    )
    return ReplicaLaunch(
        replica_id,
        instance.id,
        serve_command(plan.python, plan.package, settings.server, args),
        replica_environment(
            jail, dict(plan.declared), path=[str(plan.python.parent)], cpus=plan.request.cpus
        ),
        plan.request.memory_bytes,
        settings.home / "logs" / "replicas" / f"{replica_id}.log",
        gpus=plan.request.gpus(packing=not plan.autoscale.disable_packing),
        cpus=plan.request.cpus,
        bundle=_bundle(settings, plan, args),
        token=token,
        tenant=plan.user_id,
        jail=jail,
    )


def runner_args(
    settings: OrchestratorSettings, plan: DeploymentPlan, pool: PoolPlan, replica_id: str
) -> tuple[str, ...]:
    """``orchard.runners.serve``'s arguments but its package and server."""
    return ServeArgs(
        runner_id=pool.runner_id,
        user_id=plan.user_id,
        nodepool_id=pool.key.nodepool_id,
        compute_cluster_id=pool.key.compute_cluster_id,
        replica_id=replica_id,
        concurrency=plan.concurrency,
        server_gone_grace=settings.server_gone_grace,
        drain_timeout=settings.drain_grace,
        max_output_bytes=settings.max_message_bytes,
        pat_stdin=True,
    ).argv()


def _bundle(
    settings: OrchestratorSettings, plan: DeploymentPlan, args: tuple[str, ...]
) -> ReplicaBundle | None:
    source = plan.source
    if source is None:
        return None
    commands = env_commands(
        "{uv}",
        "{python}",
        "{env}",
        "{requirements}",
        list(source.pins),
        list(settings.find_links),
        settings.offline,
    )
    return ReplicaBundle(
        server=settings.network_server or settings.server,
        package=source.archive,
        package_digest=source.digest,
        env_key=source.env_key,
        python_version=source.python_version,
        commands=tuple(tuple(c) for c in commands),
        runtime=runtime_copy(settings.home / "runtime"),
        args=args,
        declared=plan.declared,
    )


def _read_only(plan: DeploymentPlan, runtime: Path) -> tuple[Path, ...]:
    """What a replica reads: its environment, the interpreter that environment was made from,
    its package and Orchard's runtime copies (which the environment's ``.pth`` names)."""
    assert plan.python is not None and plan.package is not None
    env = plan.python.parent.parent
    return (env, *base_interpreter(env), plan.package, runtime)
