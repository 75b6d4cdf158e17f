"""The replica sandbox: what a replica process on this host can see and reach.

Model code is untrusted (docs/security.md). A replica started by the ``local`` provider runs
inside a :class:`Sandbox`, which turns the replica's command line and its :class:`Jail` (what
it may see) into the command that runs it:

- :class:`Bubblewrap` (Debian's ``bubblewrap``) gives it its own PID, IPC and UTS namespaces
  and a filesystem of its own: the system's runtime read-only (``/usr`` and what ``/etc``
  programs need), the paths of its jail read-only (its environment, its package, Orchard's
  runtime copy, the interpreter they were built with), its private folder writable (also at
  ``/tmp``), the server's link socket, and of ``/dev`` only the basic nodes and the GPU device
  nodes it was assigned. Without egress it gets a network namespace of its own (loopback only);
  the link is a Unix socket, so it still reaches the server. When the server runs as root, the
  replica runs as its tenant's own unprivileged uid (:class:`TenantIds`), with no capabilities
  and ``no_new_privs``;
- :class:`Unsandboxed` runs the command as it is, for ``orchard serve --sandbox none`` and
  hosts without user namespaces; the server says so loudly.

Whatever the sandbox, a replica's environment is built from an allowlist
(:func:`replica_environment`), never inherited from the server, and its credential reaches it
on its standard input (``--pat-stdin``), never in its argv or environment.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("auto", "bwrap", "none")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a replica's environment takes from the server's, when the server has it.
# LD_LIBRARY_PATH: NVIDIA's images find the driver's libcuda through it.
INHERITED = ("LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH")
# The /etc entries programs need (name resolution, TLS roots, time zone, the loader's cache).
ETC = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "gai.conf",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "passwd",
    "pki",
    "resolv.conf",
    "services",
    "ssl",
    "timezone",
)
# The merged-/usr top-level entries (symbolic links on current Debian, folders on older ones).
TOP = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
# NVIDIA's shared device nodes; each GPU also has /dev/nvidia<minor>.
NVIDIA_SHARED = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
UID_BASE = 3_000_000  # tenants' uids, when the server runs as root: UID_BASE + n


class SandboxUnavailable(Exception):
    """The sandbox asked for cannot run on this host; the message says why and the fix."""


@dataclass(frozen=True)
class Jail:
    """What one replica may see besides the system's runtime.

    ``private`` is its own writable folder (``home/`` and ``tmp/`` inside it), made by the
    provider before the start and removed after the exit; ``read_only`` paths appear at the
    same place, read-only; ``socket`` is the server's link socket; ``devices`` are the names of
    the device nodes of ``dev`` (``nvidia0``) it may open, at ``/dev/NAME``; ``egress`` gives it
    the host's network (without it: none but its link); ``uid`` is the tenant's uid to run as
    (``None``: the server's own); ``cpus``, the CPUs it may run on."""

    private: Path
    read_only: tuple[Path, ...] = ()
    socket: Path | None = None
    devices: tuple[str, ...] = ()
    dev: Path = Path("/dev")
    egress: bool = True
    uid: int | None = None
    cpus: tuple[int, ...] = ()

    @property
    def home(self) -> Path:
        return self.private / "home"

    @property
    def tmp(self) -> Path:
        return self.private / "tmp"


THREAD_COUNTS = frozenset({"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"})


def replica_environment(
    jail: Jail, declared: Mapping[str, str] = {}, path: Sequence[str] = (), cpus: float = 0.0
) -> dict[str, str]:
    """A replica's whole environment: PATH (``path`` first), its private HOME and TMPDIR, the
    locale and time zone, as many math-library threads as the ``cpus`` it requests (when it
    requests some), and what the model's config declares, which wins; nothing else of the
    server's."""
    env = {k: os.environ[k] for k in INHERITED if os.environ.get(k)}
    env.setdefault("LANG", "C.UTF-8")
    if cpus > 0:
        # OpenBLAS, OpenMP and MKL start a thread per host CPU by default, which spin on a
        # replica held to fewer: threads for its share, as Ray does for an actor's num_cpus.
        env.update(dict.fromkeys(THREAD_COUNTS, str(max(1, math.ceil(cpus)))))
    env.update(declared)
    env.update(
        {
            "PATH": ":".join([*path, SYSTEM_PATH]),
            "HOME": str(jail.home),
            "TMPDIR": str(jail.tmp),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def gpu_device_nodes(nodes: Sequence[str], dev: Path = Path("/dev")) -> tuple[str, ...]:
    """The device nodes (``nvidia0``) of a replica's GPUs with NVIDIA's shared ones, those of
    them that exist in ``dev``; none for a replica without GPUs."""
    if not nodes:
        return ()
    return tuple(n for n in (*nodes, *NVIDIA_SHARED) if (dev / n).exists())


@dataclass
class TenantIds:
    """The uid each tenant's replicas run as when the server is root: one per user, numbered
    in the order first seen (nothing a replica leaves outlives it, so the numbering need not
    survive a restart)."""

    base: int = UID_BASE
    _ids: dict[str, int] = field(default_factory=dict)

    def uid(self, user_id: str) -> int:
        return self._ids.setdefault(user_id, self.base + len(self._ids))


class Sandbox(abc.ABC):
    name: str
    isolates = True  # whether replicas are kept apart from each other and the server
    separate_uids = False  # whether each tenant's replicas run as a uid of its own

    @abc.abstractmethod
    def command(self, argv: Sequence[str], jail: Jail) -> list[str]:
        """The command that runs ``argv`` in ``jail``."""

    def prepare(self, jail: Jail) -> None:
        """Make the jail's private folder (0700, the tenant's when it has a uid of its own)."""
        for folder in (jail.private, jail.home, jail.tmp):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if jail.uid is not None:
                os.chown(folder, jail.uid, jail.uid)

    def tenant_uid(self, user_id: str) -> int | None:
        """The uid ``user_id``'s replicas run as (``None``: the server's)."""
        return None


class Unsandboxed(Sandbox):
    name = "none"
    isolates = False

    def command(self, argv: Sequence[str], jail: Jail) -> list[str]:
        return list(argv)


class Bubblewrap(Sandbox):
    """bubblewrap: unprivileged through user namespaces, or as root with each tenant's
    replicas under a uid of its own (``setpriv`` drops to it inside the sandbox, after the
    mounts, so the server's private home never has to be readable by that uid)."""

    name = "bwrap"

    def __init__(self, binary: str, as_root: bool | None = None) -> None:
        self.binary = binary
        # Affinity set before bubblewrap forks, so that every process of the sandbox has it.
        self.taskset = shutil.which("taskset")
        self.separate_uids = os.geteuid() == 0 if as_root is None else as_root
        self.tenants = TenantIds()

    def tenant_uid(self, user_id: str) -> int | None:
        return self.tenants.uid(user_id) if self.separate_uids else None

    def command(self, argv: Sequence[str], jail: Jail) -> list[str]:
        args = [self.binary, *_namespaces(jail), *_system(), "--proc", "/proc", "--dev", "/dev"]
        args += _mounts(jail)
        for node in jail.devices:
            args += ["--dev-bind", str(jail.dev / node), f"/dev/{node}"]
        if jail.devices:
            args += ["--ro-bind", "/sys", "/sys"]  # the CUDA driver reads the PCI topology
        args += ["--chdir", str(jail.home)]
        if jail.uid is None:
            args += ["--cap-drop", "ALL", "--", *argv]
        else:
            args += ["--cap-drop", "ALL"]
            args += [
                a
                for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_READ_SEARCH")
                for a in ("--cap-add", cap)
            ]
            args += ["--", *_drop_to(jail.uid), *argv]
        if jail.cpus and self.taskset:
            return [self.taskset, "--cpu-list", ",".join(map(str, jail.cpus)), *args]
        return args


def _namespaces(jail: Jail) -> list[str]:
    args = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    args += ["--new-session", "--die-with-parent", "--hostname", "replica"]
    if not jail.egress:
        args.append("--unshare-net")
    return args


def _system() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in TOP:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _mounts(jail: Jail) -> list[str]:
    """The jail's own paths, at their own places, with the folders above them made
    traversable (bubblewrap makes missing parents 0700 otherwise)."""
    # /tmp first: the jail's own paths may lie under /tmp, and must stay visible over it.
    args = ["--bind", str(jail.tmp), "/tmp"]
    made: set[Path] = {Path("/")}
    targets = [*jail.read_only, jail.private, *([jail.socket] if jail.socket else [])]
    for target in targets:
        for parent in reversed(target.parents):
            if parent not in made and not _is_system(parent):
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
    for path in jail.read_only:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(jail.private), str(jail.private)]
    if jail.socket is not None:
        args += ["--bind", str(jail.socket), str(jail.socket)]
    return args


def _is_system(path: Path) -> bool:
    return path == Path("/usr") or Path("/usr") in path.parents


def _drop_to(uid: int) -> list[str]:
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def choose_sandbox(mode: str) -> Sandbox:
    """The sandbox for ``orchard serve --sandbox MODE``: ``bwrap`` or an error saying why it
    cannot run here; ``auto``, the strongest that runs here; ``none``, none."""
    if mode not in MODES:
        raise SandboxUnavailable(f"--sandbox {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "none":
        return Unsandboxed()
    try:
        return _bubblewrap()
    except SandboxUnavailable:
        if mode == "bwrap":
            raise
        log.warning("no usable sandbox on this host", exc_info=True)
        return Unsandboxed()


def _bubblewrap() -> Bubblewrap:
    binary = shutil.which("bwrap")
    if binary is None:
        raise SandboxUnavailable(
            "bubblewrap is not installed; install it (Debian/Ubuntu: apt-get install bubblewrap)"
        )
    sandbox = Bubblewrap(binary)
    if sandbox.separate_uids and shutil.which("setpriv") is None:
        raise SandboxUnavailable("setpriv (util-linux) is missing; install util-linux")
    probe = Jail(private=Path("/"), egress=False)
    argv = [binary, *_namespaces(probe), *_system(), "--proc", "/proc", "--dev", "/dev", "true"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"bubblewrap did not run: {exc}") from None
    if result.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap cannot make namespaces here ({result.stderr.strip()}); allow "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or "
            "the AppArmor/SELinux policy for bwrap), or run with --sandbox none"
        )
    return sandbox
