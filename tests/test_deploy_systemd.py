"""The systemd unit, its drop-in and example files, checked by systemd's own tools.

`systemd-analyze verify` refuses a unit whose ExecStart binary is missing, and
on a development or CI machine the agent lives in the project's virtualenv,
not at /opt/sts-agent.  So the tests copy the unit and rewrite only the
ExecStart program path to the `sts-agent` console script that is really
installed next to this Python; every other line is checked as shipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import _parser
from agent.config import build, read_env
from agent.surfaces.http_loop import FD_RESERVE
from agent.surfaces.http_server import MAX_CONNECTIONS, WORKERS
from testbed import ROOT
from testbed.require import require_binary
from tests.support.systemd_unit import (
    DROP_IN,
    EXAMPLE_ENV,
    EXAMPLE_TOML,
    MAX_EXPOSURE,
    MDWE,
    SHIPPED_BINARY,
    agent_as_the_unit_runs_it,
    as_the_unit_restricts,
    exposure,
    unit_tree,
    values,
    verify,
)


def test_unit_verifies_clean(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    out = verify(analyze, unit_tree(tmp_path, with_drop_in=False))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "" and out.stderr.strip() == "", out.stdout + out.stderr


def test_verify_catches_a_misspelt_directive(tmp_path: Path) -> None:
    """Guards the check above: a typo in the unit must show up as output."""
    analyze = require_binary("systemd-analyze")
    etc = unit_tree(tmp_path, with_drop_in=False)
    unit = etc / "sts-agent.service"
    unit.write_text(unit.read_text().replace("ProtectClock=", "ProtectClok="))
    out = verify(analyze, etc)
    assert "ProtectClok" in out.stdout + out.stderr


def test_exposure_within_budget(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    unit_tree(tmp_path, with_drop_in=False)
    score, report = exposure(analyze, tmp_path)
    assert score <= MAX_EXPOSURE, report


def test_drop_in_verifies_and_only_adds_the_audit_capabilities(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    unit_tree(tmp_path / "base", with_drop_in=False)
    base, _ = exposure(analyze, tmp_path / "base")
    etc = unit_tree(tmp_path / "audit", with_drop_in=True)
    out = verify(analyze, etc)
    assert out.returncode == 0 and (out.stdout + out.stderr).strip() == "", out.stdout + out.stderr
    score, report = exposure(analyze, tmp_path / "audit")
    assert score > base  # the drop-in was really applied
    assert re.search(r"✗ CapabilityBoundingSet=~CAP_SYS_PTRACE", report), report
    for line in report.splitlines():
        if line.startswith("✗ CapabilityBoundingSet="):
            assert re.search(r"CAP_SYS_PTRACE|CAP_\(DAC_\*", line), line
    drop = DROP_IN.read_text()
    assert values("Environment", drop) == ["STS_AGENT_AUDIT_PROCESSES=true"]
    caps = set(values("AmbientCapabilities", drop)[0].split())
    assert caps == {"CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}
    assert set(values("CapabilityBoundingSet", drop)[0].split()) == caps


def test_default_unit_grants_nothing_and_keeps_proc_net_readable() -> None:
    assert values("CapabilityBoundingSet") == [""]
    assert values("AmbientCapabilities") == [""]
    assert values("DynamicUser") == ["yes"]
    # ProcSubset=pid would hide /proc/net/tcp*, which the connection audit reads.
    assert values("ProcSubset") == []
    families = values("RestrictAddressFamilies")[0].split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)  # AF_UNIX: sd_notify
    assert "AF_PACKET" not in families


def test_service_contract_matches_the_daemon() -> None:
    assert values("Type") == ["notify"]
    assert values("ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert values("EnvironmentFile") == ["-/etc/default/sts-agent"]
    watchdog = int(values("WatchdogSec")[0])
    # A round lasts at most interval + timeout (30 s + 5 s by default).
    assert watchdog >= 3 * 35
    assert int(values("TimeoutStopSec")[0]) > 5  # the agent stops within 5 s
    argv = shlex.split(values("ExecStart")[0])
    assert argv[0] == SHIPPED_BINARY
    args = _parser().parse_args(argv[1:])
    assert args.command == "serve" and args.config == "/etc/sts-agent/config.toml"


def test_unit_caps_descriptors_and_tasks_with_room_for_the_agent() -> None:
    nofile, tasks = int(values("LimitNOFILE")[0]), int(values("TasksMax")[0])
    # Under the unit's limit the listener still takes hundreds of clients and
    # leaves the reserve free for probes.
    assert min(MAX_CONNECTIONS, nofile - FD_RESERVE) >= 300
    # Loop + workers + probe pool + scheduler, main, credential and SDK children.
    assert tasks >= 1 + WORKERS + 32 + 8 + 2 + 64


def test_example_config_is_valid() -> None:
    loaded = build(file=str(EXAMPLE_TOML), environ={})
    assert loaded.settings.web_listen_address == ":9472"
    assert loaded.settings.audit_processes is False
    assert "interval" in loaded.sources


def test_every_example_environment_line_is_valid() -> None:
    """Uncomment each example in the env file; the agent must accept all of them."""
    examples: dict[str, str] = {}
    for line in EXAMPLE_ENV.read_text().splitlines():
        m = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            examples[m.group(1)] = m.group(2)
    agent_vars = {k: v for k, v in examples.items() if k.startswith("STS_AGENT_")}
    assert len(agent_vars) >= 5
    assert len(read_env(agent_vars)) == len(agent_vars)  # raises on an unknown name
    settings = build(environ=examples).settings
    assert settings.imds_enabled is False
    assert dict(settings.expect) == {"regional": "vpce", "global": "public"}
    assert settings.regions == ("eu-west-1", "eu-central-1")


def test_daemon_honours_the_units_notify_reload_and_stop_contract(tmp_path: Path) -> None:
    """Type=notify, WatchdogSec=, ExecReload= and TimeoutStopSec= against the real daemon."""
    stop_budget = int(values("TimeoutStopSec")[0])
    with agent_as_the_unit_runs_it(tmp_path) as agent:
        assert "READY=1" in agent.wait_for("READY=1")
        status = Path(f"/proc/{agent.proc.pid}/status").read_text()
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
        assert agent.get("/-/healthy")[0] == 200
        agent.wait_ready(timeout=60)  # /-/ready turns 200 after the first round
        assert "WATCHDOG=1" in agent.wait_for("WATCHDOG=1")

        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for("RELOADING=1")
        agent.wait_for("READY=1")  # only after RELOADING=1: wait_for reads in order
        assert agent.proc.poll() is None, "SIGHUP must reload, not stop"

        agent.proc.send_signal(signal.SIGTERM)
        agent.wait_for("STOPPING=1")
        # systemd would SIGKILL after TimeoutStopSec; the daemon must be gone before.
        assert agent.proc.wait(timeout=stop_budget) == 0


def restricted_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=as_the_unit_restricts,
        timeout=120,
    )


def test_write_execute_memory_is_really_refused(tmp_path: Path) -> None:
    """Guards the test below: the restriction must bite where the kernel has it."""
    if not MDWE:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    rwx = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    out = restricted_python(rwx, tmp_path)
    assert out.returncode != 0 and "PermissionError" in out.stderr, out.stderr


def test_a_full_round_works_under_the_units_memory_and_privilege_limits(tmp_path: Path) -> None:
    """DNS, TLS and SigV4 against the built-in simulated VPC, with NNP and MDWE set."""
    out = restricted_python(
        "import sys; from agent.cli import main; sys.exit(main(['demo', '--once', '--json']))",
        tmp_path,
    )
    assert out.returncode in (0, 1), out.stderr
    report = json.loads(out.stdout)
    probes = [p for e in report["endpoints"] for p in e["probes"]]
    assert probes and all(p["success"] for p in probes), probes
