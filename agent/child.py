"""Ask one of the agent's own modules, in a short-lived child process, over JSON.

botocore work that would otherwise stay resident in a long-running daemon
(parsed endpoint data, the session and credential modules) runs in the child
and leaves with it.

The child imports only the agent this process runs: it starts isolated
(`-I`: no working directory or script directory on sys.path, no PYTHON*
variables, no user site) in a fixed working directory, and is told where this
agent's package lives.  `python -m` from the daemon's working directory would
otherwise run a planted `agent/__init__.py` with the host's credentials.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The directory holding the `agent` package this process imported.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# A checkout goes first, so no other copy of the package (a stale install) can win;
# site-packages, already on the path, keeps its place after the standard library.
_BOOT = (
    "import runpy, sys; root, module = sys.argv[1:3]; sys.argv[1:3] = []; "
    "root in sys.path or sys.path.insert(0, root); "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


class ChildError(Exception):
    """The child gave no answer; the message says how, never what it printed."""


def ask_child(module: str, payload: object = None, timeout: float = 30.0) -> dict[str, Any]:
    """Run `python -m module` with `payload` as JSON on stdin; its JSON object on stdout."""
    try:
        out = subprocess.run(
            [sys.executable, "-I", "-c", _BOOT, _PACKAGE_ROOT, module],
            cwd="/",
            input="" if payload is None else json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise ChildError(type(e).__name__) from None
    try:
        doc = json.loads(out.stdout) if out.returncode == 0 else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ChildError(f"exited {out.returncode}")
    return doc
