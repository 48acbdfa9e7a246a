"""`sts-agent check` against real parts: dnsmasq, moto STS over TLS, the IMDSv2 simulator.

Shared by the check end-to-end tests; `sts`, `imds` and `healthy_dns` are their fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.simulate.imds_server import ImdsServer
from testbed import ROOT
from testbed.agent_proc import write_config
from tests.support.dnsmasq import Dnsmasq
from tests.support.moto_tls import MotoStsTls

REGION = "us-east-2"


REGIONAL = f"sts.{REGION}.amazonaws.com"


GLOBAL = "sts.amazonaws.com"


VPC_CIDR = "127.10.0.0/16"


AMAZON_DNS = "127.10.0.2"  # VPC base + 2


ENIS = ("127.10.138.148", "127.10.139.20")


PUBLIC = "127.20.0.10"


IMPOSTOR = "127.10.200.1"  # inside the VPC, but its certificate is for another name


VPCE_NAME = f"vpce-0a1b2c3d4e5f60718-abcdefgh.sts.{REGION}.vpce.amazonaws.com"


HEALTHY = {REGIONAL: list(ENIS), GLOBAL: [PUBLIC]}


STATIC_CREDS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


RUN_TIMEOUT = 45


# -- real parts -----------------------------------------------------------------------
@dataclass
class Sts:
    servers: dict[str, MotoStsTls]
    port: int
    ca_path: Path

    @property
    def account(self) -> str:
        return self.servers[ENIS[0]].account_id


@pytest.fixture(scope="module")
def sts() -> Iterator[Sts]:
    """moto on every address the names resolve to, all on one port as the agent expects."""
    names = (REGIONAL, GLOBAL)
    last: Exception | None = None
    for _ in range(5):
        with contextlib.ExitStack() as stack:
            try:
                first = stack.enter_context(MotoStsTls(ENIS[0], 0, names))
                servers = {ENIS[0]: first}
                for addr in (ENIS[1], PUBLIC):
                    servers[addr] = stack.enter_context(
                        MotoStsTls(addr, first.port, names, ca=first.ca)
                    )
                servers[IMPOSTOR] = stack.enter_context(
                    MotoStsTls(
                        IMPOSTOR, first.port, ("sts.example.org",), ca=first.ca, ip_sans=False
                    )
                )
            except (OSError, RuntimeError) as e:  # the port was taken on one of the addresses
                last = e
                continue
            yield Sts(servers, first.port, first.ca_path)
            return
    raise RuntimeError(f"could not start moto on one shared port: {last}")


@pytest.fixture(scope="module")
def imds() -> Iterator[ImdsServer]:
    with ImdsServer("127.0.0.1", 0, region=REGION, az=f"{REGION}a", vpc_cidrs=(VPC_CIDR,)) as s:
        yield s


@contextlib.contextmanager
def dns(records: Mapping[str, Sequence[str]]) -> Iterator[Dnsmasq]:
    """dnsmasq as the VPC's resolver; names it does not know under amazonaws.com are NXDOMAIN."""
    with Dnsmasq(records, listen=AMAZON_DNS, ttl=30, local_domains=["amazonaws.com"]) as d:
        yield d


@pytest.fixture
def healthy_dns() -> Iterator[Dnsmasq]:
    with dns(HEALTHY) as d:
        yield d


def closed_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- running the agent ------------------------------------------------------------------
def config(
    tmp: Path,
    sts: Sts,
    resolver: Dnsmasq | str,
    imds: ImdsServer | str | None,
    *,
    name: str = "agent.toml",
    **top: Any,
) -> Path:
    """A config file as an operator writes it; `imds` is a server, an address, or None (off)."""
    res = resolver if isinstance(resolver, str) else f"{resolver.address}:{resolver.port}"
    settings: dict[str, Any] = {
        "timeout": 2.0,
        "port": sts.port,
        "ca_bundle": str(sts.ca_path),
        "resolvers": [res],
    }
    tables: dict[str, dict[str, Any]] = {"expect": {"regional": "vpce", "global": "public"}}
    if imds is None:
        tables["imds"] = {"enabled": False}
    else:
        addr = imds if isinstance(imds, str) else f"127.0.0.1:{imds.port}"
        # Generous: several agents share one IMDS on a loaded CI host; tests of
        # IMDS trouble set their own budget.
        tables["imds"] = {"address": addr, "timeout": 5.0}
    return write_config(tmp / name, settings, tables, top)


def environment(imds: ImdsServer | str | None, **extra: str | None) -> dict[str, str]:
    """An EC2-like process environment: no AWS settings but what the test gives.

    With an IMDS, botocore's default chain gets credentials from its instance
    profile; `None` values remove a variable.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STS_AGENT_"))}
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_DEFAULT_REGION"] = REGION
    if imds is None:
        env["AWS_EC2_METADATA_DISABLED"] = "true"
    else:
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds if isinstance(imds, str) else imds.url
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.stdout)
        return doc

    def endpoint(self, host: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = [e for e in self.doc["endpoints"] if e["hostname"] == host]
        (ep,) = found
        return ep

    def codes(self) -> dict[str, str]:
        return {f["code"]: f["severity"] for f in self.doc["findings"]}


def start(
    cfg: Path | None, env: Mapping[str, str], *, as_json: bool = True
) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "agent", "check"]
    if as_json:
        cmd.append("--json")
    if cfg is not None:
        cmd += ["--config", str(cfg)]
    return subprocess.Popen(
        cmd,
        env=dict(env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> Run:
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"check did not finish: {err}") from None
    return Run(proc.returncode, out, err)


def check(cfg: Path | None, env: Mapping[str, str], *, as_json: bool = True) -> Run:
    return finish(start(cfg, env, as_json=as_json))


def no_secrets(run: Run) -> None:
    text = run.stdout + run.stderr
    for secret in ("wJalrXUtnFEMI", "FwoGZXIvYXdz", "Signature="):
        assert secret not in text


WARNING_OR_WORSE = ("warning", "critical")
