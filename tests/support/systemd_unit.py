"""The shipped systemd unit, and the agent run under its limits as systemd would.

Shared by the unit, container and textfile tests.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from testbed import ROOT
from testbed.agent_proc import AgentProcess
from testbed.ports import free_port

UNIT = ROOT / "systemd" / "sts-agent.service"
DROP_IN = ROOT / "systemd" / "sts-agent-process-audit.conf"
EXAMPLE_TOML = ROOT / "systemd" / "sts-agent.toml"
EXAMPLE_ENV = ROOT / "systemd" / "sts-agent.env"
SHIPPED_BINARY = "/opt/sts-agent/bin/sts-agent"
MAX_EXPOSURE = 1.5


def installed_agent() -> str:
    """The console script installed beside the running interpreter."""
    path = Path(sys.executable).parent / "sts-agent"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} missing: install the project (pip install -e .)")
    return str(path)


def directives(text: str) -> list[tuple[str, str]]:
    return [
        (k.strip(), v.strip())
        for k, sep, v in (line.partition("=") for line in text.splitlines())
        if sep and not k.lstrip().startswith(("#", ";", "["))
    ]


def values(key: str, text: str = UNIT.read_text()) -> list[str]:
    return [v for k, v in directives(text) if k == key]


def unit_tree(tmp_path: Path, *, with_drop_in: bool) -> Path:
    """An /etc/systemd/system tree holding the unit, its binary path made real."""
    etc = tmp_path / "etc" / "systemd" / "system"
    etc.mkdir(parents=True)
    text = UNIT.read_text()
    assert text.count(SHIPPED_BINARY) == 1, "ExecStart must name the venv install path once"
    (etc / "sts-agent.service").write_text(text.replace(SHIPPED_BINARY, installed_agent()))
    if with_drop_in:
        d = etc / "sts-agent.service.d"
        d.mkdir()
        (d / "process-audit.conf").write_text(DROP_IN.read_text())
    return etc


def exposure(analyze: str, root: Path, unit: str = "sts-agent.service") -> tuple[float, str]:
    out = subprocess.run(
        [analyze, "security", "--offline=yes", f"--root={root}", "--no-pager", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(rf"Overall exposure level for {re.escape(unit)}:\s*([0-9.]+)", out.stdout)
    assert m, f"no exposure line in systemd-analyze output:\n{out.stdout}\n{out.stderr}"
    return float(m.group(1)), out.stdout


def verify(analyze: str, unit_dir: Path) -> subprocess.CompletedProcess[str]:
    # Unknown or misspelt directives are only warnings (exit 0), so callers
    # must demand empty output, not just a zero exit code.
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [analyze, "verify", "--no-pager", "sts-agent.service"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # Linux 6.3+


def _kernel_has_mdwe() -> bool:
    probe = f"import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE},1,0,0,0) != 0)"
    return subprocess.run([sys.executable, "-c", probe]).returncode == 0


MDWE = _kernel_has_mdwe()


def as_the_unit_restricts() -> None:
    """NoNewPrivileges= and, where the kernel offers it, MemoryDenyWriteExecute=.

    Newer systemd implements MemoryDenyWriteExecute= with this same prctl, so
    a dependency that needs writable+executable memory fails here as it would
    under the unit.
    """
    nofile = int(values("LimitNOFILE")[0])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if MDWE and libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_MDWE")


class UnitAgent(AgentProcess):
    """The agent process as the unit starts it, plus the sd_notify messages it sends."""

    def __init__(
        self, proc: subprocess.Popen[str], port: int, log: Path, notifications: socket.socket
    ) -> None:
        super().__init__(proc, port, log)
        self.notifications = notifications

    def next_notification(self) -> str:
        return self.notifications.recv(4096).decode()

    def wait_for(self, message: str) -> list[str]:
        seen: list[str] = []
        while message not in seen:
            seen.extend(self.next_notification().splitlines())
        return seen


@contextmanager
def agent_as_the_unit_runs_it(tmp_path: Path) -> Iterator[UnitAgent]:
    """`serve` with the example config, as systemd would start it, loopback only.

    The environment keeps every probe on this machine: IMDS off, a resolver on
    a closed loopback port (nothing resolves, so no STS request leaves), and
    unsigned requests so no credential provider is consulted.
    """
    sock_path = tmp_path / "notify.sock"
    notifications = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notifications.bind(str(sock_path))
    notifications.settimeout(60)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": str(sock_path),
        "WATCHDOG_USEC": "1000000",
        "AWS_EC2_METADATA_DISABLED": "true",
        "STS_AGENT_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "STS_AGENT_IMDS_ENABLED": "false",
        "STS_AGENT_REGIONS": "eu-west-1",
        "STS_AGENT_VPC_CIDRS": "10.0.0.0/16",
        "STS_AGENT_RESOLVERS": f"127.0.0.1:{free_port()}",
        "STS_AGENT_CREDENTIALS": "none",
    }
    env.pop("WATCHDOG_PID", None)
    cmd = [sys.executable, "-m", "agent", "serve", "--config", str(EXAMPLE_TOML)]
    log_path = tmp_path / "agent.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=as_the_unit_restricts,
        )
    try:
        yield UnitAgent(proc, port, log_path, notifications)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        notifications.close()
