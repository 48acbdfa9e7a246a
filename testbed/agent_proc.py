"""Runs the installed agent as a real subprocess and talks to it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.simulate.demo import SimulatedVpc
from testbed import ROOT
from testbed.procs import stop_process


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    path: Path,
    top: Mapping[str, Any],
    tables: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """A TOML file; an override `table__key=value` sets `key` in `[table]`, else a top key."""
    plain, merged = dict(top), {name: dict(table) for name, table in tables.items()}
    for key, value in (overrides or {}).items():
        table, _, sub = key.partition("__")
        if sub:
            merged.setdefault(table, {})[sub] = value
        else:
            plain[key] = value
    lines = [f"{k} = {toml_value(v)}" for k, v in plain.items()]
    for name, keys in merged.items():
        lines.append(f"[{name}]")
        lines.extend(f'"{k}" = {toml_value(v)}' for k, v in keys.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def vpc_config(vpc: SimulatedVpc, path: Path, port: int, **overrides: Any) -> Path:
    """A config file that points the agent at a simulated VPC, like an operator would."""
    top: dict[str, Any] = {
        "interval": 2,
        "timeout": 1.5,
        "port": vpc.sts_port,
        "ca_bundle": str(vpc.ca_path),
        "resolvers": [f"{vpc.dns.address}:{vpc.dns.port}"],
    }
    tables: dict[str, dict[str, Any]] = {
        "expect": {"regional": "vpce", "global": "public"},
        "imds": {"address": f"127.0.0.1:{vpc.imds.port}", "timeout": 3.0},
        "web": {"listen_address": f"127.0.0.1:{port}"},
    }
    return write_config(path, top, tables, overrides)


def agent_env(vpc: SimulatedVpc | None, **extra: str) -> dict[str, str]:
    """An EC2-like environment: credentials only from the (simulated) instance profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STS_AGENT_"))}
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_DEFAULT_REGION"] = "us-east-2"
    if vpc is not None:
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = vpc.imds.url
    else:
        env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra)
    return env


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class AgentProcess:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        return http_get(self.base + path, timeout)

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body

    def value(self, series: str) -> float | None:
        """The value of one exact series line, e.g. 'sts_agent_imds_available'."""
        for line in self.metrics().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: {self.log()}")
            return self.get("/-/ready", timeout=2)[0] == 200

        wait_for(ready, timeout, "agent ready")


@contextmanager
def running_agent(
    config: Path | None,
    env: Mapping[str, str],
    port: int,
    *args: str,
    tmp: Path,
    prefix: Sequence[str] = (),
    source: Path = ROOT,
) -> Iterator[AgentProcess]:
    """`sts-agent serve` as a child process (under `prefix`, e.g. taskset), stopped on exit.

    `source` is the tree whose `agent` package runs (`python -m` imports it from
    the working directory first): another revision's, to measure it beside this one.
    """
    log = tmp / f"agent-{port}.log"
    cmd = [*prefix, sys.executable, "-m", "agent", "serve", *args]
    if config is not None:
        cmd += ["--config", str(config)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, env=dict(env), cwd=source, stdout=fh, stderr=subprocess.STDOUT, text=True
        )
    agent = AgentProcess(proc, port, log)
    try:
        yield agent
    finally:
        stop_process(proc)
