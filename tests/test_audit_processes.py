"""Process audit against real child processes with chosen environments.

The children are plain sleeping programs; what matters is what /proc shows
of them.  The unprivileged case runs the audit as `nobody` in a forked child.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.audit.processes import ProcessAudit, ProcessSdk, audit_processes
from testbed.require import missing, require_binary
from tests.support.privileges import run_as_nobody

SLEEP = [sys.executable, "-c", "import time; time.sleep(30)"]
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzPROCzz"
TOKEN = "tok-5c1e7f00d-do-not-leak"

Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    children: list[subprocess.Popen[bytes]] = []

    def start(
        env: dict[str, str], argv: list[str] | None = None, **kw: object
    ) -> subprocess.Popen[bytes]:
        # Popen returns once exec has happened, so /proc already shows the new environment.
        child = subprocess.Popen(argv or SLEEP, env=env, **kw)  # type: ignore[call-overload]
        children.append(child)
        return child  # type: ignore[no-any-return]

    yield start
    for child in children:
        child.kill()
        child.wait()


def by_pid(audit: ProcessAudit, pid: int) -> ProcessSdk:
    matches = [p for p in audit.processes if p.pid == pid]
    assert matches, f"pid {pid} not in audit"
    return matches[0]


def test_children_are_found_with_the_endpoint_botocore_would_use(spawn: Spawn) -> None:
    only_region = spawn({"AWS_REGION": "eu-west-1", "AWS_CONFIG_FILE": os.devnull})
    default_region = spawn({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_CONFIG_FILE": os.devnull})
    legacy = spawn(
        {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_STS_REGIONAL_ENDPOINTS": "legacy",
            "AWS_CONFIG_FILE": os.devnull,
        }
    )
    audit = audit_processes()

    a = by_pid(audit, only_region.pid)
    assert (a.mode, a.endpoint_url) == ("global", "https://sts.amazonaws.com")
    assert "aws_region_only" in a.reasons
    assert a.name.startswith("python")

    b = by_pid(audit, default_region.pid)
    assert (b.mode, b.endpoint_url, b.region) == (
        "regional",
        "https://sts.eu-west-1.amazonaws.com",
        "eu-west-1",
    )

    c = by_pid(audit, legacy.pid)
    assert (c.mode, c.reasons) == ("global", ("legacy_mode",))

    assert audit.inspected >= 3
    assert sum(audit.counts_by_mode.values()) == len(audit.processes)
    assert audit.counts_by_mode["global"] >= 2
    assert os.getpid() not in {p.pid for p in audit.processes}


def test_other_environment_variables_never_appear(spawn: Spawn) -> None:
    child = spawn(
        {
            "AWS_DEFAULT_REGION": "eu-central-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_SESSION_TOKEN": TOKEN,
            "MY_TOKEN": TOKEN,
        }
    )
    audit = audit_processes()
    assert by_pid(audit, child.pid).mode == "regional"
    text = repr(audit)
    for leaked in (SECRET_KEY, TOKEN, "AKIAIOSFODNN7EXAMPLE", "MY_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        assert leaked not in text


def test_non_runtime_process_counts_only_when_it_sets_aws_variables(spawn: Spawn) -> None:
    sleep = require_binary("sleep")
    with_vars = spawn(
        {"AWS_DEFAULT_REGION": "us-west-2", "AWS_CONFIG_FILE": os.devnull}, [sleep, "30"]
    )
    without = spawn({"HOME": "/nonexistent"}, [sleep, "30"])
    audit = audit_processes()
    assert by_pid(audit, with_vars.pid).endpoint_url == "https://sts.us-west-2.amazonaws.com"
    assert by_pid(audit, with_vars.pid).exe == "sleep"
    assert without.pid not in {p.pid for p in audit.processes}


def test_relative_config_file_is_resolved_in_the_process_cwd(spawn: Spawn, tmp_path: Path) -> None:
    (tmp_path / "app.cfg").write_text("[default]\nregion = ap-southeast-2\n")
    child = spawn({"AWS_CONFIG_FILE": "app.cfg"}, cwd=tmp_path)
    p = by_pid(audit_processes(), child.pid)
    assert (p.mode, p.endpoint_url) == ("regional", "https://sts.ap-southeast-2.amazonaws.com")
    assert "config_file_missing" not in p.reasons


def test_profile_endpoint_url_from_the_process_config(spawn: Spawn, tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text(
        "[profile app]\nregion = eu-west-1\n"
        "endpoint_url = https://vpce-0abc.sts.eu-west-1.vpce.amazonaws.com\n"
    )
    child = spawn({"AWS_CONFIG_FILE": str(cfg), "AWS_PROFILE": "app"})
    p = by_pid(audit_processes(), child.pid)
    assert p.mode == "custom"
    assert "endpoint_url_profile" in p.reasons


def test_missing_config_file_is_named_in_reasons(spawn: Spawn, tmp_path: Path) -> None:
    child = spawn({"AWS_CONFIG_FILE": str(tmp_path / "gone"), "AWS_DEFAULT_REGION": "eu-west-1"})
    p = by_pid(audit_processes(), child.pid)
    assert p.mode == "regional"
    assert "config_file_missing" in p.reasons


def test_max_processes_truncates(spawn: Spawn) -> None:
    spawn({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_CONFIG_FILE": os.devnull})
    audit = audit_processes(max_processes=1)
    assert audit.truncated
    assert audit.inspected + audit.denied + audit.vanished == 1


def test_root_may_read_every_process(spawn: Spawn) -> None:
    if os.geteuid() != 0:
        missing("root")
    assert audit_processes().permitted


def test_unprivileged_audit_says_not_permitted(spawn: Spawn) -> None:
    child = spawn({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_CONFIG_FILE": os.devnull})
    if os.geteuid() != 0:
        missing("root (to switch to an unprivileged user)")
    # As root first: root sees the child, and the run loads the botocore data the
    # forked child could no longer read from a checkout or interpreter it cannot enter.
    assert child.pid in {p.pid for p in audit_processes().processes}
    audit = run_as_nobody(
        audit_processes,
        env={
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "HOME": "/nonexistent",
        },
    )
    assert audit.permitted is False
    assert audit.denied > 0
    assert child.pid not in {p.pid for p in audit.processes}
