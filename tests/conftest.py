"""Shared test plumbing.

`require_binary` enforces the project rule: on a developer machine a missing
real component skips its tests, but under CI (CI=true) it fails them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Never let a test reach real IMDS or pick up the developer's AWS profile.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
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
