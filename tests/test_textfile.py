"""`sts-agent check --textfile`: serve's metrics for node_exporter, written atomically.

The real CLI runs against the simulated VPC on loopback; its file is checked by
promtool and compared, family by family, with a scrape of `sts-agent serve`
on the same VPC and config.  The systemd service and timer pass
`systemd-analyze verify` as shipped (binary path made real, as for the daemon unit).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.simulate.demo import REGIONAL, SimulatedVpc, simulated_vpc
from bench.promtext import parse
from testbed import ROOT
from testbed.agent_proc import agent_env, running_agent, vpc_config, wait_for
from testbed.ports import free_port
from testbed.require import require_binary
from tests.support.systemd_unit import MAX_EXPOSURE, SHIPPED_BINARY, exposure, installed_agent

SERVICE = ROOT / "systemd" / "sts-agent-textfile.service"
TIMER = ROOT / "systemd" / "sts-agent-textfile.timer"
# Values that differ between two rounds or two processes, not between the surfaces.
VOLATILE = {"le"}


@pytest.fixture(scope="module")
def vpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedVpc]:
    with simulated_vpc(tmp_path_factory.mktemp("vpc")) as v:
        yield v


def check(vpc: SimulatedVpc, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = vpc_config(vpc, tmp / "agent.toml", free_port())
    return subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(cfg), *args],
        env=agent_env(vpc),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def series(text: str) -> dict[str, set[frozenset[tuple[str, str]]]]:
    """Family -> its label sets (bucket bounds and values aside)."""
    out: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for name, labels, _ in parse(text):
        kept = frozenset((k, v) for k, v in labels.items() if k not in VOLATILE)
        out.setdefault(name, set()).add(kept)
    return out


def test_textfile_has_the_same_series_as_serve(vpc: SimulatedVpc, tmp_path: Path) -> None:
    target = tmp_path / "collector" / "sts_agent.prom"
    target.parent.mkdir()
    plain = check(vpc, tmp_path)
    out = check(vpc, tmp_path, "--textfile", str(target))
    assert out.returncode == plain.returncode, out.stderr  # the exit code is unchanged
    assert out.stdout.split("\n", 1)[0] == plain.stdout.split("\n", 1)[0]  # and the report
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(target.parent) == ["sts_agent.prom"], "a temporary file was left"

    promtool = require_binary("promtool")
    lint = subprocess.run(
        [promtool, "check", "metrics"], stdin=target.open(), capture_output=True, text=True
    )
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout
    written = series(target.read_text())
    assert any(("endpoint", REGIONAL) in s for s in written["sts_agent_probe_success"])

    port = free_port()
    cfg = vpc_config(vpc, tmp_path / "serve.toml", port)
    with running_agent(cfg, agent_env(vpc), port, tmp=tmp_path) as agent:
        agent.wait_ready()
        wait_for(lambda: "sts_agent_probe_success{" in agent.metrics(), 30, "a finished round")
        served = series(agent.metrics())
    overlap = set(written) & set(served)
    # Everything about the round is in both; only process-level families may differ.
    assert set(written) - overlap == set(), set(written) - overlap
    assert "sts_agent_request_duration_seconds_bucket" in overlap
    for family in sorted(overlap):
        assert written[family] == served[family], family


def test_textfile_is_replaced_not_rewritten(vpc: SimulatedVpc, tmp_path: Path) -> None:
    """A reader holding the old file keeps it whole: the new one arrives by rename."""
    target = tmp_path / "sts_agent.prom"
    assert check(vpc, tmp_path, "--textfile", str(target)).returncode in (0, 1)
    before = target.stat().st_ino
    with target.open() as reader:
        assert check(vpc, tmp_path, "--textfile", str(target)).returncode in (0, 1)
        assert target.stat().st_ino != before
        assert reader.read().endswith("\n")
    assert sorted(os.listdir(tmp_path)) == ["agent.toml", "sts_agent.prom"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sts_agent.txt", "must end in .prom"),
        ("missing/sts_agent.prom", "does not exist"),
    ],
)
def test_a_bad_textfile_is_a_one_line_error(
    vpc: SimulatedVpc, tmp_path: Path, name: str, message: str
) -> None:
    out = check(vpc, tmp_path, "--textfile", str(tmp_path / name))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and message in out.stderr and name in out.stderr


def test_unwritable_directory_is_a_one_line_error(vpc: SimulatedVpc, tmp_path: Path) -> None:
    # Root writes any mode-0555 directory, but no one creates files in /proc.
    locked = Path("/proc") if os.geteuid() == 0 else tmp_path / "locked"
    locked.mkdir(mode=0o555, exist_ok=True)
    out = check(vpc, tmp_path, "--textfile", str(locked / "sts_agent.prom"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "cannot write in" in out.stderr and str(locked) in out.stderr
    assert not (locked / "sts_agent.prom").exists()


def unit_tree(tmp_path: Path) -> Path:
    """/etc/systemd/system holding both units, the service's binary path made real."""
    units = tmp_path / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    text = SERVICE.read_text()
    assert text.count(SHIPPED_BINARY) == 1
    (units / SERVICE.name).write_text(text.replace(SHIPPED_BINARY, installed_agent()))
    (units / TIMER.name).write_text(TIMER.read_text())
    return units


def test_service_exposure_within_the_daemons_budget(tmp_path: Path) -> None:
    unit_tree(tmp_path)
    score, report = exposure(require_binary("systemd-analyze"), tmp_path, SERVICE.name)
    assert score <= MAX_EXPOSURE, report


def test_units_verify_clean(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    units = unit_tree(tmp_path)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "SYSTEMD_LOG_COLOR": "0"}
    out = subprocess.run(
        [analyze, "verify", "--no-pager", SERVICE.name, TIMER.name],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_service_is_hardened_like_the_daemon() -> None:
    """The one-shot keeps the daemon's sandbox; it only may write the collector directory."""
    daemon = (ROOT / "systemd" / "sts-agent.service").read_text()
    oneshot = SERVICE.read_text()
    sandbox = daemon[daemon.index("# Identity:") : daemon.index("[Install]")]
    keep = {line for line in sandbox.splitlines() if line and not line.startswith("#")}
    mine = set(oneshot.splitlines())
    assert keep - mine == {"UMask=0077"}, keep - mine
    assert "UMask=0022" in mine and "SuccessExitStatus=1" in mine
    assert "ReadWritePaths=/var/lib/node_exporter/textfile_collector" in mine
    assert "--textfile /var/lib/node_exporter/textfile_collector/sts_agent.prom" in oneshot
    timer = set(TIMER.read_text().splitlines())  # activates the service of its own name
    assert {"OnUnitActiveSec=1min", "WantedBy=timers.target"} <= timer
