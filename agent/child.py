"""Ask one of the agent's own modules, in a short-lived child process, over JSON.

botocore work that would otherwise stay resident in a long-running daemon
(parsed endpoint data, the session and credential modules) runs in the child
and leaves with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


class ChildError(Exception):
    """The child gave no answer; the message says how, never what it printed."""


def ask_child(module: str, payload: object = None, timeout: float = 30.0) -> dict[str, Any]:
    """Run `python -m module` with `payload` as JSON on stdin; its JSON object on stdout."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", module],
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
