"""What replicas print: read from their log files a round at a time, for the runner log, and
their last lines, for the event that reports a failed start."""

from __future__ import annotations

import os
from pathlib import Path

from orchard.orchestration.world import Replica
from orchard.services import logs

LOG_LINES_PER_ROUND = 2000  # per replica; the rest waits for the next round
LAST_LINES = 15  # of a replica's output, in the event that reports its failed start

Entry = tuple[logs.LogRef, list[str]]


def read_output(replica: Replica) -> Entry | None:
    """The whole lines ``replica`` printed since the last read (its offset moves past them),
    as runner log lines; None when there are none."""
    try:
        with open(replica.log_path, "rb") as handle:
            handle.seek(replica.log_offset)
            data = handle.read(1 << 20)
    except OSError:
        return None
    end = data.rfind(b"\n") + 1
    if not end:
        return None
    replica.log_offset += end
    lines = data[:end].decode("utf-8", "replace").splitlines()[-LOG_LINES_PER_ROUND:]
    ref = logs.LogRef(
        replica.deployment[0],
        replica.version.model_id,
        replica.version.version_id,
        logs.RUNNER,
        replica.pool.key.compute_cluster_id,
        replica.pool.key.nodepool_id,
        replica.pool.runner_id,
    )
    return ref, [f"[{replica.id}] {line}" for line in lines]


def last_lines(path: Path, count: int = LAST_LINES) -> list[str]:
    """The last ``count`` non-blank lines of the file at ``path`` (none if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-count:]
