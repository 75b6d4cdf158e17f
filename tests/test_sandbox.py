"""The replica sandbox: the command it builds (pure), the environment allowlist, and real
sandboxed processes of the local provider: a token only on stdin, a private folder that goes
with the replica, and only the device nodes of the GPUs a replica was given (on a scripted
inventory with stand-in device nodes)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchard.providers.base import ComputeShape, ReplicaLaunch
from orchard.providers.gpus import GpuNeed
from orchard.providers.inventory import Gpu, HostInventory
from orchard.providers.local import LocalProvider
from orchard.providers.sandbox import (
    THREAD_COUNTS,
    Bubblewrap,
    Jail,
    SandboxUnavailable,
    TenantIds,
    Unsandboxed,
    choose_sandbox,
    gpu_device_nodes,
    replica_environment,
)
from orchard.server.home import prepare_home
from orchard.services.builds import base_interpreter
from tests.waiting import wait_for

GIB = 2**30
JAIL = Jail(
    private=Path("/srv/orchard/sandboxes/r1"),
    read_only=(Path("/srv/orchard/envs/e1"), Path("/srv/orchard/packages/p1")),
    socket=Path("/srv/orchard/run/runners.sock"),
    devices=("nvidia1", "nvidiactl"),
    cpus=(0, 1),
)
ARGV = ("/srv/orchard/envs/e1/bin/python", "-m", "orchard.runners.serve", "--pat-stdin")


def pairs(args: list[str], flag: str) -> list[tuple[str, str]]:
    return [(args[i + 1], args[i + 2]) for i, a in enumerate(args) if a == flag]


def test_bwrap_shows_the_jail_read_only_its_private_folder_writable_and_nothing_else() -> None:
    args = Bubblewrap("/usr/bin/bwrap", as_root=False).command(ARGV, JAIL)
    assert Path(args[0]).name == "taskset" and args[1:3] == ["--cpu-list", "0,1"]
    assert args[args.index("--") + 1 :] == list(ARGV)
    assert ("/usr", "/usr") in pairs(args, "--ro-bind")
    assert set(pairs(args, "--ro-bind")) >= {(str(p), str(p)) for p in JAIL.read_only}
    assert pairs(args, "--bind") == [
        (str(JAIL.tmp), "/tmp"),
        (str(JAIL.private), str(JAIL.private)),
        (str(JAIL.socket), str(JAIL.socket)),
    ]
    assert pairs(args, "--dev-bind") == [
        ("/dev/nvidia1", "/dev/nvidia1"),
        ("/dev/nvidiactl", "/dev/nvidiactl"),
    ]
    for flag in ("--unshare-pid", "--unshare-ipc", "--new-session", "--die-with-parent"):
        assert flag in args
    assert "--unshare-net" not in args  # egress by default
    assert "/srv/orchard" not in [b for _, b in pairs(args, "--ro-bind")]  # never the home
    assert args[args.index("--chdir") + 1] == str(JAIL.home)
    assert "setpriv" not in args


def test_without_egress_a_replica_gets_a_network_of_its_own() -> None:
    jail = Jail(private=Path("/p"), egress=False)
    assert "--unshare-net" in Bubblewrap("bwrap", as_root=False).command(["true"], jail)


def test_as_root_a_replica_drops_to_its_tenants_uid_with_no_capability_left() -> None:
    jail = Jail(private=Path("/p"), uid=3_000_001)
    args = Bubblewrap("bwrap", as_root=True).command(["python"], jail)
    after = args[args.index("--") + 1 :]
    assert after[0] == "setpriv" and after[-1] == "python"
    for flag in ("--reuid=3000001", "--regid=3000001", "--clear-groups", "--no-new-privs"):
        assert flag in after
    assert "--inh-caps=-all" in after and "--bounding-set=-all" in after


def test_each_tenant_gets_a_uid_of_its_own_and_keeps_it() -> None:
    ids = TenantIds(base=5000)
    assert [ids.uid("alice"), ids.uid("bob"), ids.uid("alice")] == [5000, 5001, 5000]


def test_the_environment_is_an_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHARD_BOOTSTRAP_PAT", "secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("TZ", "Europe/Paris")
    env = replica_environment(JAIL, {"HF_HOME": "/cache"}, path=["/env/bin"])
    assert "secret" not in env.values()
    assert env["PATH"].startswith("/env/bin:") and env["TZ"] == "Europe/Paris"
    assert env["HOME"] == str(JAIL.home) and env["TMPDIR"] == str(JAIL.tmp)
    assert env["HF_HOME"] == "/cache"
    assert set(env) == {"PATH", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "LANG", "TZ", "HF_HOME"}


def test_math_libraries_get_as_many_threads_as_the_cpus_requested_unless_declared() -> None:
    assert not THREAD_COUNTS & set(replica_environment(JAIL))
    env = replica_environment(JAIL, cpus=1.5)
    assert {k: env[k] for k in THREAD_COUNTS} == dict.fromkeys(THREAD_COUNTS, "2")
    assert replica_environment(JAIL, {"OMP_NUM_THREADS": "8"}, cpus=0.5)["OMP_NUM_THREADS"] == "8"
    assert replica_environment(JAIL, cpus=0.5)["OPENBLAS_NUM_THREADS"] == "1"


def test_gpu_device_nodes_are_the_given_ones_and_nvidias_shared_ones(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    assert gpu_device_nodes([], tmp_path) == ()
    assert gpu_device_nodes(["nvidia1"], tmp_path) == ("nvidia1", "nvidiactl", "nvidia-uvm")


def test_an_unknown_mode_is_refused_and_none_is_unsandboxed() -> None:
    with pytest.raises(SandboxUnavailable, match="choose one of auto, bwrap, none"):
        choose_sandbox("docker")
    assert isinstance(choose_sandbox("none"), Unsandboxed)


def test_bwrap_asked_for_where_it_is_missing_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        choose_sandbox("bwrap")
    assert isinstance(choose_sandbox("auto"), Unsandboxed)


def test_a_new_home_is_private_and_a_loose_one_is_reported(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert prepare_home(home, home / "orchard.db", [home / "admin.pat"]) == []
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "orchard.db").stat().st_mode & 0o777 == 0o600
    home.chmod(0o755)
    (home / "admin.pat").write_text("x")
    (home / "admin.pat").chmod(0o644)
    warnings = prepare_home(home, home / "orchard.db", [home / "admin.pat"])
    assert len(warnings) == 2
    assert (
        f"is mode 755: other accounts on this host can reach it; run `chmod 700 {home}`"
        in (warnings[0])
    )
    assert "a PAT file" in warnings[1] and "chmod 600" in warnings[1]


# -- real sandboxed processes ------------------------------------------------------------

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (scripts/setup.sh does)"
)
HOST = HostInventory(
    cpus=2,
    memory_bytes=8 * GIB,
    gpus=(Gpu(0, "NVIDIA H200", 140 * GIB), Gpu(1, "NVIDIA H200", 140 * GIB)),
)
REPORT = """
import json, os, sys
token = sys.stdin.readline().strip()
own = open("/proc/self/cmdline", "rb").read() + open("/proc/self/environ", "rb").read()
print(json.dumps({
    "token": token,
    "token_in_argv_or_env": token.encode() in own,
    "dev": sorted(n for n in os.listdir("/dev") if n.startswith("nvidia")),
    "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "home_writable": os.access(os.environ["HOME"], os.W_OK),
}), flush=True)
"""


@pytest.fixture
def sandboxed(tmp_path: Path) -> Iterator[LocalProvider]:
    """The local provider with bubblewrap, a scripted two-GPU host and stand-in device nodes
    (plain files: the sandbox binds them like the real ones)."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch(mode=0o666)
    local = LocalProvider(HOST, sandbox=choose_sandbox("bwrap"), dev=dev)
    yield local
    local.shutdown(grace=1.0)


def report_launch(tmp_path: Path, instance_id: str, n: int, gib: int) -> ReplicaLaunch:
    python = Path(sys.executable)
    env = python.parent.parent
    jail = Jail(private=tmp_path / "sandboxes" / f"r{n}", read_only=(env, *base_interpreter(env)))
    return ReplicaLaunch(
        id=f"r{n}",
        instance_id=instance_id,
        argv=(str(python), "-c", REPORT),
        env=replica_environment(jail),
        memory_bytes=GIB,
        log_path=tmp_path / "logs" / f"r{n}.log",
        gpus=GpuNeed.of(1, gib * GIB, True),
        token=f"token-of-r{n}",
        tenant=f"user{n}",
        jail=jail,
    )


def report_of(provider: LocalProvider, launch: ReplicaLaunch) -> dict[str, object]:
    """What the replica printed, once it exited (``poll`` reports an exit once: the exits it
    reports are kept on the provider for the next call)."""
    exited: set[str] = provider.__dict__.setdefault("_test_exited", set())

    def ended() -> bool:
        exited.update(s.id for s in provider.poll() if not s.running)
        return launch.id in exited

    wait_for(ended, timeout=30, what=f"{launch.id} to exit")
    lines = launch.log_path.read_text().splitlines()
    return dict(json.loads(lines[-1]))


@needs_bwrap
def test_a_sandboxed_replica_sees_only_its_gpus_device_nodes_and_its_token_on_stdin(
    sandboxed: LocalProvider, tmp_path: Path
) -> None:
    shape = ComputeShape(cpus=1, memory_bytes=GIB, num_accelerators=2)
    instance = sandboxed.start_instance("u/cc/g", shape).id
    small, large = (
        report_launch(tmp_path, instance, 0, 100),
        report_launch(tmp_path, instance, 1, 100),
    )
    sandboxed.start_replica(small)
    sandboxed.start_replica(large)  # does not fit beside the first: the other GPU
    first, second = report_of(sandboxed, small), report_of(sandboxed, large)
    assert first["dev"] == ["nvidia-uvm", "nvidia0", "nvidiactl"] and first["visible"] == "0"
    assert second["dev"] == ["nvidia-uvm", "nvidia1", "nvidiactl"] and second["visible"] == "1"
    for launch, seen in ((small, first), (large, second)):
        assert seen["token"] == launch.token and seen["token_in_argv_or_env"] is False
        assert seen["home_writable"] is True
        assert launch.jail is not None and not launch.jail.private.exists()  # removed at exit


@needs_bwrap
def test_a_replica_without_gpus_sees_no_gpu_device_node(
    sandboxed: LocalProvider, tmp_path: Path
) -> None:
    instance = sandboxed.start_instance("u/cc/c", ComputeShape(cpus=1, memory_bytes=GIB)).id
    launch = report_launch(tmp_path, instance, 2, 0)
    launch = ReplicaLaunch(**{**launch.__dict__, "gpus": GpuNeed()})
    sandboxed.start_replica(launch)
    seen = report_of(sandboxed, launch)
    assert seen["dev"] == [] and seen["visible"] == ""
    assert os.path.exists(sandboxed.dev / "nvidia0")  # the host's are untouched
