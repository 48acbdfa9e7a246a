"""The daemon's helper children import only the agent that started them.

A working directory (or PYTHONPATH) holding a planted `agent` package must
not run in a child that sees the host's credentials.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.credentials import Credentials
from agent.discovery.sdk import sdk_view_in_child

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with a planted agent package; it is both the cwd and on PYTHONPATH."""
    marker = tmp_path / "planted-code-ran"
    code = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for rel in (
        "agent/__init__.py",
        "agent/credentials.py",
        "agent/discovery/__init__.py",
        "agent/discovery/sdk_view.py",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return marker


def test_credential_child_ignores_a_planted_package(planted: Path) -> None:
    chain = Credentials("chain", in_child=True)
    frozen = chain.frozen()
    assert not planted.exists(), planted.read_text()
    assert frozen is not None and frozen.access_key == ACCESS_KEY, chain.error


def test_sdk_view_child_ignores_a_planted_package(planted: Path) -> None:
    view = sdk_view_in_child({**os.environ, "AWS_DEFAULT_REGION": "us-east-2"})
    assert not planted.exists(), planted.read_text()
    assert view.error is None and view.region == "us-east-2", view
