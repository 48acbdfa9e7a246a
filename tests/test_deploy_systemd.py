"""The systemd unit, its drop-in and example files, checked by systemd's own tools.

`systemd-analyze verify` refuses a unit whose ExecStart binary is missing, and
on a development or CI machine the agent lives in the project's virtualenv,
not at /opt/sts-agent.  So the tests copy the unit and rewrite only the
ExecStart program path to the `sts-agent` console script that is really
installed next to this Python; every other line is checked as shipped.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.cli import _parser
from agent.config import build, read_env
from agent.surfaces.http_loop import FD_RESERVE
from agent.surfaces.http_server import MAX_CONNECTIONS, WORKERS
from testbed import ROOT
from testbed.ports import free_port
from testbed.require import require_binary

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


PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # Linux 6.3+


def _kernel_has_mdwe() -> bool:
    probe = f"import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE},1,0,0,0) != 0)"
    return subprocess.run([sys.executable, "-c", probe]).returncode == 0


MDWE = _kernel_has_mdwe()


def _as_the_unit_restricts() -> None:
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


@dataclass
class RunningAgent:
    proc: subprocess.Popen[bytes]
    port: int
    notifications: socket.socket

    def next_notification(self) -> str:
        return self.notifications.recv(4096).decode()

    def wait_for(self, message: str) -> list[str]:
        seen: list[str] = []
        while message not in seen:
            seen.extend(self.next_notification().splitlines())
        return seen

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return e.code


def wait_until_ready(agent: RunningAgent, attempts: int = 120) -> bool:
    for _ in range(attempts):
        if agent.get("/-/ready") == 200:
            return True
        time.sleep(0.5)
    return False


@contextmanager
def agent_as_the_unit_runs_it(tmp_path: Path) -> Iterator[RunningAgent]:
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
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stderr=log, preexec_fn=_as_the_unit_restricts
    )
    try:
        yield RunningAgent(proc, port, notifications)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
        notifications.close()


def test_daemon_honours_the_units_notify_reload_and_stop_contract(tmp_path: Path) -> None:
    """Type=notify, WatchdogSec=, ExecReload= and TimeoutStopSec= against the real daemon."""
    stop_budget = int(values("TimeoutStopSec")[0])
    with agent_as_the_unit_runs_it(tmp_path) as agent:
        assert "READY=1" in agent.wait_for("READY=1")
        status = Path(f"/proc/{agent.proc.pid}/status").read_text()
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
        assert agent.get("/-/healthy") == 200
        assert wait_until_ready(agent), "/-/ready never turned 200 after the first round"
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
        preexec_fn=_as_the_unit_restricts,
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
