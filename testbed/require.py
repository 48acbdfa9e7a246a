"""Real parts a test needs: missing ones skip on a developer machine and fail under CI."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> NoReturn:
    """Skip locally, fail in CI: a real part that is absent must not pass silently."""
    if IN_CI:
        pytest.fail(f"required component missing in CI: {what}")
    pytest.skip(f"{what} not available")


def require_binary(name: str, *candidates: str) -> str:
    for cand in (name, *candidates):
        path = shutil.which(cand) or (
            cand if os.path.isabs(cand) and os.access(cand, os.X_OK) else None
        )
        if path:
            return path
    missing(f"binary {name!r}")
    raise AssertionError("unreachable")


def require_root() -> None:
    if os.geteuid() != 0:
        missing("root (network namespaces)")
