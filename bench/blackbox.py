"""Runs Debian's blackbox_exporter against the same simulated targets as the agent.

blackbox's http prober resolves through the system resolver, which knows
nothing of the simulated DNS; so it dials each STS address directly, with the
STS name in the Host header and as the TLS server name (exactly what the agent
does per address), and a dns module asks the simulated DNS server separately.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.procs import free_port, wait_http
from bench.promtext import Samples, parse
from bench.targets import Targets
from testbed.procs import stop_process

BINARY = "prometheus-blackbox-exporter"
STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"


def binary() -> str:
    path = shutil.which(BINARY)
    if path is None:
        raise SystemExit(f"bench: {BINARY} not found on PATH (Debian package {BINARY})")
    return path


def version() -> str:
    try:
        out = subprocess.run([binary(), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(", version ")[-1].split(" ")[0] if first else "unknown"


def sts_module(hostname: str, port: int, ca_file: Path, timeout: float = 5.0) -> dict[str, Any]:
    """An unsigned GetCallerIdentity POST; STS answers 403, which still proves the path."""
    return {
        "prober": "http",
        "timeout": f"{int(timeout * 1000)}ms",
        "http": {
            "method": "POST",
            "body": STS_BODY,
            "headers": {
                "Host": f"{hostname}:{port}",
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            },
            "valid_status_codes": [200, 403],
            "preferred_ip_protocol": "ip4",
            "ip_protocol_fallback": False,
            "enable_http2": False,
            "follow_redirects": False,
            "tls_config": {"ca_file": str(ca_file), "server_name": hostname},
        },
    }


def dns_module(hostname: str, timeout: float = 5.0) -> dict[str, Any]:
    return {
        "prober": "dns",
        "timeout": f"{int(timeout * 1000)}ms",
        "dns": {
            "query_name": hostname,
            "query_type": "A",
            "transport_protocol": "udp",
            "preferred_ip_protocol": "ip4",
            "ip_protocol_fallback": False,
            "valid_rcodes": ["NOERROR"],
        },
    }


def modules_for(targets: Targets, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    """`sts:<name>` and `dns:<name>` for every simulated STS name."""
    mods: dict[str, dict[str, Any]] = {}
    for name in targets.names:
        mods[f"sts:{name}"] = sts_module(name, targets.port, targets.sim_ca, timeout)
        mods[f"dns:{name}"] = dns_module(name, timeout)
    return mods


def probe_jobs(targets: Targets) -> list[tuple[str, str]]:
    """(module, target) for every address of every name, plus one DNS job per name."""
    jobs = [
        (f"sts:{name}", f"https://{addr}:{targets.port}/")
        for name, addrs in targets.names.items()
        for addr in addrs
    ]
    jobs += [(f"dns:{name}", targets.resolver) for name in targets.names]
    return jobs


@dataclass
class Blackbox:
    proc: subprocess.Popen[bytes]
    base: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def probe(self, module: str, target: str, timeout: float = 10.0) -> tuple[float, Samples]:
        """One /probe; returns (seconds the HTTP call took, parsed samples)."""
        query = urllib.parse.urlencode({"module": module, "target": target})
        started = time.perf_counter()
        with urllib.request.urlopen(f"{self.base}/probe?{query}", timeout=timeout) as r:
            body = r.read()
        took = time.perf_counter() - started
        return took, parse(body.decode())


@contextlib.contextmanager
def running_blackbox(
    workdir: Path, modules: Mapping[str, Mapping[str, Any]], *, prefix: tuple[str, ...] = ()
) -> Iterator[Blackbox]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "blackbox.yml"
    config.write_text(yaml.safe_dump({"modules": {k: dict(v) for k, v in modules.items()}}))
    port = free_port()
    log = open(workdir / "blackbox.log", "wb")  # noqa: SIM115 (closed below)
    cmd = [
        *prefix,
        binary(),
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    box = Blackbox(proc, f"http://127.0.0.1:{port}")
    try:
        wait_http(f"{box.base}/-/healthy", proc, workdir / "blackbox.log")
        yield box
    finally:
        stop_process(proc)
        log.close()


def probe_or_error(box: Blackbox, module: str, target: str) -> tuple[float, Samples | None]:
    try:
        return box.probe(module, target)
    except (OSError, urllib.error.URLError):
        return float("nan"), None
