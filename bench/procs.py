"""Starting the agent as a real process and reading its CPU and memory from /proc."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from testbed.agent_proc import AgentProcess, running_agent
from testbed.ports import free_port

REPO = Path(__file__).resolve().parent.parent

__all__ = [
    "REPO",
    "AgentProcess",
    "cpu_seconds",
    "free_port",
    "rounds",
    "rss_mib",
    "running_agent",
    "settle",
    "wait_http",
]


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> float:
    """Poll `url` until it answers 200; returns the seconds that took."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {proc.args!r} exited {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.005)
    raise SystemExit(f"bench: {url} not ready after {timeout:g}s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        return "(no log)"


def rounds(agent: AgentProcess) -> float:
    """Rounds the agent has finished, from its own /metrics."""
    from bench.promtext import parse, value

    with urllib.request.urlopen(f"{agent.base}/metrics", timeout=5) as r:
        return value(parse(r.read().decode()), "sts_agent_rounds_total") or 0.0


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


def settle(pid: int, quiet: float = 0.2, threshold: float = 0.002, limit: float = 10.0) -> float:
    """Wait until the process burns < `threshold` CPU seconds in `quiet` seconds; its CPU then."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now - last < threshold:
            return now
        last = now
    return last
