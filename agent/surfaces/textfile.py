"""node_exporter textfile collector output: one round's metrics, replaced atomically.

The text is rendered by the same Metrics class that serves /metrics, fed the
one report, so names and labels are those of `serve`.  node_exporter may read
the file at any moment: it is written beside the target under a name the
collector ignores (not *.prom), fsynced, given mode 0644 (node_exporter
usually runs as another user) and renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from agent.results import Report
from agent.surfaces.metrics import Metrics


class TextfileError(Exception):
    """The textfile cannot be written; the message names the file and why."""


def render(report: Report) -> bytes:
    metrics = Metrics()
    metrics.observe(report)
    return metrics.registry.exposition()


def check_path(path: str) -> None:
    """Refuses, before a round is spent, a file node_exporter would never read."""
    target = Path(path)
    if target.suffix != ".prom":
        raise TextfileError(
            f"--textfile {path}: must end in .prom (node_exporter's textfile collector "
            "reads only *.prom files)"
        )
    if not target.parent.is_dir():
        raise TextfileError(f"--textfile {path}: directory {target.parent} does not exist")


def write_textfile(path: str, report: Report) -> None:
    check_path(path)
    target = Path(path)
    data = render(report)
    directory = target.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise TextfileError(f"--textfile {path}: cannot write in {directory}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise TextfileError(f"--textfile {path}: {e.strerror or e}") from e
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    """Makes the rename itself durable; some filesystems refuse, which costs only that."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
